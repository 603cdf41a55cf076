"""Image folders that stream (issue 23): the scan, the split from names, bad images, cache, the
same pixels as the in-memory loader, epoch order by (seed, epoch), kill + resume, the report's
streaming tally, and `train` + `export --onnx` on a folder through the real CLI."""

from __future__ import annotations

import csv
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnncompile.data.datasets import load_dataset
from cnncompile.data.folders import scan_folder
from cnncompile.data.formats import DataError, read_image
from cnncompile.data.sources import ArraySplit, FileSplit
from cnncompile.language.training import DatasetPath
from tests.conftest import ROOT, run_cli, tally_at_once
from tests.test_train import kill_after_epoch, weights_hash

CLASSES = ("circle", "square", "triangle")


def image_folder(root: Path, per_class: int = 12, size=(20, 18), seed: int = 0) -> Path:
    """root/<class>/NN.png|jpg: small RGB images, every other one a JPEG, of a size the spec
    resizes (20x18 -> 16x16), a little different per class so a net can learn something."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (*size, 3), dtype=np.uint8)
            pixels[..., label] += 100  # the class's colour
            suffix = "jpg" if i % 2 else "png"
            Image.fromarray(pixels).save(root / name / f"{i:03d}.{suffix}")
    return root


def old_read_image_folders(root: Path, size, channels, test_split, seed):
    """The loader before streaming (cnncompile/data/formats.py at the seed of issue 23), kept
    here verbatim as the reference the streamed pixels must equal."""
    def load(folder, classes):
        images, labels = [], []
        for label, name in enumerate(classes):
            files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
            images += [read_image(p, size, channels) for p in files]
            labels += [label] * len(files)
        return np.stack(images), np.asarray(labels, np.int64)

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    x, y = load(root, classes)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = max(1, int(round(len(x) * test_split)))
    return x[order[cut:]], y[order[cut:]], x[order[:cut]], y[order[:cut]]


def unbatched(data) -> tuple[np.ndarray, np.ndarray]:
    parts = list(data.as_numpy_iterator())
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
@pytest.mark.parametrize("channels", [1, 3])
def test_streamed_pixels_equal_the_in_memory_loader(tmp_path, monkeypatch, cache, channels):
    monkeypatch.setenv("CNNCOMPILE_CACHE_DIR", str(tmp_path / "cache"))
    root = image_folder(tmp_path / "shapes")
    expected = old_read_image_folders(root, (16, 16), channels, 0.25, seed=3)
    data = load_dataset(DatasetPath(path=str(root), test_split=0.25, cache=cache), image_shape=(16, 16, channels),
                        seed=3)
    assert data.labels == CLASSES and (data.train.count, data.test.count) == (27, 9)
    assert type(data.train) is {"none": FileSplit, "memory": ArraySplit}.get(cache, type(data.train))
    assert data.train.in_memory == (cache == "memory")
    for split, (x, y) in ((data.train, expected[:2]), (data.test, expected[2:])):
        streamed_x, streamed_y = unbatched(split.batches(5))
        assert streamed_x.dtype == np.uint8 and streamed_x.shape == x.shape
        assert np.array_equal(streamed_x, x) and np.array_equal(streamed_y, y)
        assert np.array_equal(split.labels(), y)
        assert np.array_equal(split.take(4), x[:4])
        assert np.array_equal(split.gather(np.array([6, 0, 3])), x[[6, 0, 3]])
        assert np.array_equal(np.concatenate([b[0] for b in split.numpy_batches(4)]), x)


def test_epoch_order_depends_on_seed_and_epoch_only(tmp_path):
    root = image_folder(tmp_path / "shapes")
    scan = scan_folder(root, test_split=0.25, seed=0)
    files = FileSplit(*scan.train, scan.classes, (16, 16, 3))
    arrays = ArraySplit(*unbatched(files.batches(64)), scan.classes)

    def epochs(split, seed, first, last):
        return [b for b in split.batches(8, shuffle=True, seed=seed, first_epoch=first, epochs=last).as_numpy_iterator()]

    whole = epochs(files, 5, 0, 3)
    assert [len(b[1]) for b in whole] == [8, 8, 8, 3] * 3  # the last batch of each epoch is smaller
    resumed = epochs(files, 5, 2, 3)  # a run resumed at epoch 2 sees what the whole run saw there
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(resumed, whole[8:]))
    assert not np.array_equal(unbatched(files.batches(27, shuffle=True, seed=5, first_epoch=0, epochs=1))[1],
                              unbatched(files.batches(27, shuffle=True, seed=5, first_epoch=1, epochs=2))[1])
    # The folder streams in exactly the order the same images in memory are gathered.
    in_memory = epochs(arrays, 5, 0, 3)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(in_memory, whole))
    one_hot = next(files.batches(4, one_hot=True).as_numpy_iterator())[1]
    assert one_hot.shape == (4, 3) and np.array_equal(one_hot.argmax(1), files.labels()[:4])


def test_split_is_decided_from_names_without_decoding_pixels(tmp_path):
    root = image_folder(tmp_path / "shapes")
    good = old_read_image_folders(root, (16, 16), 3, 0.25, seed=1)
    # A PNG whose header and end marker are fine but whose compressed pixels are garbage: the
    # scan cannot tell, so it takes its place in the split; only decoding finds it out.
    raw = bytearray((root / "square" / "002.png").read_bytes())
    idat = raw.index(b"IDAT")
    raw[idat + 4: idat + 24] = b"\x00" * 20
    (root / "square" / "002.png").write_bytes(bytes(raw))
    scan = scan_folder(root, test_split=0.25, seed=1)
    assert not scan.bad and len(scan.train[0]) + len(scan.test[0]) == 36
    assert np.array_equal(scan.train[1], good[1]) and np.array_equal(scan.test[1], good[3])
    garbage = str(root / "square" / "002.png")
    split = FileSplit(*(scan.train if garbage in scan.train[0] else scan.test), scan.classes, (16, 16, 3))
    with pytest.raises(Exception, match=r"square/002\.png: corrupt PNG"):
        unbatched(split.batches(8))
    data = load_dataset(DatasetPath(path=str(root), test_split=0.25, cache="memory", bad_images="skip"),
                        image_shape=(16, 16, 3), seed=1)
    assert data.train.count + data.test.count == 35
    assert any("square/002.png: corrupt PNG" in note for note in data.notes)


def bad_files(root: Path) -> dict[str, str]:
    """Unreadable images in an image folder: file name -> the reason the scan must give."""
    png = (root / "circle" / "000.png").read_bytes()
    (root / "circle" / "cut.png").write_bytes(png[: len(png) // 2])
    (root / "square" / "text.jpg").write_text("not an image")
    (root / "square" / "empty.png").write_bytes(b"")
    return {"circle/cut.png": "truncated PNG", "square/text.jpg": "not an image", "square/empty.png": "an empty file"}


def test_bad_images_are_refused_by_name_or_skipped(tmp_path):
    root = image_folder(tmp_path / "shapes")
    reasons = bad_files(root)
    with pytest.raises(DataError) as refused:
        load_dataset(DatasetPath(path=str(root)), image_shape=(16, 16, 3))
    message = str(refused.value)
    assert "3 of 39 images cannot be read" in message and "bad_images: skip" in message
    for name, reason in reasons.items():
        assert f"{name}: {reason}" in message
    progress = []
    data = load_dataset(DatasetPath(path=str(root), bad_images="skip"), image_shape=(16, 16, 3),
                        progress=lambda what, done, total: progress.append((what, done, total)))
    assert data.train.count + data.test.count == 36
    assert any("left out 3 images" in note and "circle/cut.png" in note for note in data.notes)
    assert progress[-1] == ("scanning shapes", 39, 39) or ("scanning shapes", 39, 39) in progress


def test_cache_auto_holds_small_folders_and_streams_large_ones(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "shapes")
    small = load_dataset(DatasetPath(path=str(root)), image_shape=(16, 16, 3))
    assert small.train.in_memory and any("cache: auto chose memory" in note for note in small.notes)
    monkeypatch.setattr("cnncompile.data.folders.AUTO_MEMORY_BYTES", 1000)
    large = load_dataset(DatasetPath(path=str(root)), image_shape=(16, 16, 3))
    assert isinstance(large.train, FileSplit) and any("cache: auto chose none" in note for note in large.notes)
    assert "streamed from 29 files" in large.describe()


def test_the_report_tally_streams_to_the_same_numbers(tmp_path):
    from cnncompile.run import report

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(4), 300).astype(np.float32)
    probabilities[10] = probabilities[200]  # a tie in confidence: the earlier image first
    y = rng.integers(0, 4, 300)
    images = rng.integers(0, 256, (300, 8, 8, 1), dtype=np.uint8)
    labels = ("a", "b", "c", "d")
    whole = tally_at_once(tmp_path, probabilities, y, images, labels)
    tally = report.Tally(4)
    for start in range(0, 300, 37):
        tally.add(probabilities[start:start + 37], y[start:start + 37], images[start:start + 37])
    assert tally.finish(tmp_path, labels) == whole
    # The same mistakes, worked out the direct way: most confident first, ties by index.
    predicted = probabilities.argmax(1)
    wrong = np.flatnonzero(predicted != y)
    confidence = probabilities.max(1)
    order = wrong[np.lexsort((wrong, -confidence[wrong]))][:report.MISTAKES_SHOWN]
    assert [m["index"] for m in whole["mistakes"]] == order.tolist()
    assert len(tally.worst) == report.MISTAKES_SHOWN


SPEC = """\
name: shapes
input: {{shape: [16, 16, 3]}}
layers:
  - {{type: Conv2D, filters: 4, kernel_size: 3, activation: relu}}
  - {{type: MaxPooling2D, pool_size: 2}}
  - {{type: Flatten}}
  - {{type: Dense, units: 3, activation: softmax}}
