"""TFRecord shards: `cnncompile data pack` / `data verify` on tiny real image folders, the
manifest's checks, reading shards in a (seed, epoch) order, and shards split across workers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnncompile.data import shards
from cnncompile.data.folders import scan_folder
from cnncompile.data.formats import DataError
from tests.conftest import run_cli

CLASSES = ("cat", "dog", "eel")


def make_folder(root: Path, per_class: int = 10, size: int = 16) -> Path:
    """root/<class>/<i>.png and .jpg alternating, 16x16 RGB noise: distinct bytes per image."""
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "photos")


def pack(*args: str, cwd: Path) -> object:
    return run_cli("data", "pack", *args, cwd=cwd, in_process=True)


def read(split: shards.ShardSplit, *, shuffle: bool = False, seed: int = 0, epoch: int = 0) -> list[tuple[str, bytes, int]]:
    """(name, image bytes, label) of every record of a split, in the order it reads them."""
    import tensorflow as tf

    features = {key: tf.io.FixedLenFeature([], kind) for key, kind in
                (("name", tf.string), ("image", tf.string), ("label", tf.int64))}
    return [(r["name"].numpy().decode(), r["image"].numpy(), int(r["label"]))
            for r in split.records(shuffle=shuffle, seed=seed, epoch=epoch).map(
                lambda record: tf.io.parse_single_example(record, features))]


def stored(folder: Path, manifest: shards.Manifest, split: str) -> dict[str, tuple[bytes, int]]:
    """name -> (image bytes, label) of every record in a split's shards, read by TensorFlow."""
    found = {}
    for name, data, label in read(shards.ShardSplit.open(folder, manifest, split, (16, 16, 3))):
        assert name not in found  # each image once
        found[name] = (data, label)
    return found


def test_pack_keeps_every_image_byte_for_byte_with_its_label(folder, tmp_path):
    result = pack(str(folder), "-o", "shards", "--images-per-shard", "7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("wrote shards/: 24 train images in 4 shards, 6 test images in 1 shard "
                                     f"({sum(p.stat().st_size for p in (tmp_path / 'shards').glob('*.tfrecord')) / 2**20:,.1f} MB), 3 classes")
    manifest = shards.read_manifest(tmp_path / "shards")
    raw = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert raw["classes"] == list(CLASSES) and raw["counts"] == {"train": 24, "test": 6}
    assert raw["cnncompile_version"] and raw["format"] == "cnncompile-shards"
    assert [s.images for s in manifest.files("train")] == [7, 7, 7, 3]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["manifest.json", "test-00000-of-00001.tfrecord",
                                                                       *(f"train-0000{i}-of-00004.tfrecord" for i in range(4))]
    records = {**stored(tmp_path / "shards", manifest, "train"), **stored(tmp_path / "shards", manifest, "test")}
    every = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*.*")}
    assert set(records) == set(every)
    for name, (data, label) in records.items():
        assert data == every[name].read_bytes()  # the original bytes, not re-encoded
        assert CLASSES[label] == name.split("/")[0]
    # The test split is the one `dataset: {path: photos}` takes with the same seed: from file names.
    scan = scan_folder(folder, test_split=0.2, seed=0)
    assert set(stored(tmp_path / "shards", manifest, "test")) == {i.name for i in shards.items(scan)["test"]}
    # Shards mix the classes (written in a shuffled order), though the folder is sorted by class.
    assert len(set(manifest.files("train")[0].labels)) > 1
    verified = run_cli("data", "verify", "shards", cwd=tmp_path, in_process=True)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == ("shards: 5 shards, 24 train and 6 test images; "
                                       "every size and sha256 matches manifest.json")


def test_train_and_test_subfolders_are_kept_as_they_are(tmp_path):
    make_folder(tmp_path / "split" / "train", per_class=4)
    make_folder(tmp_path / "split" / "test", per_class=2)
    assert pack("split", "-o", "shards", cwd=tmp_path).returncode == 0
    manifest = shards.read_manifest(tmp_path / "shards")
    assert (manifest.count("train"), manifest.count("test")) == (12, 6)
    assert all(name.startswith("test/") for name in stored(tmp_path / "shards", manifest, "test"))


def test_shard_size_in_bytes(folder, tmp_path):
    assert pack(str(folder), "-o", "shards", "--shard-size", "2KB", cwd=tmp_path).returncode == 0
    manifest = shards.read_manifest(tmp_path / "shards")
    sizes = [s.bytes for s in manifest.files("train")]
    assert len(sizes) > 4 and max(sizes) < 2048 + 1024  # one image (<1 KB) may pass the line
    assert pack(str(folder), "-o", "other", "--shard-size", "lots", cwd=tmp_path).returncode == 2


