"""TFRecord shards of an image folder: `cnncompile data pack` writes them, `dataset: {path: shards/}`
reads them, on one machine or split by file across the workers of a cluster.

A packed folder:
  manifest.json                     what is inside: classes, per-split counts, and for every
                                    shard its file name, split, image count, size and sha256
  train-00000-of-00012.tfrecord     tf.train.Example records: `image` (the file's original
  ...                               bytes, never re-encoded), `label` (class index), `name`
  test-00000-of-00002.tfrecord      (the image's path inside the packed folder)

Images are written in a seeded shuffled order, so every shard holds a mix of classes: a
reader interleaving a few shards through a bounded shuffle window sees mixed batches even
though the folder was sorted by class. ShardSplit reads them in data/sources.py's Split
protocol (an order per (seed, epoch), slices, NumPy batches) and, for a cluster, gives each
worker its own files (for_worker, worker_batches; run/distributed.py's by_file).

Verification, and why it is split: every read checks each shard's presence and size against
the manifest (one stat per file: a missing, truncated or grown shard is named at once), and
TFRecord's own CRC32C on every record catches corrupt bytes as they are read. The sha256 of
every shard, a full read of the data, is checked by `cnncompile data verify` (after copying
shards to a cluster, say): hashing ImageNet's 140 GB before every run would cost minutes,
and the CRCs already guard each record. The run records the manifest's sha256, which pins
every shard's hash.

Writing is atomic: shards go to a hidden folder beside the target and the whole folder is
renamed into place after manifest.json is written, so an interrupted pack leaves no half
shards (and the next pack clears its leftovers). TensorFlow is imported only to write and
to read records; the manifest side is framework-free.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncompile.data.datasets import sha256_of
from cnncompile.data.folders import FolderScan
from cnncompile.data.formats import DataError, decode_image
from cnncompile.data import sources
from cnncompile.data.sources import ArraySplit, Split, _pipeline_options
from cnncompile.files import write_bytes

MANIFEST = "manifest.json"
FORMAT = "cnncompile-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "test")
DEFAULT_SHARD_BYTES = 128 * 1024 * 1024  # TensorFlow's guide: shards of 100 MB+, many more files than hosts
BAD_IMAGES = ("skip", "error")

# progress(what, done, total): what is "write" (images checked and written) or "verify" (bytes hashed).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Item:
    """One image to pack: its file, class index and the name stored with it (relative path)."""

    path: Path
    label: int
    name: str


def items(scan: FolderScan) -> dict[str, list[Item]]:
    """A scanned folder's images per split, named by their path inside the folder."""
    return {split: [Item(Path(p), int(y), Path(p).relative_to(scan.root).as_posix()) for p, y in zip(*files)]
            for split, files in (("train", scan.train), ("test", scan.test))}


@dataclass(frozen=True)
class Shard:
    file: str  # relative to the packed folder
    split: str
    images: int
    bytes: int
    sha256: str
    labels: tuple[int, ...]  # in record order: a split's labels (the report's confusion matrix) without reading images


@dataclass(frozen=True)
class Manifest:
    classes: tuple[str, ...]
    shards: tuple[Shard, ...]
    version: str  # cnncompile's, which wrote the shards
    seed: int  # the order images were written in
    source: str  # the folder that was packed
    skipped: tuple[str, ...] = ()  # "file: reason" of each image left out by --bad-images skip

    def count(self, split: str) -> int:
        return sum(s.images for s in self.shards if s.split == split)

    def files(self, split: str) -> list[Shard]:
        return [s for s in self.shards if s.split == split]

    def to_text(self) -> str:
        """The manifest as JSON, one line per shard (a shard's labels would otherwise take a line each)."""
        head = {"format": FORMAT, "format_version": FORMAT_VERSION, "cnncompile_version": self.version,
                "classes": list(self.classes), "counts": {split: self.count(split) for split in SPLITS},
                "seed": self.seed, "source": self.source, "skipped": list(self.skipped), "shards": None}
        shards = ",\n    ".join(json.dumps({**vars(s), "labels": list(s.labels)}) for s in self.shards)
        return json.dumps(head, indent=2).replace('"shards": null', f'"shards": [\n    {shards}\n  ]') + "\n"


