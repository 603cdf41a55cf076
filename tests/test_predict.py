"""`predict` on broken and hostile files: one clean line per bad file, the good ones still answered,
and a pixel limit checked from the header before anything is decoded (issue 24, issue 21's predict).

The model is a real ONNX file run by onnxruntime, written here with onnx.helper (a linear
classifier with cnncompile metadata) so that these tests need neither TensorFlow nor a training run.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
Image = pytest.importorskip("PIL.Image")

from cnncompile.cli import main  # noqa: E402
from cnncompile.data.formats import (DEFAULT_MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS_VARIABLE, DataError,  # noqa: E402
                                     decode_image, read_image_folders)
from tests.conftest import run_cli, write_idx  # noqa: E402

TRAINING_MEAN = 33.3  # MNIST's mean pixel: light digits on a dark background


def linear_model(path: Path) -> Path:
    """image (batch, 28, 28, 1) -> probabilities (batch, 10): softmax of a fixed linear map of the
    pixels, so that an image and its inverse get different answers."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).normal(0, 0.01, (784, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)],
        "linear", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(np.array([-1, 784], np.int64), "shape"), numpy_helper.from_array(weights, "weights")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"cnncompile.input_shape": "[28, 28, 1]",
                                   "cnncompile.labels": json.dumps([str(i) for i in range(10)]),
                                   "cnncompile.training_mean_pixel": str(TRAINING_MEAN)})
    onnx.save(model, str(path))
    return path