@pytest.fixture
def with_bad(folder) -> Path:
    (folder / "dog" / "truncated.jpg").write_bytes((folder / "dog" / "00.jpg").read_bytes()[:300])
    (folder / "eel" / "notes.png").write_text("not an image")
    return folder


def test_bad_images_are_skipped_and_listed(with_bad, tmp_path):
    result = pack(str(with_bad), "-o", "shards", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = sorted(line for line in result.stderr.splitlines() if line.startswith("warning: "))
    assert len(warnings) == 2
    assert warnings[0].startswith(f"warning: {with_bad / 'dog' / 'truncated.jpg'}: truncated JPEG")
    assert warnings[1].startswith(f"warning: {with_bad / 'eel' / 'notes.png'}: not an image")
    assert result.stdout.rstrip().endswith("skipped 2 unreadable images")
    manifest = shards.read_manifest(tmp_path / "shards")
    assert manifest.count("train") + manifest.count("test") == 30
    assert sorted(Path(s.partition(": ")[0]).name for s in manifest.skipped) == ["notes.png", "truncated.jpg"]


def test_bad_images_error_refuses_and_writes_nothing(with_bad, tmp_path):
    result = pack(str(with_bad), "-o", "shards", "--bad-images", "error", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any(l.startswith(f"error: {with_bad / 'dog' / 'truncated.jpg'}: truncated JPEG") for l in lines)
    assert any(l.startswith(f"error: {with_bad / 'eel' / 'notes.png'}: not an image") for l in lines)
    assert lines[-1] == ("error: 2 unreadable images; nothing written (--bad-images skip packs the others and lists "
                         "these in the manifest)")
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no shards, no leftovers


@pytest.fixture
def packed(folder, tmp_path) -> Path:
    assert pack(str(folder), "-o", "shards", "--images-per-shard", "7", cwd=tmp_path).returncode == 0
    return tmp_path / "shards"


def test_a_missing_or_resized_shard_is_named(packed):
    victim = packed / "train-00001-of-00004.tfrecord"
    data = victim.read_bytes()
    victim.write_bytes(data[:-10])
    with pytest.raises(DataError, match=rf"^{victim}: {len(data) - 10:,} bytes, manifest.json says {len(data):,}; "
                                        "the shard is truncated"):
        shards.read_manifest(packed)
    victim.unlink()
    with pytest.raises(DataError, match=rf"^{victim}: shard listed in manifest.json is missing$"):
        shards.read_manifest(packed)
    result = run_cli("data", "verify", str(packed), in_process=True)
    assert result.returncode == 1 and result.stderr == f"error: {victim}: shard listed in manifest.json is missing\n"


def test_changed_bytes_fail_verify_by_sha256_and_reading_by_crc(packed):
    victim = packed / "train-00002-of-00004.tfrecord"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the hashes can tell
    victim.write_bytes(bytes(data))
    shards.read_manifest(packed)  # sizes match: the cheap check passes
    result = run_cli("data", "verify", str(packed), in_process=True)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {victim}: sha256 ")
    assert "does not match manifest.json's" in result.stderr
    manifest = shards.read_manifest(packed)
    import tensorflow as tf

    with pytest.raises(tf.errors.DataLossError, match="corrupted record"):
        read(shards.ShardSplit.open(packed, manifest, "train", (16, 16, 3)))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["counts"].update(train=25), "counts.train is 25 but its shards hold 24 images"),
    (lambda m: m.update(format="other"), "not a cnncompile shard manifest"),
    (lambda m: m.update(format_version=9), "format_version 9; this cnncompile reads 1"),
    (lambda m: m["shards"][0].pop("sha256"), "malformed manifest (KeyError: 'sha256')"),
    (lambda m: m["shards"][0].update(file="../photos/cat/00.jpg"), "is not a file of this folder"),
])
def test_an_edited_manifest_is_refused(packed, edit, message):
    raw = json.loads((packed / "manifest.json").read_text())
    edit(raw)
    (packed / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match=str(packed / "manifest.json")) as caught:
        shards.read_manifest(packed)
    assert message in str(caught.value)