def is_shard_folder(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def read_manifest(folder: Path) -> Manifest:
    """manifest.json, checked for form and against the shard files' presence and sizes."""
    where = folder / MANIFEST
    if not where.is_file():
        raise DataError(f"{folder}: no {MANIFEST}; not a folder written by `cnncompile data pack`")
    try:
        raw = json.loads(where.read_text())
        if raw.get("format") != FORMAT:
            raise DataError(f"{where}: not a cnncompile shard manifest (format {raw.get('format')!r})")
        if raw.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{where}: format_version {raw.get('format_version')!r}; this cnncompile reads "
                            f"{FORMAT_VERSION}: pack the folder again with it")
        shards = tuple(Shard(str(s["file"]), str(s["split"]), int(s["images"]), int(s["bytes"]), str(s["sha256"]),
                             tuple(int(label) for label in s["labels"])) for s in raw["shards"])
        manifest = Manifest(tuple(str(c) for c in raw["classes"]), shards, str(raw["cnncompile_version"]),
                            int(raw["seed"]), str(raw["source"]), tuple(str(b) for b in raw.get("skipped", ())))
        counts = {split: int(n) for split, n in raw["counts"].items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: cannot read ({exc})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None
    for split in SPLITS:
        if counts.get(split, 0) != manifest.count(split):
            raise DataError(f"{where}: counts.{split} is {counts.get(split, 0):,} but its shards hold "
                            f"{manifest.count(split):,} images; the manifest was edited or is corrupt")
    for shard in manifest.shards:
        if shard.split not in SPLITS or Path(shard.file).name != shard.file:
            raise DataError(f"{where}: shard entry {shard.file!r} (split {shard.split!r}) is not a file of this folder")
        if len(shard.labels) != shard.images or not all(0 <= y < len(manifest.classes) for y in shard.labels):
            raise DataError(f"{where}: shard {shard.file} lists {len(shard.labels):,} labels for {shard.images:,} "
                            f"images, or labels outside 0..{len(manifest.classes) - 1}")
        path = folder / shard.file
        if not path.is_file():
            raise DataError(f"{path}: shard listed in {MANIFEST} is missing")
        size = path.stat().st_size
        if size != shard.bytes:
            raise DataError(f"{path}: {size:,} bytes, {MANIFEST} says {shard.bytes:,}; the shard is truncated, "
                            "modified or from another pack (`cnncompile data verify` checks every sha256)")
    if not manifest.count("train"):
        raise DataError(f"{where}: no training images")
    return manifest


def verify(folder: Path, progress: Progress | None = None) -> Manifest:
    """read_manifest, then every shard's sha256 against the manifest's."""
    manifest = read_manifest(folder)
    total, done = sum(s.bytes for s in manifest.shards), 0
    for shard in manifest.shards:
        digest = sha256_of(folder / shard.file)
        if digest != shard.sha256:
            raise DataError(f"{folder / shard.file}: sha256 {digest} does not match {MANIFEST}'s {shard.sha256}; "
                            "the shard is corrupt or was modified: pack the folder again")
        done += shard.bytes
        if progress:
            progress("verify", done, total)
    return manifest


# --- writing ------------------------------------------------------------------------------


@dataclass
class PackResult:
    manifest: Manifest
    out: Path
    bad: list[str] = field(default_factory=list)  # "file: reason" of each image left out


def plan(items: Sequence[Item], sizes: Sequence[int], shard_bytes: int | None,
         images_per_shard: int | None) -> list[list[int]]:
    """Indices into `items` per shard, in order: a new shard starts once the current one holds
    images_per_shard images, or once adding the next image would pass shard_bytes."""
    shards: list[list[int]] = [[]]
    held = 0
    for index, size in enumerate(sizes):
        full = (len(shards[-1]) >= images_per_shard if images_per_shard
                else bool(shards[-1]) and held + size > (shard_bytes or DEFAULT_SHARD_BYTES))
        if full:
            shards.append([])
            held = 0
        shards[-1].append(index)
        held += size
    return [s for s in shards if s]


def pack(scan: FolderScan, out: Path, *, seed: int = 0, shard_bytes: int | None = None,
         images_per_shard: int | None = None, bad_images: str = "skip", force: bool = False,
         threads: int | None = None, progress: Progress | None = None) -> PackResult:
    """Write a scanned folder's splits as TFRecord shards plus manifest.json into `out`.

    Every image is read and decoded once (in `threads` threads) to refuse unreadable or
    truncated files before they reach training (the scan, scan_folder(bad_images="skip"),
    has left out those its headers already condemn); with bad_images="error" every bad file
    is listed and nothing is written.
    """
    from cnncompile import __version__

    if bad_images not in BAD_IMAGES:
        raise ValueError(f"bad_images must be one of {BAD_IMAGES}")
    _refuse_to_overwrite(out, force)
    staging = out.parent / f".{out.name}.packing"
    shutil.rmtree(staging, ignore_errors=True)  # an interrupted pack's leftovers
    staging.mkdir(parents=True)
    splits = items(scan)
    counter = _Counter(sum(len(found) for found in splits.values()), progress)
    shards: list[Shard] = []
    bad: list[str] = list(scan.bad)
    try:
        for split in SPLITS:
            found = splits[split]
            order = np.random.default_rng([seed, SPLITS.index(split)]).permutation(len(found))
            found = [found[i] for i in order]
            sizes = [_size(item.path) for item in found]
            groups = plan(found, sizes, shard_bytes, images_per_shard)
            written = []
            for number, group in enumerate(groups):
                path = staging / f"{split}-{number:05d}.partial"
                labels = _write_shard(path, [found[i] for i in group], bad, bad_images, threads, counter)
                if labels:
                    written.append((path, labels))
                else:
                    path.unlink()
            for number, (path, labels) in enumerate(written):
                final = path.with_name(f"{split}-{number:05d}-of-{len(written):05d}.tfrecord")
                path.rename(final)
                shards.append(Shard(final.name, split, len(labels), final.stat().st_size, sha256_of(final),
                                    tuple(labels)))
        if bad and bad_images == "error":
            raise BadImages(bad)
        manifest = Manifest(scan.classes, tuple(shards), __version__, seed, str(scan.root.resolve()), tuple(bad))
        if not manifest.count("train"):
            raise DataError(f"{scan.root}: no readable training images to pack")
        write_bytes(staging / MANIFEST, manifest.to_text().encode())
        _swap_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PackResult(manifest, out, bad)


class BadImages(DataError):
    """Unreadable or truncated images under --bad-images error; lists every one."""

    def __init__(self, bad: list[str]):
        self.bad = bad
        super().__init__(f"{len(bad):,} unreadable image{'s' if len(bad) != 1 else ''}; nothing written "
                         "(--bad-images skip packs the others and lists these in the manifest)")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reported as a bad image when it is read


def _refuse_to_overwrite(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not is_shard_folder(out):
            raise DataError(f"{out}: exists and holds files that are not shards; choose an empty or new folder")
        if not force:
            raise DataError(f"{out}: already holds packed shards; use --force to replace them")


def _swap_into_place(staging: Path, out: Path) -> None:
    """Rename the finished folder onto `out`; a previous pack there (with --force) goes only
    after the new one is in place, so at every moment `out` is one complete pack or absent."""
    old = out.parent / f".{out.name}.replaced"
    shutil.rmtree(old, ignore_errors=True)
    if out.is_dir():
        os.replace(out, old) if any(out.iterdir()) else out.rmdir()
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


class _Counter:
    def __init__(self, total: int, progress: Progress | None):
        self.total, self.done, self.progress = total, 0, progress

    def step(self) -> None:
        self.done += 1
        if self.progress and (self.done % 64 == 0 or self.done == self.total):
            self.progress("write", self.done, self.total)


def _write_shard(path: Path, items: list[Item], bad: list, bad_images: str, threads: int | None,
                 counter: _Counter) -> int:
    """Write one shard; returns the labels of the images it holds, in record order."""
    tf = _tensorflow()
    labels = []
    with tf.io.TFRecordWriter(str(path)) as writer:
        for item, (data, problem) in zip(items, _checked(items, threads)):
            counter.step()
            if problem:
                bad.append(f"{item.path}: {problem}")
                continue
            if bad and bad_images == "error":
                continue  # keep checking, to list every bad file; this pack will not be kept
            writer.write(_example(tf, data, item).SerializeToString())
            labels.append(item.label)
    return labels


def _checked(items: list[Item], threads: int | None) -> Iterator[tuple[bytes, str | None]]:
    """(file bytes, None) or (b"", reason) per item, in order; decoded in threads (Pillow
    releases the GIL while decoding), a bounded window at a time so memory stays flat."""
    window = 256
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        for start in range(0, len(items), window):
            yield from pool.map(_check, items[start:start + window])


def _check(item: Item) -> tuple[bytes, str | None]:
    """(file bytes, None), or (b"", the reason it cannot be used)."""
    try:
        decode_image(item.path, None, 3)  # the full decode: corrupt data fails here, not mid-training
        return item.path.read_bytes(), None
    except DataError as exc:
        return b"", str(exc).removeprefix(f"{item.path}: ")
    except OSError as exc:
        return b"", exc.strerror or str(exc)


def _example(tf, data: bytes, item: Item):
    feature = tf.train.Feature
    return tf.train.Example(features=tf.train.Features(feature={
        "image": feature(bytes_list=tf.train.BytesList(value=[data])),
        "label": feature(int64_list=tf.train.Int64List(value=[item.label])),
        "name": feature(bytes_list=tf.train.BytesList(value=[item.name.encode()])),
    }))


def _tensorflow():
    from cnncompile.native import quiet_native_stderr

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as cnncompile.backend sets it: no C++ notices
    with quiet_native_stderr():
        import tensorflow as tf
    return tf


# --- reading ------------------------------------------------------------------------------


def worker_files(folder: Path, manifest: Manifest, split: str, workers: int = 1, index: int = 0) -> list[Shard]:
    """The shard files worker `index` of `workers` reads: every workers-th file, so each file
    (and so each image) goes to exactly one worker. Refuses fewer files than workers, which
    would leave a worker without data."""
    shards = manifest.files(split)
    if len(shards) < workers:
        raise DataError(f"{folder}: {len(shards)} {split} shard file{'s' if len(shards) != 1 else ''} for "
                        f"{workers} workers; each worker reads whole files, so pack with at least {workers} "
                        f"(cnncompile data pack --images-per-shard {max(1, manifest.count(split) // workers)})")
    return shards[index::workers]


class ShardSplit(Split):
    """One split of a packed folder, streamed from its TFRecord shards (see the module docstring).

    Its own order (labels(), slice, numpy_batches) is the manifest's shard order, records in
    file order. A slice is a list of (shard, skip, take) segments: the validation images, the
    last of the training split, are read from the last shard alone, not found by a pass
    over all the others."""

    reads_by_file = True

    def __init__(self, folder: Path, manifest: Manifest, image_shape: tuple[int, int, int],
                 segments: Sequence[tuple[Shard, int, int]]):
        self.folder, self.manifest, self.classes = folder, manifest, manifest.classes
        self.image_shape = tuple(image_shape)
        self.segments = tuple(segments)

    @classmethod
    def open(cls, folder: Path, manifest: Manifest, split: str, image_shape: tuple[int, int, int]) -> ShardSplit:
        return cls(folder, manifest, image_shape, [(s, 0, s.images) for s in manifest.files(split)])

    @property
    def count(self) -> int:
        return sum(take for _, _, take in self.segments)

    def labels(self) -> np.ndarray:
        return np.array([y for shard, skip, take in self.segments for y in shard.labels[skip:skip + take]], np.int64)

    def describe(self) -> str:
        return f"streamed from {_count(len(self.segments), 'shard file')}"

    def slice(self, start: int, stop: int) -> ShardSplit:
        kept, first = [], 0  # first: this segment's position in the split
        for shard, skip, take in self.segments:
            low, high = max(start, first), min(stop, first + take)
            if low < high:
                kept.append((shard, skip + low - first, high - low))
            first += take
        return ShardSplit(self.folder, self.manifest, self.image_shape, kept)

    def for_worker(self, workers: int, index: int) -> ShardSplit:
        """The files worker `index` of `workers` reads: every workers-th one, so each file (and
        so each image) goes to exactly one worker. Refuses fewer files than workers, which would
        leave a worker without data."""
        if len(self.segments) < workers:
            raise DataError(f"{self.folder}: {_count(len(self.segments), 'shard file')} to train on for {workers} "
                            f"workers; each worker reads whole files, so pack with at least {workers} (e.g. "
                            f"cnncompile data pack --images-per-shard {max(1, self.count // workers)})")
        return ShardSplit(self.folder, self.manifest, self.image_shape, self.segments[index::workers])

    def window(self) -> int:
        """Records shuffled together: about SHUFFLE_WINDOW_BYTES of encoded images, so memory is
        bounded by bytes whatever the image size (~3,000 224x224 JPEGs of 20 KB)."""
        images = sum(s.images for s, _, _ in self.segments) or 1
        average = sum(s.bytes for s, _, _ in self.segments) / images
        return int(min(max(SHUFFLE_WINDOW_BYTES / average, 64), 16_384))

    def records(self, *, shuffle: bool, seed: int, epoch):
        """One epoch of serialized records; `epoch` may be a tensor (inside Dataset.flat_map).
        In order, the split's own order.

        Shuffled, epoch e reads the files in an order drawn from (seed, e), CYCLE_LENGTH of them
        interleaved record by record, then shuffles each window of records by (seed, e, its
        number): stateless, so the order is a function of (seed, e) alone and a resumed run
        exact. (tf.data's shuffle buffer is seeded once per pipeline, not per epoch.)"""
        tf = _tensorflow()
        files = tf.constant([str(self.folder / shard.file) for shard, _, _ in self.segments])
        skips = tf.constant([skip for _, skip, _ in self.segments], tf.int64)
        takes = tf.constant([take for _, _, take in self.segments], tf.int64)
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
        order = tf.range(len(self.segments), dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=key)
        # In order (evaluation, labels(), slices): one file after the other.
        cycle = min(CYCLE_LENGTH, len(self.segments)) if shuffle else 1
        data = tf.data.Dataset.from_tensor_slices(order).interleave(
            lambda i: tf.data.TFRecordDataset(tf.gather(files, i)).skip(tf.gather(skips, i)).take(tf.gather(takes, i)),
            cycle_length=cycle, block_length=1, num_parallel_calls=cycle, deterministic=True)
        if shuffle:
            def mix(number, window):
                return tf.random.experimental.stateless_shuffle(
                    window, seed=tf.random.experimental.stateless_fold_in(key, number))

            data = data.batch(self.window()).enumerate().map(mix).unbatch()
        return data

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, first_epoch: int = 0,
                epochs: int = 1, one_hot: bool = False):
        tf = _tensorflow()
        epoch = self._epoch(batch_size, shuffle=shuffle, seed=seed, one_hot=one_hot)
        return tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch).prefetch(2).with_options(_pipeline_options())

    def worker_batches(self, workers: int, index: int, batch_size: int, batches_per_epoch: int, *,
                       shuffle: bool = False, seed: int = 0, first_epoch: int = 0, epochs: int = 1,
                       one_hot: bool = False):
        """Worker `index`'s part of each epoch: its own files' images (for_worker) in batches,
        then empty batches up to `batches_per_epoch`. Every worker takes the same number of steps
        (a step's collectives wait for all of them) and, over the cluster, each image is used
        once per epoch, though the workers' files hold different numbers of images."""
        tf = _tensorflow()
        mine = self.for_worker(workers, index)
        padding = batches_per_epoch - math.ceil(mine.count / batch_size)
        epoch = mine._epoch(batch_size, shuffle=shuffle, seed=seed, one_hot=one_hot)
        empty = tf.data.Dataset.from_tensors(tuple(tf.zeros([0, *spec.shape[1:]], spec.dtype)
                                                   for spec in epoch(tf.constant(0, tf.int64)).element_spec))

        @tf.autograph.experimental.do_not_convert
        def padded(e):
            return epoch(e).concatenate(empty.repeat(padding))

        return tf.data.Dataset.range(first_epoch, epochs).flat_map(padded).prefetch(2).with_options(_pipeline_options())

    def batches_per_worker(self, workers: int, batch_size: int) -> int:
        """The most batches of batch_size any of `workers` workers reads in an epoch."""
        return max(math.ceil(self.for_worker(workers, index).count / batch_size) for index in range(workers))

    def _epoch(self, batch_size: int, *, shuffle: bool, seed: int, one_hot: bool):
        """e -> epoch e's decoded batches."""
        tf = _tensorflow()
        decode = self._decoder()

        @tf.autograph.experimental.do_not_convert  # plain TensorFlow ops; Python branches on Python values
        def epoch(e):
            # Records parsed PARSE_BATCH at a time (one parse_example call, not one per record:
            # measured 1.4x the images/s), then decoded one by one in parallel.
            records = self.records(shuffle=shuffle, seed=seed, epoch=e).batch(PARSE_BATCH)
            data = (records.map(tf.autograph.experimental.do_not_convert(_parse)).unbatch()
                    .map(decode, num_parallel_calls=sources.workers(), deterministic=True).batch(batch_size))
            return self._with_labels(data, one_hot)

        return epoch

    def _decoder(self):
        """(encoded image, label) -> (uint8 (H, W, C) at this split's shape, label), with TensorFlow's
        decoders (libjpeg-turbo and libpng, as Pillow's): the same pixels as decoding the file
        for a JPEG or 8-bit PNG at the spec's size. Grayscale uses Pillow's weights; a resize is
        bilinear with antialiasing, as Pillow's (close, not bit-identical); transparency is
        dropped rather than composited onto white."""
        tf = _tensorflow()
        height, width, channels = self.image_shape

        @tf.autograph.experimental.do_not_convert
        def decode(data, label):
            image = tf.cond(tf.io.is_jpeg(data),  # Pillow's IDCT is libjpeg's accurate one, not TensorFlow's default
                            lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                            lambda: tf.io.decode_png(data, channels=3))  # (h, w, 3); pack admitted only these two
            if channels == 1:  # Pillow's convert("L"): ITU-R 601-2 luma in 16-bit fixed point
                weights = tf.constant([19595, 38470, 7471], tf.int32)
                luma = tf.reduce_sum(tf.cast(image, tf.int32) * weights, -1, keepdims=True) + 0x8000
                image = tf.cast(tf.bitwise.right_shift(luma, 16), tf.uint8)
            image = tf.cond(tf.reduce_all(tf.shape(image)[:2] == [height, width]), lambda: image,
                            lambda: tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
                                image, (height, width), antialias=True)), 0, 255), tf.uint8))
            image.set_shape(self.image_shape)
            return image, label

        return decode


