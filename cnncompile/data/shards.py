"""TFRecord shards of an image folder: `cnncompile data pack` writes them, `dataset: {path: shards/}`
reads them, on one machine or split by file across the workers of a cluster.

A packed folder:
  manifest.json                     what is inside: classes, per-split counts, and for every
                                    shard its file name, split, image count, size and sha256
  train-00000-of-00012.tfrecord     tf.train.Example records: `image` (the file's original
  ...                               bytes, never re-encoded), `label` (class index), `name`
  test-00000-of-00002.tfrecord      (the image's path inside the packed folder)

Images are written in a seeded shuffled order, so every shard holds a mix of classes: a
reader interleaving a few shards through a bounded shuffle buffer sees mixed batches even
though the folder was sorted by class.

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

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cnncompile.data.formats import DataError, decode_image
from cnncompile.files import write_json

MANIFEST = "manifest.json"
FORMAT = "cnncompile-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "test")
DEFAULT_SHARD_BYTES = 128 * 1024 * 1024  # TensorFlow's guide: shards of 100 MB+, many more files than hosts
BAD_IMAGES = ("skip", "error")

# progress(what, done, total): what is "check" (images read and decoded) or "write" (images written).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Item:
    """One image to pack: its file, class index and the name stored with it (relative path)."""

    path: Path
    label: int
    name: str


@dataclass(frozen=True)
class Shard:
    file: str  # relative to the packed folder
    split: str
    images: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    classes: tuple[str, ...]
    shards: tuple[Shard, ...]
    version: str  # cnncompile's, which wrote the shards
    seed: int  # the order images were written in
    source: str  # the folder that was packed
    skipped: tuple[dict, ...] = ()  # {"file", "reason"} for images left out by --bad-images skip

    def count(self, split: str) -> int:
        return sum(s.images for s in self.shards if s.split == split)

    def files(self, split: str) -> list[Shard]:
        return [s for s in self.shards if s.split == split]

    def to_json(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "cnncompile_version": self.version,
                "classes": list(self.classes), "counts": {split: self.count(split) for split in SPLITS},
                "seed": self.seed, "source": self.source,
                "shards": [vars(s) for s in self.shards], "skipped": list(self.skipped)}


def is_shard_folder(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def read_manifest(folder: Path) -> Manifest:
    """manifest.json, checked for form and against the shard files' presence and sizes."""
    where = folder / MANIFEST
    try:
        raw = json.loads(where.read_text())
        if raw.get("format") != FORMAT:
            raise DataError(f"{where}: not a cnncompile shard manifest (format {raw.get('format')!r})")
        if raw.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{where}: format_version {raw.get('format_version')!r}; this cnncompile reads "
                            f"{FORMAT_VERSION}: pack the folder again with it")
        shards = tuple(Shard(str(s["file"]), str(s["split"]), int(s["images"]), int(s["bytes"]), str(s["sha256"]))
                       for s in raw["shards"])
        manifest = Manifest(tuple(str(c) for c in raw["classes"]), shards, str(raw["cnncompile_version"]),
                            int(raw["seed"]), str(raw["source"]), tuple(raw.get("skipped", ())))
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
        digest = _sha256(folder / shard.file)
        if digest != shard.sha256:
            raise DataError(f"{folder / shard.file}: sha256 {digest} does not match {MANIFEST}'s {shard.sha256}; "
                            "the shard is corrupt or was modified: pack the folder again")
        done += shard.bytes
        if progress:
            progress("verify", done, total)
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- writing ------------------------------------------------------------------------------


@dataclass
class PackResult:
    manifest: Manifest
    out: Path
    bad: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason), skipped


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


def pack(splits: dict[str, Sequence[Item]], classes: Sequence[str], out: Path, *, source: str, seed: int = 0,
         shard_bytes: int | None = None, images_per_shard: int | None = None, bad_images: str = "skip",
         force: bool = False, threads: int | None = None, progress: Progress | None = None) -> PackResult:
    """Write `splits` ({"train": items, "test": items}) as TFRecord shards plus manifest.json into `out`.

    Every image is read and decoded once (in `threads` threads) to refuse unreadable or
    truncated files before they reach training; with bad_images="error" the first pass
    lists every bad file and nothing is written.
    """
    import numpy as np

    from cnncompile import __version__

    if bad_images not in BAD_IMAGES:
        raise ValueError(f"bad_images must be one of {BAD_IMAGES}")
    _refuse_to_overwrite(out, force)
    staging = out.parent / f".{out.name}.packing"
    shutil.rmtree(staging, ignore_errors=True)  # an interrupted pack's leftovers
    staging.mkdir(parents=True)
    total = sum(len(items) for items in splits.values())
    counter = _Counter(total, progress)
    shards: list[Shard] = []
    bad: list[tuple[Path, str]] = []
    try:
        for split in SPLITS:
            items = list(splits.get(split, ()))
            order = np.random.default_rng([seed, SPLITS.index(split)]).permutation(len(items))
            items = [items[i] for i in order]
            sizes = [_size(item.path) for item in items]
            groups = plan(items, sizes, shard_bytes, images_per_shard)
            written = []
            for number, group in enumerate(groups):
                path = staging / f"{split}-{number:05d}.partial"
                images = _write_shard(path, [items[i] for i in group], bad, bad_images, threads, counter)
                if images:
                    written.append((path, images))
                else:
                    path.unlink()
            for number, (path, images) in enumerate(written):
                final = path.with_name(f"{split}-{number:05d}-of-{len(written):05d}.tfrecord")
                path.rename(final)
                shards.append(Shard(final.name, split, images, final.stat().st_size, _sha256(final)))
        if bad and bad_images == "error":
            raise BadImages(bad)
        manifest = Manifest(tuple(classes), tuple(shards), __version__, seed, source,
                            tuple({"file": str(p), "reason": r} for p, r in bad))
        if not manifest.count("train"):
            raise DataError(f"{source}: no readable training images to pack")
        write_json(staging / MANIFEST, manifest.to_json())
        _swap_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PackResult(manifest, out, bad)


