"""Image folders: scanned without decoding a pixel, then streamed, or decoded once (cache).

  root/<class>/*.png|jpg|jpeg                    split into train and test by test_split and the seed
  root/train/<class>/... and root/test/<class>/  split as laid out

The scan lists the files (classes and files sorted by name) and checks each one's header and
end marker (formats.check_image_file): a file that is not a PNG/JPEG, too large, cut short or
unreadable is refused by name with the reason (bad_images: error, the default) or left out and
listed (bad_images: skip). The test split of a single folder is a permutation of the file list
by the seed, as it always was: decided from names, before any pixel is read, so a file whose
pixels turn out to be garbage still holds its place.

Then `cache` decides how the pixels are read: none streams the files every epoch (FileSplit),
memory decodes them once into arrays (ArraySplit, as fast as IDX), disk decodes them once into
a .npy file in the cache folder that later runs reuse (DiskSplit); auto is memory when the
decoded set is at most AUTO_MEMORY_BYTES, else none.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnncompile.data.formats import IMAGE_SUFFIXES, DataError, check_image_file
from cnncompile.data.sources import ArraySplit, FileSplit, Progress, Split, array_batches
from cnncompile.files import atomic_path

AUTO_MEMORY_BYTES = 1 << 30  # decoded pixels: MNIST-sized folders are held, ImageNet-sized ones streamed
BAD_IMAGES_LISTED = 5
CACHE_DIR_VARIABLE = "CNNCOMPILE_CACHE_DIR"


@dataclass
class FolderScan:
    """What a scan found: the classes, each split's files and labels, the files left out."""

    root: Path
    classes: tuple[str, ...]
    train: tuple[np.ndarray, np.ndarray]  # (paths, int64 labels)
    test: tuple[np.ndarray, np.ndarray]
    layout: str  # how train and test were told apart, for the log
    bad: list[str] = field(default_factory=list)  # "path: reason" of the files left out


def _list_files(folder: Path, classes: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
            if (folder / name).is_dir() else []
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"{folder}: no .png/.jpg images in class folders {list(classes)}")
    return files, labels


def scan_folder(root: Path, *, test_split: float, seed: int, bad_images: str = "error",
                progress: Progress | None = None) -> FolderScan:
    """The files of an image folder, checked from their headers; see the module docstring."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
        parts = {"train": _list_files(root / "train", classes), "test": _list_files(root / "test", classes)}
        layout = "train/ and test/ folders"
    else:
        classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
        if not classes:
            raise DataError(f"{root}: expected one subfolder per class (e.g. {root}/cat/*.png)")
        parts = {"all": _list_files(root, classes)}
        layout = f"test_split {test_split:g} of the files, by seed {seed}"
    total, done, bad = sum(len(files) for files, _ in parts.values()), 0, []
    every = max(1, total // 100)
    checked = {}
    for part, (files, labels) in parts.items():
        keep = []
        for path in files:
            try:
                check_image_file(path)
                keep.append(True)
            except DataError as exc:
                bad.append(str(exc))
                keep.append(False)
            done += 1
            if progress is not None and (done % every == 0 or done == total):
                progress(done, total)
        checked[part] = (np.array([str(f) for f, k in zip(files, keep) if k], dtype=str),
                         np.array([y for y, k in zip(labels, keep) if k], np.int64))
    if bad and bad_images == "error":
        shown = "\n  ".join(bad[:BAD_IMAGES_LISTED])
        more = f"\n  ... and {len(bad) - BAD_IMAGES_LISTED:,} more" if len(bad) > BAD_IMAGES_LISTED else ""
        raise DataError(f"{root}: {len(bad):,} of {total:,} images cannot be read:\n  {shown}{more}\n"
                        "set `bad_images: skip` in the dataset section to leave them out")
    if "all" in checked:
        paths, labels = checked["all"]
        if not len(paths):
            raise DataError(f"{root}: none of the {total:,} images can be read")
        # The same permutation of the (sorted) file list the in-memory loader always used.
        order = np.random.default_rng(seed).permutation(len(paths))
        cut = max(1, round(len(paths) * test_split))
        checked = {"test": (paths[order[:cut]], labels[order[:cut]]),
                   "train": (paths[order[cut:]], labels[order[cut:]])}
    return FolderScan(root, classes, checked["train"], checked["test"], layout, bad)


class DiskSplit(ArraySplit):
    """Decoded images in a .npy file, read a batch of rows at a time (memory-mapped)."""

    @property
    def in_memory(self) -> bool:
        return False

    def describe(self) -> str:
        return f"read from the disk cache {self.file}"

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, first_epoch: int = 0,
                epochs: int = 1, one_hot: bool = False):
        import tensorflow as tf

        images, shape = self.x, self.image_shape

        def rows(indices):
            return images[np.sort(indices)][np.argsort(np.argsort(indices))]  # sorted reads, given order

        def load(indices):
            batch = tf.numpy_function(rows, [indices], tf.uint8, stateful=False)
            batch.set_shape((None, *shape))
            return batch, tf.gather(labels, indices)

        labels = tf.constant(self.y)
        data = array_batches(np.arange(self.count), self.y, batch_size=batch_size, shuffle=shuffle, seed=seed,
                             first_epoch=first_epoch, epochs=epochs).map(lambda indices, _: load(indices))
        return self._with_labels(data, one_hot)

    def slice(self, start: int, stop: int) -> DiskSplit:
        split = DiskSplit(self.x[start:stop], self.y[start:stop], self.classes)
        split.file = self.file
        return split


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_VARIABLE) or Path.home() / ".cache" / "cnncompile") / "decoded"


def _cache_key(split: FileSplit) -> str:
    """Names, sizes and modification times of the files, their labels and the decoded shape:
    any change to the folder or the spec's input gives a new cache file."""
    digest = hashlib.sha256(json.dumps([list(split.image_shape), split.classes]).encode())
    for path, label in zip(split.paths, split.y):
        info = os.stat(path)
        digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\0{label}\n".encode())
    return digest.hexdigest()[:32]


def open_split(split: FileSplit, cache: str, bad_images: str, *, progress: Progress | None = None,
               skipped: Callable[[str], None] = lambda message: None) -> Split:
    """The split as `cache` says (memory | disk | none; auto decided by the caller)."""
    if cache == "none":
        return split

    def on_error(index: int, error: Exception) -> None:
        if bad_images == "error":
            raise DataError(f"{error}\nset `bad_images: skip` in the dataset section to leave such images out")
        skipped(str(error))

    if cache == "memory":
        images, kept = split.decode_all(np.zeros((split.count, *split.image_shape), np.uint8), progress, on_error)
        return ArraySplit(images[:len(kept)], split.y[kept], split.classes)
    target = cache_dir() / f"{_cache_key(split)}.npy"
    labels_file = target.with_suffix(".labels.npy")
    if not (target.is_file() and labels_file.is_file()):
        with atomic_path(target) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(split.count, *split.image_shape))
            _, kept = split.decode_all(out, progress, on_error)
            out.flush()
            del out
        with atomic_path(labels_file) as tmp:
            np.save(tmp, split.y[kept])
    labels = np.load(labels_file)
    disk = DiskSplit(np.load(target, mmap_mode="r")[:len(labels)], labels, split.classes)
    disk.file = target
    return disk
