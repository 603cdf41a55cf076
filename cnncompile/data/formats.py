"""Readers for the on-disk formats, each refusing corrupt or truncated files with a reason."""

from __future__ import annotations

import gzip
import math
import os
import stat
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class DataError(Exception):
    """Data that cannot be used: missing, corrupt, truncated or inconsistent. Says why."""


def read_idx(path: Path, max_values: int | None = None) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzip-compressed or raw, as an array. With `max_values`
    (predict's pixel limit), a larger file is refused from its header, and a gzip stream is
    never inflated past what that many values need (a compressed file of zeros is small)."""
    most = None if max_values is None else 4 + 4 * 255 + 8 * max_values + 1  # header + widest values + 1
    try:
        raw = path.read_bytes()
        if raw[:2] != b"\x1f\x8b":
            data = raw
        elif most is None:
            data = gzip.decompress(raw)
        else:
            data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, most)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc}); the file is corrupt or truncated") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    values = math.prod(dims)
    if max_values is not None and values > max_values:
        raise DataError(f"{path}: IDX header says {dims}, {values:,} values, more than the limit of {max_values:,}; "
                        f"if you mean it, set {MAX_IMAGE_PIXELS_VARIABLE}={values}")
    expected = header + values * dtype.itemsize
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


# A deliberate bound on every image decoded from a user's file (predict, training folders,
# export's verification): checked from the file's header, before Pillow allocates anything, so
# a 20,000x20,000 PNG of zeros (389 KB on disk, 400 M pixels) costs a header read. 50 M pixels
# is a large camera photo; Pillow's own guard (a warning at 89 M, an error at 179 M) is an
# accident of its defaults, not a policy.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
MAX_IMAGE_PIXELS_VARIABLE = "CNNCOMPILE_MAX_IMAGE_PIXELS"
IMAGE_FORMATS = "PNG or JPEG"
# Leading bytes -> format, to say what a file is when it is not what we read.
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
              (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"), (b"%PDF", "PDF"), (b"\x1f\x8b", "gzip"),
              (b"PK\x03\x04", "zip"), (b"\x00\x00\x01\x00", "ICO"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"))
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # how Pillow opens 16-bit grayscale


def max_image_pixels() -> int:
    """The pixel limit: DEFAULT_MAX_IMAGE_PIXELS unless $CNNCOMPILE_MAX_IMAGE_PIXELS says otherwise."""
    text = os.environ.get(MAX_IMAGE_PIXELS_VARIABLE)
    if text is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"${MAX_IMAGE_PIXELS_VARIABLE} must be a positive whole number of pixels, got {text!r}")
    return value


def sniff_format(head: bytes) -> str | None:
    """The format a file's first bytes announce (PNG, JPEG, TIFF, ...), or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in SIGNATURES if head.startswith(magic)), None)


def regular_file(path: Path) -> None:
    """Refuse what cannot be read as a file, without opening it (opening a FIFO blocks)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DataError(f"{path}: {'no such file' if isinstance(exc, FileNotFoundError) else exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a directory, not an image file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise DataError(f"{path}: is {kind}, not a regular file")


def _header_size(path: Path, kind: str) -> tuple[int, int]:
    """(width, height) from the PNG IHDR chunk or the JPEG start-of-frame marker."""
    with open(path, "rb") as handle:
        if kind == "PNG":
            head = handle.read(24)
            if len(head) < 24 or head[12:16] != b"IHDR":
                raise DataError(f"{path}: truncated or corrupt PNG (no IHDR header)")
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        handle.read(2)  # SOI
        while True:  # JPEG: walk the marker segments up to the first start-of-frame
            byte = handle.read(1)
            while byte == b"\xff":
                byte = handle.read(1)  # fill bytes before the marker code
            if not byte:
                raise DataError(f"{path}: truncated JPEG (ends before its frame header)")
            marker = byte[0]
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:
                continue  # markers without a length
            length = int.from_bytes(handle.read(2), "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
                frame = handle.read(5)
                if len(frame) < 5:
                    raise DataError(f"{path}: truncated JPEG (ends inside its frame header)")
                return int.from_bytes(frame[3:5], "big"), int.from_bytes(frame[1:3], "big")
            if length < 2:
                raise DataError(f"{path}: corrupt JPEG (bad segment length)")
            handle.seek(length - 2, os.SEEK_CUR)


def image_header(path: Path) -> tuple[str, int, int]:
    """(format, width, height) of a PNG/JPEG from its first bytes, refusing, with the reason, what
    decode_image would: not a regular file, another format, more than max_image_pixels(), a
    zero size. Reads a few hundred bytes at most: a folder's scan calls it for every file."""
    regular_file(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    kind = sniff_format(head)
    if kind not in ("PNG", "JPEG"):
        what = "an empty file" if not head else f"a {kind} file" if kind else "not an image"
        raise DataError(f"{path}: {what}; images must be {IMAGE_FORMATS}")
    width, height = _header_size(path, kind)
    limit = max_image_pixels()
    if width * height > limit:
        raise DataError(f"{path}: {width:,}x{height:,} is {width * height:,} pixels, more than the limit of "
                        f"{limit:,}; if you mean it, set {MAX_IMAGE_PIXELS_VARIABLE}={width * height}")
    if width == 0 or height == 0:
        raise DataError(f"{path}: corrupt {kind} (its header says {width}x{height})")
    return kind, width, height


# The marker that closes each format; a file cut short (an interrupted copy or download) lacks it.
# Looked for near the end, not at it: some cameras and editors pad a file after the marker.
END_MARKERS = {"PNG": b"IEND", "JPEG": b"\xff\xd9"}
END_WINDOW = 1024  # bytes


def check_image_file(path: Path) -> tuple[str, int, int]:
    """image_header plus a look at the file's last bytes for its format's end marker: what a
    folder's scan can say about an image without decoding its pixels."""
    kind, width, height = image_header(path)
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - END_WINDOW))
        tail = handle.read()
    if END_MARKERS[kind] not in tail:
        raise DataError(f"{path}: truncated {kind} (no end marker: the file was cut short)")
    return kind, width, height


