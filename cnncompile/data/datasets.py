"""Find, verify and load a spec's dataset; say exactly where it came from.

Built-in datasets are looked up in order, first hit wins:
  1. --data-dir DIR:          DIR/<name>/ (IDX files) or DIR/<name>.npz
  2. $CNNCOMPILE_DATA_DIR:     the same layout
  3. Keras's cache:           ~/.keras/datasets (mnist.npz, fashion-mnist/)
  4. the Debian package:      /usr/share/datasets/<name> (apt-get install dataset-fashion-mnist)
  5. a download from the canonical URL into Keras's cache, verified by sha256.
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnncompile.data.formats import (
    IDX_STEMS,
    DataError,
    find_idx,
    read_idx_dir,
    read_npz,
)
from cnncompile.data.sources import ArraySplit, Progress, Split
from cnncompile.files import atomic_path
from cnncompile.language.training import BUILTIN_DATASETS, DatasetPath

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


@dataclass(frozen=True)
class Remote:
    """A built-in dataset's canonical files and their sha256 (from Keras and the Debian package)."""

    cache_subdir: str  # under ~/.keras/datasets; "" for a single file
    files: dict[str, str]  # file name -> sha256


REMOTES = {
    "mnist": Remote("", {"mnist.npz": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"}),
    "fashion_mnist": Remote("fashion-mnist", {
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    }),
}
DEBIAN_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}


class Dataset:
    """A dataset's two splits (data/sources.py), its class labels and where it came from.

    Dataset(name, train, test, labels, source, files) with Splits, or, for arrays in memory,
    Dataset(name, x_train, y_train, x_test, y_test, labels, source, files).
    """

    def __init__(self, name: str, *parts, notes: list[str] | None = None):
        if not isinstance(parts[0], Split):  # arrays
            x_train, y_train, x_test, y_test, labels, *rest = parts
            parts = (ArraySplit(x_train, y_train, labels), ArraySplit(x_test, y_test, labels), labels, *rest)
        self.name = name
        self.train, self.test, self.labels, self.source, *files = parts
        self.labels = tuple(self.labels)
        self.files: dict[str, str] = files[0] if files else {}  # path -> sha256
        self.notes = notes or []  # what loading decided or left out, for the log

    # The arrays of a split held in memory; a streamed split decodes all its images for these.
    @property
    def x_train(self) -> np.ndarray:
        return self.train.take(self.train.count)

    @property
    def y_train(self) -> np.ndarray:
        return self.train.labels()

    @property
    def x_test(self) -> np.ndarray:
        return self.test.take(self.test.count)

    @property
    def y_test(self) -> np.ndarray:
        return self.test.labels()

    def describe(self) -> str:
        where = "" if self.train.in_memory else f" ({self.train.describe()})"
        return f"{self.name}: {self.train.count:,} train / {self.test.count:,} test images from {self.source}{where}"

    def record(self) -> dict:
        """What run.json says about the data."""
        return {"name": self.name, "source": self.source, "train_images": self.train.count,
                "test_images": self.test.count, "read": self.train.describe(), "files": self.files,
                "labels": list(self.labels)}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def load_dataset(dataset: str | DatasetPath, *, data_dir: Path | None = None, spec_dir: Path = Path("."),
                 image_shape: tuple[int, ...] = (28, 28, 1), seed: int = 0,
                 mirror: str | None = None, progress: Callable[[str, int, int], None] | None = None) -> Dataset:
    """Load the spec's dataset (built-in name or {path: ...}); DataError says what went wrong.
    `progress(what, done, total)` follows a folder's scan and decoding."""
    if isinstance(dataset, DatasetPath):
        return _load_path(dataset, spec_dir, image_shape, seed, progress)
    return _load_builtin(dataset, data_dir, mirror)


def _candidates(name: str, data_dir: Path | None) -> list[tuple[str, Path]]:
    places = []
    for label, root in (("--data-dir", data_dir), ("$CNNCOMPILE_DATA_DIR", os.environ.get("CNNCOMPILE_DATA_DIR"))):
        if root:
            for candidate in (Path(root) / name, Path(root) / DEBIAN_NAMES[name], Path(root) / f"{name}.npz"):
                places.append((label, candidate))
    remote = REMOTES[name]
    cache = keras_cache()
    places.append(("Keras cache", cache / remote.cache_subdir if remote.cache_subdir else cache / "mnist.npz"))
    places.append(("Debian package", Path("/usr/share/datasets") / DEBIAN_NAMES[name]))
    return list(dict.fromkeys(places))


def _load_builtin(name: str, data_dir: Path | None, mirror: str | None) -> Dataset:
    looked = []
    for label, place in _candidates(name, data_dir):
        looked.append(f"{place} ({label})")
        if place.suffix == ".npz" and place.is_file():
            return _finish(name, read_npz(place), str(place), [place])
        if place.is_dir() and find_idx(place, IDX_STEMS[0]):
            files = [find_idx(place, stem) for stem in IDX_STEMS]
            return _finish(name, read_idx_dir(place), str(place), [f for f in files if f])
    try:
        paths = download(name, mirror=mirror)
    except DataError as exc:
        raise DataError(
            f"{name} not found. Looked in:\n  " + "\n  ".join(looked) +
            f"\nthen tried to download it: {exc}\n"
            f"Supply it with --data-dir DIR (DIR/{name}/ with the four IDX files, or DIR/{name}.npz), "
            "or set CNNCOMPILE_DATA_DIR" +
            (", or `apt-get install dataset-fashion-mnist`" if name == "fashion_mnist" else "") + "."
        ) from None
    arrays = read_npz(paths[0]) if paths[0].suffix == ".npz" else read_idx_dir(paths[0].parent)
    return _finish(name, arrays, f"{paths[0].parent} (downloaded)", paths)


def _finish(name: str, arrays: tuple, source: str, files: list[Path]) -> Dataset:
    x_train, y_train, x_test, y_test = arrays
    image_shape, labels = BUILTIN_DATASETS[name]
    for x, part in ((x_train, "train"), (x_test, "test")):
        if x.shape[1:] != image_shape:
            raise DataError(f"{source}: {name} {part} images are {x.shape[1:]}, expected {image_shape}")
    for y, part in ((y_train, "train"), (y_test, "test")):
        if y.size and y.max() >= len(labels):
            raise DataError(f"{source}: {name} {part} labels go up to {y.max()}, expected 0..{len(labels) - 1}")
    return Dataset(name, x_train, y_train, x_test, y_test, labels, source,
                   {str(f): sha256_of(f) for f in files})


def _load_path(dataset: DatasetPath, spec_dir: Path, image_shape: tuple[int, ...], seed: int,
               progress: Callable[[str, int, int], None] | None) -> Dataset:
    path = (spec_dir / dataset.path).resolve() if not Path(dataset.path).is_absolute() else Path(dataset.path)
    if not path.exists():
        raise DataError(f"dataset path {path} does not exist")
    if path.is_file() and path.suffix == ".npz":
        arrays, files = read_npz(path), [path]
    elif (path / "manifest.json").is_file():  # TFRecord shards written by `cnncompile data pack`
        from cnncompile.data.shards import MANIFEST, load

        train, test, manifest, notes = load(path, tuple(image_shape), dataset.cache)
        return Dataset(path.name, train, test, manifest.classes, str(path),
                       {str(path / MANIFEST): sha256_of(path / MANIFEST)}, notes=notes)
    elif path.is_dir() and find_idx(path, IDX_STEMS[0]):
        arrays = read_idx_dir(path)
        files = [f for f in (find_idx(path, s) for s in IDX_STEMS) if f]
    elif path.is_dir():
        return _load_folder(path, dataset, tuple(image_shape), seed, progress)
    else:
        raise DataError(f"{path}: expected a .npz file, a folder of IDX files, or a folder of class folders")
    x_train, y_train, x_test, y_test = arrays
    classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    return Dataset(path.stem, x_train, y_train, x_test, y_test, tuple(str(i) for i in range(classes)),
                   str(path), {str(f): sha256_of(f) for f in files})


def _load_folder(path: Path, dataset: DatasetPath, image_shape: tuple[int, int, int], seed: int,
                 progress: Callable[[str, int, int], None] | None) -> Dataset:
    from cnncompile.data.folders import AUTO_MEMORY_BYTES, open_split, scan_folder
    from cnncompile.data.sources import FileSplit

    def reporting(what: str) -> Progress | None:
        return None if progress is None else (lambda done, total: progress(what, done, total))

    scan = scan_folder(path, test_split=dataset.test_split, seed=seed, bad_images=dataset.bad_images,
                       progress=reporting(f"scanning {path.name}"))
    notes = [f"{path}: split by {scan.layout}"]
    if scan.bad:
        notes.append(f"{path}: left out {len(scan.bad):,} images that cannot be read (bad_images: skip): "
                     + "; ".join(scan.bad[:BAD_IMAGES_NOTED]) + (" ..." if len(scan.bad) > BAD_IMAGES_NOTED else ""))
    splits = [FileSplit(*files, scan.classes, image_shape) for files in (scan.train, scan.test)]
    cache = dataset.cache
    if cache == "auto":
        decoded = sum(split.count for split in splits) * math.prod(image_shape)
        cache = "memory" if decoded <= AUTO_MEMORY_BYTES else "none"
        notes.append(f"cache: auto chose {cache} ({decoded / 2**20:,.0f} MiB of decoded pixels, "
                     f"{'at most' if cache == 'memory' else 'more than'} {AUTO_MEMORY_BYTES / 2**20:,.0f} MiB)")
    skipped: list[str] = []
    train, test = (open_split(split, cache, dataset.bad_images, progress=reporting(f"decoding {part}"),
                              skipped=skipped.append) for split, part in zip(splits, ("train", "test")))
    if skipped:
        notes.append(f"{path}: left out {len(skipped):,} images whose pixels cannot be decoded: "
                     + "; ".join(skipped[:BAD_IMAGES_NOTED]) + (" ..." if len(skipped) > BAD_IMAGES_NOTED else ""))
    return Dataset(path.name, train, test, scan.classes, str(path), {}, notes=notes)


BAD_IMAGES_NOTED = 3


def download(name: str, mirror: str | None = None, timeout: float = 30) -> list[Path]:
    """Fetch a built-in dataset into Keras's cache; verify every file's sha256.

    Each file is written to a temporary name in the cache folder and renamed only after
    its hash matches, so a failed or tampered download leaves nothing behind.
    """
    remote = REMOTES[name]
    base = mirror or os.environ.get("CNNCOMPILE_DATASET_MIRROR") or KERAS_URL
    folder = keras_cache() / remote.cache_subdir
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, expected in remote.files.items():
        target = folder / filename
        if target.is_file() and sha256_of(target) == expected:
            paths.append(target)
            continue
        url = base.rstrip("/") + "/" + filename
        try:
            with atomic_path(target) as tmp:  # renamed into the cache only if the block succeeds
                digest = hashlib.sha256()
                with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    received = 0
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
                        digest.update(block)
                        received += len(block)
                if length is not None and received != int(length):
                    raise DataError(f"{url}: received {received:,} of {int(length):,} bytes (truncated)")
                if digest.hexdigest() != expected:
                    raise DataError(f"{url}: sha256 {digest.hexdigest()} does not match the expected {expected}; "
                                    "refusing the file")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise DataError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
        paths.append(target)
    return paths
