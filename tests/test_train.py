"""`cnncompile train` end to end: artifacts, resume after SIGKILL of a real subprocess, determinism
across processes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cnncompile.files import atomic_path, write_json
from cnncompile.language.layers import LAYER_TYPES
from tests.conftest import ROOT, TINY, make_idx_dir, run_cli

@pytest.fixture
def project(tmp_path):
    make_idx_dir(tmp_path / "data" / "mnist", n_train=256, n_test=64)
    (tmp_path / "tiny.yaml").write_text(TINY)
    return tmp_path


def train(project: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_cli("train", str(project / "tiny.yaml"), "--data-dir", str(project / "data"),
                   "--out", str(project / "run"), *extra, cwd=project, timeout=timeout)


def weights_hash(model_path: Path) -> str:
    import keras

    model = keras.models.load_model(model_path, safe_mode=True)
    return hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest()


def test_every_layer_type_has_a_builder():
    from cnncompile.backend.builder import BUILDERS

    assert set(BUILDERS) == set(LAYER_TYPES)


def test_train_end_to_end(tiny_trained, tiny_project):
    result, project = tiny_trained[1], tiny_project  # a copy: trained again below
    assert result.returncode == 0, result.stderr
    run = project / "run"
    trained_in = tiny_trained[0]
    assert f"mnist: 256 train / 64 test images from {trained_in / 'data' / 'mnist'}" in result.stdout
    assert "test accuracy" in result.stdout and f"artifacts in {trained_in / 'run'}/" in result.stdout
    assert " after 1 epoch; " in result.stdout  # not "1 epochs"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "epochs", "train_seconds", "train_images_per_second"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["epochs"] == 1 and (metrics["train_images"], metrics["test_images"]) == (192, 64)
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1"] and "val_loss" in rows[0]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((run / "run.json").read_text())
    assert record["spec_sha256"] == hashlib.sha256((project / "tiny.yaml").read_bytes()).hexdigest()
    assert record["seed"] == 0 and record["versions"]["keras"].startswith("3.")
    assert len(record["dataset"]["files"]) == 4
    assert record["command"][:2] == ["cnncompile", "train"] or record["command"][1] == "train"
    assert not (run / "checkpoint").exists()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temp files left

    # The saved model is the inference model: raw pixels in, probabilities out, no augmentation.
    import keras

    model = keras.models.load_model(run / "model.keras", safe_mode=True)
    assert model.layers[1].name == "preprocessing" and not any("augment" in l.name for l in model.layers)
    probabilities = model.predict(np.full((2, 28, 28, 1), 255, np.float32), verbose=0)
    assert probabilities.shape == (2, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    # metrics.json reports what the saved model scores on the test images, not some other number.
    from cnncompile.data.datasets import load_dataset

    data = load_dataset("mnist", data_dir=project / "data")
    predicted = model.predict(data.x_test.astype(np.float32), verbose=0).argmax(-1)
    assert metrics["test_accuracy"] == pytest.approx(float((predicted == data.y_test).mean()))
    # ...and its loss is evaluate()'s: on random labels accuracy sits near chance, where other
    # images could score the same k/64, but no other images give the same loss.
    model.compile(loss="categorical_crossentropy")
    loss = model.evaluate(data.x_test.astype(np.float32), keras.utils.to_categorical(data.y_test, 10), verbose=0)
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-5)

    again = train(project)
    assert again.returncode == 0 and f"{run} is complete" in again.stdout
    forced = train(project, "--force", "--epochs", "2", "--quiet")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert "epoch 1/2" not in forced.stdout  # --quiet


def test_same_seed_same_weights(tiny_project):
    project = tiny_project  # its run/ trained with seed 0 (in this worker, by the session fixture)
    hashes = [weights_hash(project / "run" / "model.keras")]
    # ...and again in a fresh interpreter: same weights across processes, not just within one
    # (a seed that leaked from process-wide state, or set order under hash randomisation, would differ).
    result = run_cli("train", str(project / "tiny.yaml"), "--data-dir", str(project / "data"),
                     "--out", str(project / "b"), "--quiet", cwd=project, in_process=False)
    assert result.returncode == 0, result.stderr
    hashes.append(weights_hash(project / "b" / "model.keras"))
    assert hashes[0] == hashes[1]
    other = run_cli("train", str(project / "tiny.yaml"), "--data-dir", str(project / "data"),
                    "--out", str(project / "c"), "--quiet", "--seed", "7", cwd=project)
    assert other.returncode == 0 and weights_hash(project / "c" / "model.keras") != hashes[0]


def kill_after_epoch(command: list[str], cwd: Path, env: dict, out: Path, epoch: int) -> int:
    """Start `train` and SIGKILL it once its checkpoint has `epoch` epochs; the epoch it died at."""
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    state = out / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= epoch:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return json.loads(state.read_text())["epoch"]


# min_delta: 10 makes every epoch after the first "no improvement", so EarlyStopping stops
# after epoch 4 and ReduceLROnPlateau halves the rate after every epoch from the second: a run
# that forgot their counters on resume would stop later and train at other rates.
CALLBACKS = """\
  callbacks:
    - {type: EarlyStopping, monitor: val_loss, patience: 3, min_delta: 10}
    - {type: ReduceLROnPlateau, monitor: val_loss, patience: 1, factor: 0.5, min_delta: 10}