class BadImages(DataError):
    """Unreadable or truncated images under --bad-images error; lists every one."""

    def __init__(self, bad: list[tuple[Path, str]]):
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
    """Write one shard; returns how many images it holds."""
    tf = _tensorflow()
    images = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for item, (data, problem) in zip(items, _checked(items, threads)):
            counter.step()
            if problem:
                bad.append((item.path, problem))
                continue
            if bad and bad_images == "error":
                continue  # keep checking, to list every bad file; this pack will not be kept
            writer.write(_example(tf, data, item).SerializeToString())
            images += 1
    return images


def _checked(items: list[Item], threads: int | None) -> Iterator[tuple[bytes, str | None]]:
    """(file bytes, None) or (b"", reason) per item, in order; decoded in threads (Pillow
    releases the GIL while decoding), a bounded window at a time so memory stays flat."""
    window = 256
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        for start in range(0, len(items), window):
            yield from pool.map(_check, items[start:start + window])


def _check(item: Item) -> tuple[bytes, str | None]:
    try:
        decode_image(item.path, None, 3)  # the full decode: truncated data fails here, not mid-training
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

    with quiet_native_stderr():
        import tensorflow as tf
    return tf


def scan_folder(root: Path, test_split: float, seed: int) -> tuple[tuple[str, ...], dict[str, list[Item]]]:
    """The classes and the train/test items of an image folder, split as `dataset: {path: folder}`
    splits it: root/train/<class>/ and root/test/<class>/, or root/<class>/ with a seeded
    test_split decided from the sorted file names (no pixels read)."""
    import numpy as np

    from cnncompile.data.formats import IMAGE_SUFFIXES

    def items(folder: Path, classes: Sequence[str]) -> list[Item]:
        found = []
        for label, name in enumerate(classes):
            files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
                if (folder / name).is_dir() else []
            found += [Item(p, label, p.relative_to(root).as_posix()) for p in files]
        if not found:
            raise DataError(f"{folder}: no .png/.jpg images in class folders {list(classes)}")
        return found

    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
        return classes, {"train": items(root / "train", classes), "test": items(root / "test", classes)}
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if not classes:
        raise DataError(f"{root}: expected one subfolder per class (e.g. {root}/cat/*.jpg)")
    every = items(root, classes)
    order = np.random.default_rng(seed).permutation(len(every))
    cut = max(1, int(round(len(every) * test_split)))
    return classes, {"test": [every[i] for i in order[:cut]], "train": [every[i] for i in order[cut:]]}


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


def records(folder: Path, shards: Sequence[Shard], *, seed: int, epoch: int, shuffle: bool,
            shuffle_buffer: int = 4096, cycle_length: int = 4):
    """One epoch of (encoded image, label, name) from `shards`: the file order shuffled by
    (seed, epoch), `cycle_length` files interleaved record by record, then a shuffle buffer
    seeded by (seed, epoch): the same order on every run, so a resumed run is exact.

    The buffer holds encoded bytes (a 224x224 JPEG: ~20 KB, not 150 KB of pixels): 4,096 of
    them bound the memory to ~80 MB whatever the number of images."""
    import numpy as np

    tf = _tensorflow()
    files = [str(folder / s.file) for s in shards]
    if shuffle:
        files = [files[i] for i in np.random.default_rng([seed, epoch]).permutation(len(files))]
    data = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
        block_length=1, num_parallel_calls=min(cycle_length, len(files)), deterministic=True)
    if shuffle:
        data = data.shuffle(shuffle_buffer, seed=int(np.random.default_rng([seed, epoch, 1]).integers(2**31)),
                            reshuffle_each_iteration=False)
    return data.map(_parse, num_parallel_calls=os.cpu_count() or 1, deterministic=True)


def _parse(record):
    tf = _tensorflow()
    parsed = tf.io.parse_single_example(record, {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "name": tf.io.FixedLenFeature([], tf.string),
    })
    return parsed["image"], parsed["label"], parsed["name"]