@dataclass
class DecodedImage:
    pixels: np.ndarray  # uint8 (H, W, C)
    original_size: tuple[int, int]  # (width, height) as stored
    notes: list[str]  # what was done to make it fit: resizing, conversions, transparency


def decode_image(path: Path, size: tuple[int, int] | None, channels: int) -> DecodedImage:
    """One PNG/JPEG as uint8 (H, W, C), converted to `channels` and resized to `size` if given.
    Refuses, with the reason, anything else: not a regular file, another format, a header
    announcing more than max_image_pixels(), truncated or corrupt data."""
    from PIL import Image, UnidentifiedImageError

    kind, width, height = image_header(path)
    limit = max_image_pixels()
    notes = []
    try:
        with warnings.catch_warnings():
            # Our limit was checked above; Pillow's own bomb check only applies when a user raised ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
                Image.MAX_IMAGE_PIXELS = limit
            with Image.open(path, formats=[kind]) as image:
                image.load()
                mode, target = image.mode, "L" if channels == 1 else "RGB"
                if mode in SIXTEEN_BIT_MODES:  # Pillow's convert("L") would clip 16-bit values at 255
                    image = Image.fromarray((np.asarray(image, np.float64) / 257).round().clip(0, 255)
                                            .astype(np.uint8), "L")
                    notes.append(f"{path}: 16-bit pixels scaled to 8 bits")
                if "A" in image.mode or "transparency" in image.info:  # what a viewer shows: alpha over white
                    image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
                    notes.append(f"{path}: transparency composited onto white")
                if mode != target:
                    notes.append(f"{path}: converted from {mode} to {'grayscale' if channels == 1 else 'RGB'}")
                image = image.convert(target)
                if size is not None and image.size != (size[1], size[0]):
                    notes.append(f"{path}: resized from {image.size[0]}x{image.size[1]} to {size[1]}x{size[0]}")
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise DataError(f"{path}: {reason} {kind} ({exc})") from None
    return DecodedImage(array[..., None] if array.ndim == 2 else array, (width, height), notes)


def read_image(path: Path, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """One PNG/JPEG as uint8 (H, W, C); see decode_image."""
    return decode_image(path, size, channels).pixels


def read_image_folders(root: Path, size: tuple[int, int], channels: int,
                       test_split: float, seed: int) -> tuple[np.ndarray, ...]:
    """root/<class>/*.png, or root/train/<class>/ and root/test/<class>/, decoded into
    (x_train, y_train, x_test, y_test, classes); data/folders.py scans and splits them."""
    from cnncompile.data.folders import open_split, scan_folder
    from cnncompile.data.sources import FileSplit

    scan = scan_folder(root, test_split=test_split, seed=seed)
    train, test = (open_split(FileSplit(*files, scan.classes, (*size, channels)), "memory", "error")
                   for files in (scan.train, scan.test))
    return train.x, train.y, test.x, test.y, scan.classes
