"""Readers for the on-disk formats, each refusing corrupt or truncated files with a reason."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class DataError(Exception):
    """Data that cannot be used: missing, corrupt, truncated or inconsistent. Says why."""


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzip-compressed or raw, as an array."""
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc}); the file is corrupt or truncated") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: IDX header says {dims} ({expected:,} bytes) but the file holds "
                        f"{len(data):,} bytes; it is truncated or corrupt")
    return np.frombuffer(data, dtype, offset=header).reshape(dims)


def as_images(x: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) numeric -> uint8 (N, H, W, C), refusing other shapes."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{where}: expected images of shape (N, H, W) or (N, H, W, C), got {x.shape}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{where}: images must be numbers, got dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{where}: pixel values must be 0-255, found {x.min()}..{x.max()}")
        x = x.astype(np.uint8)
    return x


def as_labels(y: np.ndarray, count: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if len(y) != count:
        raise DataError(f"{where}: {len(y):,} labels for {count:,} images")
    if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise DataError(f"{where}: labels must be integers >= 0 (dtype {y.dtype})")
    return y.astype(np.int64)


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keras's layout: x_train, y_train, x_test, y_test. Never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
            if missing:
                raise DataError(f"{path}: missing arrays {sorted(missing)} (Keras's layout has "
                                "x_train, y_train, x_test, y_test)")
            arrays = {k: archive[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except DataError:
        raise
    except (OSError, ValueError, zlib.error, EOFError) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc}); corrupt or truncated?") from None
    x_train = as_images(arrays["x_train"], f"{path}[x_train]")
    x_test = as_images(arrays["x_test"], f"{path}[x_test]")
    return (x_train, as_labels(arrays["y_train"], len(x_train), f"{path}[y_train]"),
            x_test, as_labels(arrays["y_test"], len(x_test), f"{path}[y_test]"))


def read_idx_dir(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-... in one folder."""
    arrays = []
    for stem in IDX_STEMS:
        path = find_idx(directory, stem)
        if path is None:
            raise DataError(f"{directory}: missing {stem} (or {stem}.gz)")
        arrays.append(read_idx(path))
    x_train, y_train, x_test, y_test = arrays
    x_train, x_test = as_images(x_train, f"{directory} train images"), as_images(x_test, f"{directory} test images")
    return (x_train, as_labels(y_train, len(x_train), f"{directory} train labels"),
            x_test, as_labels(y_test, len(x_test), f"{directory} test labels"))


IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def find_idx(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def read_image(path: Path, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """One PNG/JPEG as uint8 (H, W, C), converted to `channels` and resized to `size` if given."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None
    return array[..., None] if array.ndim == 2 else array


def read_image_folders(root: Path, size: tuple[int, int], channels: int,
                       test_split: float, seed: int) -> tuple[np.ndarray, ...]:
    """root/<class>/*.png, or root/train/<class>/ and root/test/<class>/. Classes sorted by name."""
    def load(folder: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for label, name in enumerate(classes):
            files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
                if (folder / name).is_dir() else []
            images += [read_image(p, size, channels) for p in files]
            labels += [label] * len(files)
        if not images:
            raise DataError(f"{folder}: no .png/.jpg images in class folders {classes}")
        return np.stack(images), np.asarray(labels, np.int64)

    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        x_train, y_train = load(root / "train", classes)
        x_test, y_test = load(root / "test", classes)
    else:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"{root}: expected one subfolder per class (e.g. {root}/cat/*.png)")
        x, y = load(root, classes)
        order = np.random.default_rng(seed).permutation(len(x))
        cut = max(1, int(round(len(x) * test_split)))
        x_test, y_test, x_train, y_train = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
    return x_train, y_train, x_test, y_test, tuple(classes)