"""


def test_kill_and_resume_equals_an_uninterrupted_run(project):
    spec = TINY.replace("{type: adam, learning_rate: {type: CosineDecay, initial_learning_rate: 0.01}}", "adam")
    (project / "tiny.yaml").write_text(spec.split("  callbacks:")[0] + CALLBACKS)
    make_idx_dir(project / "data" / "mnist", n_train=1024, n_test=64)

    def args(out):
        return ("train", str(project / "tiny.yaml"), "--data-dir", str(project / "data"), "--out", str(project / out),
                "--epochs", "8", "--batch-size", "16", "--quiet")

    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    # Killed in a process of its own; resumed (and the whole run) in this one: the resumed run
    # has only the files to go on, as after a real crash.
    killed_at = kill_after_epoch([sys.executable, "-m", "cnncompile", *args("killed")], project, env,
                                 project / "killed", 2)
    assert killed_at < 4 and not (project / "killed" / "metrics.json").exists()
    assert not (project / "killed" / "report.html").exists()  # the report is written by a finished run only

    resumed = run_cli(*args("killed"), cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = run_cli(*args("whole"), cwd=project)
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    histories = [list(csv.DictReader(open(project / out / "history.csv"))) for out in ("killed", "whole")]
    assert [row["epoch"] for row in histories[1]] == ["1", "2", "3", "4"]  # early stopping's epoch
    assert [row["epoch"] for row in histories[0]] == ["1", "2", "3", "4"]
    rates = [float(row["learning_rate"]) for row in histories[0]]
    # The rate each epoch trained at (Keras logs it before ReduceLROnPlateau lowers it for the next).
    assert rates == pytest.approx([0.001, 0.001, 0.0005, 0.00025])
    assert [row["learning_rate"] for row in histories[0]] == [row["learning_rate"] for row in histories[1]]
    assert weights_hash(project / "killed" / "model.keras") == weights_hash(project / "whole" / "model.keras")
    # The resumed run writes its report, from the whole run's metrics (test_report has no kill of its own).
    metrics = json.loads((project / "killed" / "metrics.json").read_text())
    page = (project / "killed" / "report.html").read_text()
    assert metrics["epochs"] == 4 and f"{metrics['test_accuracy']:.4f}" in page
    for row in metrics["per_class"]:
        assert f"<tr><th>{row['label']}</th><td>{row['precision']:.4f}</td><td>{row['recall']:.4f}</td>" in page


def test_changed_spec_refuses_to_resume(project):
    run = project / "run"
    write_json(run / "checkpoint" / "state.json", {"epoch": 1, "checkpoint": "epoch-1.keras",
                                                   "spec_sha256": "0" * 64, "history": [], "train_seconds": 1})
    result = train(project)
    assert result.returncode == 1
    assert "unfinished run of a different version of this spec" in result.stderr


def test_invalid_spec_is_refused_before_tensorflow_loads(project, tmp_path):
    """A fake `tensorflow` that explodes on import proves train never got that far."""
    fake = tmp_path / "fake"
    (fake / "tensorflow").mkdir(parents=True)
    (fake / "tensorflow" / "__init__.py").write_text("raise SystemExit('tensorflow was imported')\n")
    (project / "tiny.yaml").write_text(TINY.replace("filters: 4", "filters: 0"))
    result = run_cli("train", str(project / "tiny.yaml"), cwd=project,
                     env={"PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"})
    assert result.returncode == 1
    assert "filters: must be >= 1, received 0" in result.stderr
    assert "tensorflow was imported" not in result.stderr


def test_missing_training_section_and_missing_data(project):
    (project / "no_training.yaml").write_text(TINY.split("training:")[0])
    result = run_cli("train", str(project / "no_training.yaml"), cwd=project)
    assert result.returncode == 1 and "no training: section" in result.stderr
    # In this process although KERAS_HOME is set: the dataset's cache is read from it at call time
    # (data/datasets.keras_cache), not through Keras, which reads it once at import.
    result = run_cli("train", str(project / "tiny.yaml"), "--data-dir", str(project / "nowhere"), cwd=project,
                     env={"KERAS_HOME": str(project / "keras"), "CNNCOMPILE_DATASET_MIRROR": "http://127.0.0.1:9/",
                          "CNNCOMPILE_DATA_DIR": ""}, in_process=True)
    assert result.returncode == 1
    assert f"{project / 'tiny.yaml'}:11:12: error: training.dataset: mnist not found. Looked in:" in result.stderr
    assert "Traceback" not in result.stderr


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("optimizer, keras_class, attr, value", [
    ("sgd", "SGD", "momentum", 0.0),
    ({"type": "sgd", "momentum": 0.9, "nesterov": True}, "SGD", "nesterov", True),
    ("rmsprop", "RMSprop", "rho", 0.9),
    ({"type": "adam", "amsgrad": True}, "Adam", "amsgrad", True),
    ("adamw", "AdamW", "weight_decay", 0.004),
    ({"type": "nadam", "beta_2": 0.99}, "Nadam", "beta_2", 0.99),
])
def test_optimizers_become_their_keras_classes(optimizer, keras_class, attr, value):
    from cnncompile.backend import fitting as kt
    from cnncompile.language.training import Training

    spec = Training.model_validate({"dataset": "mnist", "optimizer": optimizer})
    made = kt.optimizer(spec, total_steps=100)
    assert type(made).__name__ == keras_class
    assert getattr(made, attr) == pytest.approx(value)


@pytest.mark.parametrize("staircase", [False, True])
def test_schedules_become_keras_schedules(staircase):
    from cnncompile.backend import fitting as kt
    from cnncompile.language.training import Training

    spec = Training.model_validate({"dataset": "mnist", "optimizer": {
        "type": "adam", "learning_rate": {"type": "ExponentialDecay", "initial_learning_rate": 0.1,
                                          "decay_steps": 10, "decay_rate": 0.5, "staircase": staircase}}})
    optimizer = kt.optimizer(spec, total_steps=100)
    for step in (0, 5, 10, 15, 37):  # the rate the optimizer applies at that step
        optimizer.iterations.assign(step)
        exponent = step // 10 if staircase else step / 10
        assert float(optimizer.learning_rate) == pytest.approx(0.1 * 0.5 ** exponent, rel=1e-6), step
    cosine = kt.learning_rate(Training.model_validate({"dataset": "mnist", "optimizer": {
        "type": "sgd", "learning_rate": {"type": "CosineDecay", "initial_learning_rate": 0.1}}}).optimizer.learning_rate, 100)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-7)  # decays over the whole run by default
    assert float(cosine(0)) == pytest.approx(0.1)
    assert float(cosine(50)) == pytest.approx(0.05, rel=1e-6)  # half way: (1 + cos(pi/2)) / 2


def _interactive_sigint() -> None:
    """In the child, SIGINT as a terminal user's shell leaves it: default action, not blocked.
    A suite run without a terminal (CI, nohup) has SIGINT ignored, children inherit that across
    exec, and Python then installs no KeyboardInterrupt handler: the run finished untouched."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_cleanly_and_resumes(project):
    make_idx_dir(project / "data" / "mnist", n_train=2048, n_test=64)
    command = [sys.executable, "-m", "cnncompile", "train", str(project / "tiny.yaml"), "--data-dir",
               str(project / "data"), "--out", str(project / "run"), "--epochs", "4", "--batch-size", "16"]
    proc = subprocess.Popen(command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NO_COLOR": "1"}, preexec_fn=_interactive_sigint)
    state = project / "run" / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists():
            break
        time.sleep(0.05)
    # Like a user pressing Ctrl-C again when nothing happens: a second SIGINT only if the first
    # has not been answered ("interrupted; ...") within 15 s. Pressing again once the answer is
    # on screen would interrupt the interpreter's own shutdown (slow on a loaded machine), which
    # Python leaves to the default action: killed by SIGINT, as a user asked twice.
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    drain = threading.Thread(target=proc.stdout.read, daemon=True)  # a full pipe would block the child
    drain.start()
    proc.send_signal(signal.SIGINT)
    answered = time.monotonic() + 15
    while time.monotonic() < answered and proc.poll() is None and not any("interrupted" in l for l in lines):
        time.sleep(0.05)
    if proc.poll() is None and not any("interrupted" in l for l in lines):
        proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=30)
    err = "".join(lines)
    assert proc.returncode == 130, err
    assert "interrupted; run the same command to resume from the last completed epoch" in err
    assert "Traceback" not in err
    done = json.loads(state.read_text())["epoch"]
    result = run_cli(*command[3:], cwd=project)  # the same command again
    assert result.returncode == 0 and f"resuming from epoch {done}" in result.stdout
    epochs = json.loads((project / "run" / "metrics.json").read_text())["epochs"]  # EarlyStopping may end it
    assert done < epochs <= 4
    assert [r["epoch"] for r in csv.DictReader(open(project / "run" / "history.csv"))] == [str(e) for e in range(1, epochs + 1)]


