"""The streamed reader's fast path (data/ingraph.py): JPEGs at the split's size decoded in the
graph give exactly the guarded Pillow decoder's pixels, every other file still goes through
Pillow, and a file TensorFlow refuses is still named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnncompile.data.formats import read_image
from cnncompile.data.sources import FileSplit


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    """Smooth noise: compresses like a photo, and has colour detail for chroma subsampling to lose."""
    small = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)


def files(root: Path, channels: int) -> tuple[list[Path], int]:
    """(files, how many of them must take Pillow) for a 24x24 split of `channels`."""
    root.mkdir()
    native, other = [], []
    for i, (subsampling, quality) in enumerate([(0, 95), (1, 90), (2, 75), (2, 95)]):  # 4:4:4, 4:2:2, 4:2:0
        image = photo((24, 24), i)
        if channels == 1:
            image = image.convert("L")
        image.save(root / f"q{quality}_s{subsampling}.jpg", quality=quality, subsampling=subsampling)
        native.append(root / f"q{quality}_s{subsampling}.jpg")
    progressive = photo((24, 24), 9).convert("L" if channels == 1 else "RGB")
    progressive.save(root / "progressive.jpg", quality=90, progressive=True)
    native.append(root / "progressive.jpg")
    # Pillow's: a resize, a channel conversion, CMYK, a PNG with real transparency.
    photo((32, 28), 5).save(root / "larger.jpg", quality=90)
    photo((24, 24), 6).convert("RGB" if channels == 1 else "L").save(root / "other_channels.jpg", quality=90)
    photo((24, 24), 7).convert("CMYK").save(root / "cmyk.jpg", quality=90)
    rgba = photo((24, 24), 8).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(24, dtype=np.uint8) * 10, (24, 1))))
    rgba.save(root / "alpha.png")
    other += [root / "larger.jpg", root / "other_channels.jpg", root / "cmyk.jpg", root / "alpha.png"]
    every = [path for pair in zip(native, other) for path in pair] + native[len(other):]
    return every, len(other)


@pytest.mark.parametrize("channels", [3, 1])
def test_jpegs_decoded_in_the_graph_give_pillows_pixels(tmp_path, channels):
    paths, through_pillow = files(tmp_path / "images", channels)
    shape = (24, 24, channels)
    split = FileSplit(np.array([str(p) for p in paths]), np.arange(len(paths)) % 3, ("a", "b", "c"), shape)
    calls = []
    decode = split.decode
    split.decode = lambda path: calls.append(path) or decode(path)  # what the numpy_function calls
    # Two epochs in batches of 3 (not a divisor of 9): the padding to whole batches never shows.
    batches = list(split.batches(3, epochs=2).as_numpy_iterator())
    assert [len(images) for images, _ in batches] == [3, 3, 3] * 2
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    expected = np.stack([read_image(path, shape[:2], channels) for path in paths])
    assert images.dtype == np.uint8 and images.shape == (18, *shape)
    for i, path in enumerate(paths * 2):
        assert np.array_equal(images[i], expected[i % len(paths)]), f"{path.name}: pixels differ from Pillow's"
    assert np.array_equal(labels, np.tile(split.y, 2))
    # Exactly the files TensorFlow cannot decode to Pillow's pixels went through Pillow.
    assert len(calls) == 2 * through_pillow


def test_tensorflows_default_jpeg_decoding_is_not_pillows(tmp_path):
    """Why the in-graph path asks for INTEGER_ACCURATE: the default IDCT differs from Pillow's."""
    import tensorflow as tf

    photo((64, 64), 0).save(tmp_path / "a.jpg", quality=95)
    pillow = read_image(tmp_path / "a.jpg", (64, 64), 3).astype(int)
    data = tf.io.read_file(str(tmp_path / "a.jpg"))
    default = tf.io.decode_jpeg(data, channels=3).numpy().astype(int)
    accurate = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE").numpy().astype(int)
    assert np.abs(default - pillow).max() > 1
    assert np.array_equal(accurate, pillow)


@pytest.mark.parametrize("where", [0, 4, 6])
def test_a_jpeg_tensorflow_refuses_is_named_with_pillows_reason(tmp_path, where):
    paths = []
    for i in range(7):
        photo((24, 24), i).save(tmp_path / f"{i}.jpg", quality=90)
        paths.append(str(tmp_path / f"{i}.jpg"))
    # A Huffman table segment whose length is garbage: the header is fine for the scan, both
    # decoders refuse the file.
    raw = Path(paths[where]).read_bytes()
    Path(paths[where]).write_bytes(raw.replace(b"\xff\xc4", b"\xff\xc4\x00\x00", 1))
    split = FileSplit(np.array(paths), np.zeros(7, np.int64), ("a",), (24, 24, 3))
    with pytest.raises(Exception, match=rf"{where}\.jpg: corrupt JPEG \(broken data stream"):
        list(split.batches(4, shuffle=True, seed=3, epochs=2).as_numpy_iterator())
    # The other files stream.
    good = FileSplit(np.array(paths[:where] + paths[where + 1:]), np.zeros(6, np.int64), ("a",), (24, 24, 3))
    assert sum(len(images) for images, _ in good.batches(4).as_numpy_iterator()) == 6