training:
  dataset: {{path: shapes, test_split: 0.25, cache: {cache}}}
  optimizer: adam
  loss: {loss}
  epochs: {epochs}
  batch_size: 16
  validation_split: 0.2
"""


def test_train_and_export_stream_a_folder_through_the_cli(tmp_path):
    image_folder(tmp_path / "shapes", per_class=16)
    (tmp_path / "shapes.yaml").write_text(SPEC.format(cache="none", loss="categorical_crossentropy", epochs=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained = run_cli("train", "shapes.yaml", "--out", "run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "shapes: 36 train / 12 test images from" in trained.stdout and "streamed from 36 files" in trained.stdout
    # The streamed validation pass declares its length: Keras does not warn that it ran out of data.
    said = trained.stderr + "".join(str(w.message) for w in caught)
    assert "ran out of data" not in said
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["train_images"], metrics["test_images"]) == (29, 12)
    assert sum(row["support"] for row in metrics["per_class"]) == 12
    assert np.array(metrics["confusion_matrix"]).sum() == 12
    record = json.loads((run / "run.json").read_text())["dataset"]
    assert (record["train_images"], record["test_images"], record["read"]) == (36, 12, "streamed from 36 files")
    assert (run / "report.html").exists() and (run / "mistakes.png").exists()
    # The model's accuracy, recomputed from the test files the run held out, decoded one by one.
    import keras

    data = load_dataset(DatasetPath(path="shapes", test_split=0.25), spec_dir=tmp_path, image_shape=(16, 16, 3))
    model = keras.models.load_model(run / "model.keras")
    predicted = model.predict(data.test.take(12), verbose=0).argmax(1)
    assert metrics["test_accuracy"] == pytest.approx(float(np.mean(predicted == data.test.labels())))

    exported = run_cli("export", "shapes.yaml", "--run", "run", "--onnx", "-o", "shapes.onnx", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "shapes test images" in exported.stdout and (tmp_path / "shapes.onnx").exists()


def test_an_image_that_fails_to_decode_mid_stream_stops_train_with_its_name(tmp_path):
    from cnncompile.analysis.check import compile_file
    from cnncompile.run.rundir import RunError
    from cnncompile.run.train import train_spec

    root = image_folder(tmp_path / "shapes")
    raw = bytearray((root / "circle" / "004.png").read_bytes())
    idat = raw.index(b"IDAT")
    raw[idat + 4: idat + 24] = b"\x00" * 20
    (root / "circle" / "004.png").write_bytes(bytes(raw))
    (tmp_path / "shapes.yaml").write_text(SPEC.format(cache="none", loss="sparse_categorical_crossentropy", epochs=1))
    with pytest.raises(RunError, match=r"training.dataset: .*circle/004\.png: corrupt PNG"):
        train_spec(compile_file(tmp_path / "shapes.yaml"), out=tmp_path / "run")


def test_kill_and_resume_of_a_streamed_folder_equals_an_uninterrupted_run(tmp_path):
    image_folder(tmp_path / "shapes", per_class=100, size=(16, 16))
    (tmp_path / "shapes.yaml").write_text(SPEC.format(cache="none", loss="sparse_categorical_crossentropy", epochs=6))

    def args(out):
        return ("train", "shapes.yaml", "--out", out, "--quiet")

    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    # Killed in a process of its own (its epochs were read in another hash seed's set order);
    # resumed, and the whole run, in this one from the files alone, as after a real crash.
    killed_at = kill_after_epoch([sys.executable, "-m", "cnncompile", *args("killed")], tmp_path, env,
                                 tmp_path / "killed", 2)
    assert killed_at < 6 and not (tmp_path / "killed" / "metrics.json").exists()
    resumed = run_cli(*args("killed"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    whole = run_cli(*args("whole"), cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    histories = [list(csv.DictReader(open(tmp_path / out / "history.csv"))) for out in ("killed", "whole")]
    assert len(histories[0]) == 6 and histories[0] == histories[1]
    assert weights_hash(tmp_path / "killed" / "model.keras") == weights_hash(tmp_path / "whole" / "model.keras")


def test_the_scan_progress_bar_shows_counts_for_large_folders():
    import io

    from rich.console import Console

    from cnncompile.progress import StageProgress

    out = io.StringIO()
    bar = StageProgress(Console(file=out, width=100, force_terminal=False))
    for done in (500, 1500, 2400):
        bar("scanning photos", done, 2400)
    bar("scanning tiny", 5, 10)  # too small to be worth a bar
    assert "scanning photos" in out.getvalue() and "2400/2400" in out.getvalue()
    assert "tiny" not in out.getvalue()


def test_the_disk_cache_is_reused_until_the_folder_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNCOMPILE_CACHE_DIR", str(tmp_path / "cache"))
    root = image_folder(tmp_path / "shapes")
    first = load_dataset(DatasetPath(path=str(root), cache="disk"), image_shape=(16, 16, 3))
    cached = sorted((tmp_path / "cache" / "decoded").iterdir())
    assert len(cached) == 4 and "read from the disk cache" in first.describe()  # train and test: pixels, labels
    again = load_dataset(DatasetPath(path=str(root), cache="disk"), image_shape=(16, 16, 3))
    assert sorted((tmp_path / "cache" / "decoded").iterdir()) == cached
    assert np.array_equal(again.train.take(29), first.train.take(29))
    Image.fromarray(np.zeros((20, 18, 3), np.uint8)).save(root / "circle" / "000.png")  # a changed file
    os.utime(root / "circle" / "000.png", ns=(1, 1))
    changed = load_dataset(DatasetPath(path=str(root), cache="disk"), image_shape=(16, 16, 3))
    assert len(list((tmp_path / "cache" / "decoded").iterdir())) > 4
    assert changed.train.count + changed.test.count == 36