def test_every_layer_type_builds_and_matches_inference(tmp_path):
    """One spec with every layer type: the Keras model the builder makes agrees with `check`."""
    from cnncompile.backend.builder import build_model, cross_check
    from cnncompile.analysis.check import compile_file

    path = tmp_path / "all.yaml"
    path.write_text("""\
name: every_layer
input: {shape: [20, 20, 3]}
layers:
  - {type: Rescaling, scale: 0.5, offset: -1.0}
  - {type: Resizing, height: 24, width: 24}
  - {type: CenterCrop, height: 20, width: 20}
  - {type: Normalization, name: norm}
  - {type: ZeroPadding2D, padding: [[1, 2], [2, 1]]}
  - {type: Cropping2D, cropping: 1}
  - {type: Conv2D, filters: 8, kernel_size: 3, groups: 1, kernel_regularizer: {l2: 0.001}, data_format: channels_last}
  - {type: BatchNormalization}
  - {type: Activation, activation: swish, name: stem}
  - {type: DepthwiseConv2D, kernel_size: 3, depth_multiplier: 2, padding: same}
  - {type: SeparableConv2D, filters: 8, kernel_size: 3, padding: same}
  - {type: ReLU, max_value: 6, name: relu6}
  - {type: LeakyReLU, inputs: [stem]}
  - {type: Add, inputs: [relu6, leaky_re_lu]}
  - {type: Subtract, inputs: [stem, add]}
  - {type: Multiply, inputs: [stem, add]}
  - {type: Average, inputs: [stem, subtract, multiply]}
  - {type: Maximum, inputs: [stem, average]}
  - {type: Minimum, inputs: [maximum, average]}
  - {type: Concatenate, inputs: [minimum, stem], name: joined}
  - {type: GlobalAveragePooling2D, keepdims: true, name: squeeze}
  - {type: Multiply, inputs: [joined, squeeze]}
  - {type: LayerNormalization}
  - {type: Conv2DTranspose, filters: 4, kernel_size: 3, strides: 2, padding: same}
  - {type: UpSampling2D, size: [1, 1]}
  - {type: Conv2D, filters: 8, kernel_size: 3, strides: 4, padding: same}
  - {type: SpatialDropout2D, rate: 0.1}
  - {type: AveragePooling2D, pool_size: 2}
  - {type: MaxPooling2D, pool_size: 1}
  - {type: Reshape, target_shape: [-1, 8]}
  - {type: Reshape, target_shape: [5, 5, 8]}
  - {type: Identity}
  - {type: GlobalMaxPooling2D, keepdims: true}
  - {type: GlobalAveragePooling2D}
  - {type: Dense, units: 6, activation: relu}
  - {type: Dropout, rate: 0.2}
  - {type: Flatten}
  - {type: Dense, units: 3}
  - {type: Softmax}
""")
    compiled = compile_file(path)
    assert {layer.type for layer in compiled.spec.layers} == {cls.__name__ for cls in LAYER_TYPES}
    model = build_model(compiled.spec)
    cross_check(model, compiled.info)  # raises BackendMismatch on any disagreement
    assert model.count_params() == compiled.info.total_params


def test_test_accuracy_is_accuracy_whatever_metrics_the_spec_lists(project):
    """metrics: [top_k_categorical_accuracy] must not end up reported as test_accuracy."""
    (project / "tiny.yaml").write_text(TINY.replace("  epochs: 1", "  metrics: [top_k_categorical_accuracy]\n  epochs: 1"))
    result = train(project, "--quiet")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(project / "run" / "history.csv")))
    assert "accuracy" in rows[0] and "top_k_categorical_accuracy" in rows[0]
    metrics = json.loads((project / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] < 0.35  # random labels: top-5 accuracy would be ~0.5, top-1 ~0.1