def test_an_interrupted_pack_leaves_the_previous_pack_whole(packed, folder, monkeypatch):
    before = {p.name: p.read_bytes() for p in packed.iterdir()}
    real, calls = shards._write_shard, []

    def crash_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(shards, "_write_shard", crash_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        shards.pack(scan_folder(folder, test_split=0.2, seed=0), packed, images_per_shard=3, force=True)
    assert {p.name: p.read_bytes() for p in packed.iterdir()} == before
    assert sorted(p.name for p in packed.parent.iterdir()) == ["photos", "shards"]  # no staging folder left
    assert pack(str(folder), "-o", "shards", cwd=packed.parent).stderr.strip() == \
        "error: shards: already holds packed shards; use --force to replace them"


def test_each_epoch_has_its_own_reproducible_order(packed):
    split = shards.ShardSplit.open(packed, shards.read_manifest(packed), "train", (16, 16, 3))

    def order(epoch: int) -> list[str]:
        return [name for name, _, _ in read(split, shuffle=True, seed=3, epoch=epoch)]

    assert order(0) == order(0)  # a resumed run reads epoch 0 as the first run did
    assert order(0) != order(1)
    assert sorted(order(0)) == sorted(order(1)) and len(order(1)) == 24  # every image once per epoch
    assert [name for name, _, _ in read(split)] != order(0)


def test_a_slice_reads_only_its_images_in_the_split_order(packed):
    split = shards.ShardSplit.open(packed, shards.read_manifest(packed), "train", (16, 16, 3))
    every = read(split)
    assert [label for _, _, label in every] == list(split.labels())
    for start, stop in ((0, 18), (18, 24), (5, 16), (7, 14)):
        part = split.slice(start, stop)
        assert part.count == stop - start and list(part.labels()) == list(split.labels()[start:stop])
        assert read(part) == every[start:stop]
    assert len(split.slice(18, 24).segments) == 2  # 7 + 7 + 7 + 3 images: only the last two files


def test_batches_decode_to_the_folders_pixels(packed, folder):
    from cnncompile.data.formats import decode_image

    split = shards.ShardSplit.open(packed, shards.read_manifest(packed), "test", (16, 16, 1))
    names = [name for name, _, _ in read(split)]
    (images, labels), = list(split.batches(64).as_numpy_iterator())
    assert images.shape == (6, 16, 16, 1) and images.dtype == np.uint8
    assert list(labels) == list(split.labels())
    for name, image in zip(names, images):  # JPEG and PNG, converted to grayscale as Pillow does
        assert np.array_equal(image, decode_image(folder / name, None, 1).pixels), name
    resized = shards.ShardSplit.open(packed, split.manifest, "test", (8, 8, 3))
    (small, _), = list(resized.batches(64).as_numpy_iterator())
    expected = np.stack([decode_image(folder / name, (8, 8), 3).pixels for name in names]).astype(int)
    assert small.shape == (6, 8, 8, 3) and np.abs(small.astype(int) - expected).mean() < 3


def test_workers_read_disjoint_files_and_together_every_image(packed):
    split = shards.ShardSplit.open(packed, shards.read_manifest(packed), "train", (16, 16, 3))
    names = [[name for name, _, _ in read(split.for_worker(2, index), shuffle=True)] for index in range(2)]
    assert not set(names[0]) & set(names[1])
    assert len(names[0]) + len(names[1]) == 24
    with pytest.raises(DataError, match=rf"^{packed}: 4 shard files to train on for 5 workers; each worker reads "
                                        r"whole files, so pack with at least 5 \(e.g. cnncompile data pack "
                                        r"--images-per-shard 4\)$"):
        split.for_worker(5, 0)


# --- two real workers -----------------------------------------------------------------------

WORKERS_SPEC = """\
name: sharded
input: {shape: [8, 8, 1]}
layers:
  - {type: Flatten}
  - {type: Dense, units: 3, activation: softmax}
training:
  dataset: {path: shards, cache: none}
  optimizer: {type: sgd, learning_rate: 0.01}
  loss: sparse_categorical_crossentropy
  epochs: 2
  batch_size: 8
  validation_split: 0.25
"""


def make_numbered_folder(root: Path, per_class: int = 14) -> dict[int, str]:
    """8x8 grayscale PNGs, each holding its id in its first two pixels (low byte, high byte)."""
    names = {}
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            number = 1000 + label * per_class + i
            pixels = np.full((8, 8), 7, np.uint8)
            pixels[0, :2] = number % 256, number // 256
            Image.fromarray(pixels, "L").save(root / name / f"{i:02d}.png")
            names[number] = f"{name}/{i:02d}.png"
    return names


def start(project: Path, command: list[str], workers: int = 2) -> list:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_distributed import free_ports

    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    procs = []
    for index in range(workers):
        env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([sys.executable, *[c.format(index=index) for c in command]], cwd=project, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def test_two_workers_read_their_own_files_and_every_image_once_per_epoch(tmp_path):
    from tests.conftest import ROOT
    from tests.test_distributed import finish

    names = make_numbered_folder(tmp_path / "numbered")
    # 42 images: 8 test, 34 train in 7 files of 5 (and 4); validation takes the last 8 of them.
    assert pack("numbered", "-o", "shards", "--images-per-shard", "5", cwd=tmp_path).returncode == 0
    (tmp_path / "sharded.yaml").write_text(WORKERS_SPEC)
    # `cnncompile train --distribute multi_worker` on two workers, each noting the images its
    # training steps were given (tests/shards_worker.py).
    results = finish(start(tmp_path, [str(ROOT / "tests" / "shards_worker.py"), "seen{index}.json", "train",
                                      "sharded.yaml", "--out", "run", "--distribute", "multi_worker"]))
    for rc, out, err in results:
        assert rc == 0, err
    assert "(this is worker 0, the chief)" in results[0][1] and "worker finished" in results[1][1]
    seen = [json.loads((tmp_path / f"seen{i}.json").read_text()) for i in range(2)]
    manifest = shards.read_manifest(tmp_path / "shards")
    training = shards.ShardSplit.open(tmp_path / "shards", manifest, "train", (8, 8, 1)).slice(0, 34 - int(34 * 0.25))
    expected = {number for number, name in names.items()
                if name in {n for n, _, _ in read(training)}}
    assert len(expected) == 26
    files = [{n for n, _, _ in read(training.for_worker(2, i))} for i in range(2)]
    assert sorted(map(len, files)) == [11, 15]  # files of 5, 5, 5 and of 5, 5, 1 images
    assert seen[0]["steps"] == seen[1]["steps"] == 4  # the larger share, 15 images, in batches of 4 per worker
    for epoch in range(2):
        ids = [worker["seen"][epoch] for worker in seen]
        assert not set(ids[0]) & set(ids[1])  # no image on both workers
        assert sorted(ids[0] + ids[1]) == sorted(expected)  # and every training image, once
        assert {names[i] for i in ids[0]} == files[0] and {names[i] for i in ids[1]} == files[1]  # its own files
    assert seen[0]["seen"][0] != seen[0]["seen"][1]  # reshuffled each epoch
    assert [worker["worker"] for worker in seen] == [0, 1] and all(len(worker["seen"]) == 2 for worker in seen)

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_images"] == 26 and metrics["distribute"]["workers"] == 2
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert str(tmp_path / "shards" / "manifest.json") in json.dumps(record)


def test_train_streams_shards_and_a_corrupt_one_is_a_located_error(tmp_path):
    make_numbered_folder(tmp_path / "numbered")
    assert pack("numbered", "-o", "shards", "--images-per-shard", "5", cwd=tmp_path).returncode == 0
    spec = tmp_path / "sharded.yaml"
    spec.write_text(WORKERS_SPEC.replace("epochs: 2", "epochs: 1"))
    result = run_cli("train", "sharded.yaml", "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "34 train / 8 test images" in result.stdout and "streamed from 7 shard files" in result.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_images"] == 26 and metrics["epochs"] == 1

    victim = tmp_path / "shards" / "test-00000-of-00002.tfrecord"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = run_cli("train", "sharded.yaml", "--out", "run2", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = WORKERS_SPEC.splitlines().index("  dataset: {path: shards, cache: none}") + 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"sharded.yaml:{line}:12: error: training.dataset: a shard is corrupt (corrupted record at ")
    assert result.stderr.strip().endswith("`cnncompile data verify` names the file")


def test_verify_needs_no_framework(packed, folder):
    from tests.conftest import modules_imported_by

    assert modules_imported_by("data", "verify", str(packed)) == []
    result = run_cli("data", "verify", str(folder), in_process=True)
    assert (result.returncode, result.stderr) == (
        1, f"error: {folder}: no manifest.json; not a folder written by `cnncompile data pack`\n")


def test_a_resumed_run_reads_the_epochs_an_uninterrupted_one_does(packed):
    split = shards.ShardSplit.open(packed, shards.read_manifest(packed), "train", (16, 16, 3))

    def labels(data) -> list[list[int]]:
        return [list(y) for _, y in data.as_numpy_iterator()]

    whole = labels(split.batches(5, shuffle=True, seed=4, first_epoch=0, epochs=3))
    resumed = labels(split.batches(5, shuffle=True, seed=4, first_epoch=2, epochs=3))
    assert len(whole) == 3 * 5 and resumed == whole[10:]  # 24 images: batches of 5, 5, 5, 5, 4 per epoch
    assert whole[:5] != whole[5:10]


def test_fewer_shard_files_than_workers_is_a_located_error(packed):
    from types import SimpleNamespace

    from cnncompile.run.distributed import by_file
    from cnncompile.run.rundir import RunError

    split = shards.ShardSplit.open(packed, shards.read_manifest(packed), "train", (16, 16, 3))
    cluster = SimpleNamespace(workers=5, replicas=5, strategy=None)  # refused before the strategy is used
    with pytest.raises(RunError, match=r"^training.dataset: .*4 shard files to train on for 5 workers") as caught:
        by_file(cluster, split, None, batch_size=10, seed=0, first_epoch=0, epochs=1)
    assert caught.value.where == ("training", "dataset")