SHUFFLE_WINDOW_BYTES = 64 << 20
CYCLE_LENGTH = 4  # shard files read at once
PARSE_BATCH = 64


def _parse(records):
    """A batch of serialized tf.train.Examples -> (encoded images, labels)."""
    tf = _tensorflow()
    parsed = tf.io.parse_example(records, {"image": tf.io.FixedLenFeature([], tf.string),
                                           "label": tf.io.FixedLenFeature([], tf.int64)})
    return parsed["image"], parsed["label"]


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' if n != 1 else ''}"


def load(folder: Path, image_shape: tuple[int, int, int], cache: str) -> tuple[Split, Split, Manifest, list[str]]:
    """A packed folder's (train, test) splits: streamed, or with cache: memory decoded once into
    arrays (auto: when the decoded images take at most AUTO_MEMORY_BYTES)."""
    from cnncompile.data.folders import AUTO_MEMORY_BYTES

    manifest = read_manifest(folder)
    splits = [ShardSplit.open(folder, manifest, split, image_shape) for split in SPLITS]
    notes = [f"{folder}: {_count(len(manifest.shards), 'shard file')} packed by cnncompile {manifest.version}"]
    if cache == "auto":
        decoded = sum(split.count for split in splits) * math.prod(image_shape)
        cache = "memory" if decoded <= AUTO_MEMORY_BYTES else "none"
        notes.append(f"cache: auto chose {cache} ({decoded / 2**20:,.0f} MiB of decoded pixels)")
    if cache == "disk":
        notes.append("cache: disk is for image folders; shards are read from disk as they are")
    if cache == "memory":
        splits = [ArraySplit(split.take(split.count), split.labels(), split.classes) for split in splits]
    return splits[0], splits[1], manifest, notes