def png(width: int, height: int, idat: bytes, bit_depth: int = 8, color_type: int = 0) -> bytes:
    """PNG bytes from their parts, with correct CRCs: a header can say anything."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def zeros_bomb(side: int = 20_000) -> bytes:
    """A valid side x side 8-bit grayscale PNG of zeros, 400 M pixels in about 0.4 MB: one block
    of rows deflated with a full flush (self-contained), repeated, then the final empty block."""
    rows_per_block = 1_000
    row = bytes(side + 1)  # filter byte 0, then the pixels
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(row * rows_per_block) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(side):
        adler = zlib.adler32(row, adler)
    stream = b"\x78\xda" + block * (side // rows_per_block) + b"\x03\x00" + struct.pack(">I", adler)
    return png(side, side, stream)


@pytest.fixture
def model(tmp_path) -> Path:
    return linear_model(tmp_path / "model.onnx")


def digit(dark_on_light: bool = False) -> np.ndarray:
    image = np.zeros((28, 28), np.uint8)
    image[6:22, 12:16] = 255  # a "1"
    return 255 - image if dark_on_light else image


def predict(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, ["predict", *args], env=env)


def test_zeros_bomb_is_refused_from_its_header_before_pillow_opens_it(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(zeros_bomb())
    assert bomb.stat().st_size < 1_000_000
    opened = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or pytest.fail("Pillow opened the bomb"))
    with pytest.raises(DataError) as refused:
        decode_image(bomb, (28, 28), 1)
    assert str(refused.value) == (f"{bomb}: 20,000x20,000 is 400,000,000 pixels, more than the limit of "
                                  f"{DEFAULT_MAX_IMAGE_PIXELS:,}; if you mean it, set "
                                  f"{MAX_IMAGE_PIXELS_VARIABLE}=400000000")
    assert opened == []


def test_the_pixel_limit_is_deliberate_and_can_be_raised(tmp_path):
    path = tmp_path / "digit.jpg"
    Image.fromarray(digit()).save(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MAX_IMAGE_PIXELS_VARIABLE, "783")  # one pixel short of 28 x 28
        with pytest.raises(DataError, match=rf"28x28 is 784 pixels, more than the limit of 783; if you mean it, "
                                            rf"set {MAX_IMAGE_PIXELS_VARIABLE}=784"):
            decode_image(path, None, 1)
        patch.setenv(MAX_IMAGE_PIXELS_VARIABLE, "784")
        assert decode_image(path, None, 1).pixels.shape == (28, 28, 1)
        patch.setenv(MAX_IMAGE_PIXELS_VARIABLE, "lots")
        with pytest.raises(DataError, match=f"{MAX_IMAGE_PIXELS_VARIABLE} must be a positive whole number"):
            decode_image(path, None, 1)
    # The same guard reads train's image folders.
    folder = tmp_path / "folders"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        Image.fromarray(digit()).save(folder / name / "x.png")
    (folder / "b" / "bomb.png").write_bytes(zeros_bomb())
    with pytest.raises(DataError, match=r"b/bomb\.png: 20,000x20,000 is 400,000,000 pixels, more than the limit"):
        read_image_folders(folder, (28, 28), 1, 0.5, 0)


def hostile_files(folder: Path) -> dict[str, str]:
    """file name -> what its error line must say."""
    folder.mkdir()
    (folder / "bomb.png").write_bytes(zeros_bomb())
    jpeg = folder / "whole.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)).save(jpeg, quality=95)
    (folder / "half.jpg").write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    jpeg.unlink()
    (folder / "empty.png").write_bytes(b"")
    small = zlib.compress(b"".join(b"\x00" + bytes(28) for _ in range(28)))
    (folder / "liar.png").write_bytes(png(300, 300, small))  # says 300x300, holds 28x28
    Image.fromarray(digit()).save(folder / "tiff.png", format="TIFF")
    Image.fromarray(digit()).save(folder / "gif.jpg", format="GIF")
    Image.fromarray(digit()).save(folder / "webp.png", format="WEBP")
    (folder / "notes.txt").write_text("not a digit\n")
    (folder / "a_directory").mkdir()
    os.mkfifo(folder / "fifo.png")
    formats = "predict reads PNG or JPEG images or IDX image sets"
    return {
        "bomb.png": "20,000x20,000 is 400,000,000 pixels, more than the limit of 50,000,000; if you mean it, "
                    f"set {MAX_IMAGE_PIXELS_VARIABLE}=400000000",
        "half.jpg": "truncated JPEG",
        "empty.png": f"an empty file; {formats}",
        "liar.png": "truncated PNG",
        "tiff.png": f"a TIFF file; {formats}",
        "gif.jpg": f"a GIF file; {formats}",
        "webp.png": f"a WebP file; {formats}",
        "notes.txt": f"not an image; {formats}",
        "a_directory": "is a directory, not an image file",
        "fifo.png": "is a FIFO, not a regular file",
        "missing.png": "no such file",
    }


def test_every_bad_file_gets_one_line_and_the_good_ones_are_answered(model, tmp_path):
    """A real subprocess with a timeout: a FIFO opened for reading would block forever."""
    expected = hostile_files(tmp_path / "in")
    Image.fromarray(digit()).save(tmp_path / "in" / "good.png")
    write_idx(tmp_path / "in" / "t10k-images-idx3-ubyte.gz", np.stack([digit()] * 3))
    names = ["good.png", *expected, "t10k-images-idx3-ubyte.gz"]
    result = run_cli("predict", str(model), *names, cwd=tmp_path / "in", timeout=120, in_process=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(expected), result.stderr
    for line, (name, reason) in zip(errors, expected.items()):
        assert line.startswith(f"error: {name}: ") and reason in line, (name, line)
    answered = [line.split(":")[0] for line in result.stdout.splitlines()]
    assert answered == ["good.png"] + [f"t10k-images-idx3-ubyte.gz[{i}]" for i in range(3)]

    as_json = run_cli("predict", str(model), *names, "--json", cwd=tmp_path / "in", timeout=120,
                      in_process=False)
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert [p["source"] for p in report["predictions"]] == answered
    assert [e["source"] for e in report["errors"]] == list(expected)
    assert all(reason in e["error"] for e, reason in zip(report["errors"], expected.values()))
    assert "accuracy" not in report  # no labels file beside the IDX set


def test_sixteen_bit_and_transparent_images_read_as_they_look(tmp_path):
    wide = digit().astype(np.uint16) * 257  # the same picture in 16 bits
    Image.fromarray(wide).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    decoded = decode_image(tmp_path / "sixteen.png", None, 1)
    assert np.array_equal(decoded.pixels[..., 0], digit())  # not clipped to white
    assert any("16-bit pixels scaled to 8 bits" in note for note in decoded.notes)

    # A black stroke on a transparent background: what a viewer shows is black on white.
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = 255 - digit(dark_on_light=True)  # opaque (black) where the stroke is
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    decoded = decode_image(tmp_path / "alpha.png", None, 1)
    assert np.array_equal(decoded.pixels[..., 0], digit(dark_on_light=True))
    assert any("transparency composited onto white" in note for note in decoded.notes)


@pytest.mark.parametrize("name, save", [
    ("progressive.jpg", lambda image, path: image.convert("RGB").save(path, progressive=True, quality=95)),
    ("cmyk.jpg", lambda image, path: image.convert("CMYK").save(path, quality=95)),
    ("exif.jpg", lambda image, path: image.save(path, exif=b"Exif\x00\x00" + bytes(4000), quality=95)),
    ("palette.png", lambda image, path: image.convert("P").save(path)),
    ("one_bit.png", lambda image, path: image.convert("1").save(path)),
    ("rgb.png", lambda image, path: image.convert("RGB").save(path)),
])
def test_valid_variants_pass_the_header_check_and_read_alike(tmp_path, name, save):
    """The header reader walks JPEG segments (APPn, progressive SOF2, CMYK) and PNG IHDR without
    refusing anything Pillow would read; each variant decodes to the same digit."""
    save(Image.fromarray(digit()), tmp_path / name)
    decoded = decode_image(tmp_path / name, (28, 28), 1)
    assert decoded.original_size == (28, 28)
    tolerance = 40 if name.endswith(".jpg") else 0  # JPEG is lossy at the stroke's edges
    assert np.abs(decoded.pixels[..., 0].astype(int) - digit()).max() <= tolerance


def test_dark_on_light_digit_gets_a_hint_and_invert_reads_it(model, tmp_path):
    Image.fromarray(digit(dark_on_light=True)).save(tmp_path / "paper.png")
    Image.fromarray(digit()).save(tmp_path / "screen.png")
    plain = predict(str(model), str(tmp_path / "paper.png"), "--json")
    assert plain.exit_code == 0, plain.output
    assert (f"note: {tmp_path / 'paper.png'}: mostly light (mean pixel 234 of 255), but the model was trained on "
            f"dark images (mean pixel 33); if the digit is dark on light, pass --invert") in plain.stderr
    inverted = predict(str(model), str(tmp_path / "paper.png"), "--invert", "--json")
    assert inverted.exit_code == 0 and "--invert" not in inverted.stderr
    screen = predict(str(model), str(tmp_path / "screen.png"), "--json")
    assert "note:" not in screen.stderr
    top = lambda result: json.loads(result.stdout)["predictions"][0]["top"]  # noqa: E731
    assert top(inverted) == top(screen) != top(plain)
    assert set(json.loads(plain.stdout)) == {"predictions"}  # no "accuracy": {} for unlabelled images
    needless = predict(str(model), str(tmp_path / "screen.png"), "--invert")
    assert needless.exit_code == 0 and needless.stderr == (
        f"note: {tmp_path / 'screen.png'}: mostly light after --invert (mean pixel 234 of 255), but the model was "
        f"trained on dark images (mean pixel 33); this image may not need --invert\n")


def test_idx_sets_are_held_to_the_pixel_limit_before_inflating(model, tmp_path, monkeypatch):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10, 28, 28)))
    monkeypatch.setenv(MAX_IMAGE_PIXELS_VARIABLE, "7839")  # one short of 10 x 28 x 28
    inflated = []
    real = zlib.decompressobj
    monkeypatch.setattr(zlib, "decompressobj", lambda *a: inflated.append(a) or real(*a))
    result = predict(str(model), str(tmp_path / "t10k-images-idx3-ubyte.gz"))
    assert result.exit_code == 1 and inflated  # the bounded reader, not gzip.decompress
    assert result.stderr == (f"error: {tmp_path / 't10k-images-idx3-ubyte.gz'}: IDX header says [10, 28, 28], 7,840 "
                             f"values, more than the limit of 7,839; if you mean it, set "
                             f"{MAX_IMAGE_PIXELS_VARIABLE}=7840\n")
    monkeypatch.setenv(MAX_IMAGE_PIXELS_VARIABLE, "7840")
    assert predict(str(model), str(tmp_path / "t10k-images-idx3-ubyte.gz")).exit_code == 0


def test_accuracy_is_reported_only_where_labels_exist(model, tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.stack([digit()] * 4))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 1, 7, 7]))
    result = predict(str(model), str(tmp_path / "t10k-images-idx3-ubyte.gz"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report["accuracy"]) == [str(tmp_path / "t10k-images-idx3-ubyte.gz")]
    assert report["accuracy"][str(tmp_path / "t10k-images-idx3-ubyte.gz")] in (0.0, 0.5, 1.0)
