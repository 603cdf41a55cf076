"""The end of a `train` run: the test set's scores come from one traced forward function, and
they are the numbers they always were (Keras's predict_on_batch and evaluate on the same model)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TINY

COUNT = 300  # a batch of 256 and a last one of 44: two batch sizes, one trace


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """TINY's model (untrained: its weights are as good as any for comparing scores), its
    training section, and COUNT random test images in memory."""
    import keras

    from cnncompile.analysis.check import compile_file
    from cnncompile.backend import fitting as kt
    from cnncompile.backend.builder import build_model
    from cnncompile.data.sources import ArraySplit

    path = tmp_path_factory.mktemp("finish") / "tiny.yaml"
    path.write_text(TINY)
    spec = compile_file(path).spec
    keras.utils.set_random_seed(0)
    model = build_model(spec)
    model.compile(loss=kt.loss(spec.training), metrics=list(kt.metrics(spec.training)))
    rng = np.random.default_rng(0)
    test = ArraySplit(rng.integers(0, 256, (COUNT, 28, 28, 1), dtype=np.uint8),
                      rng.integers(0, 10, COUNT), tuple(str(c) for c in range(10)))
    return model, spec.training, test


def test_one_trace_serves_every_batch_size_with_predict_on_batch_numbers(scored):
    from cnncompile.backend.evaluation import predictor

    model, _, test = scored
    predict = predictor(model, test.image_shape)
    for size in (256, 44, 1):
        images = test.x[:size]
        assert np.array_equal(np.asarray(predict(images)), model.predict_on_batch(images)), size
    assert predict.experimental_get_tracing_count() == 1


def test_test_scores_are_the_per_batch_predictions_scores_and_keras_evaluate(scored, monkeypatch):
    import keras
    import tensorflow as tf

    from cnncompile.backend import fitting as kt
    from cnncompile.run import train
    from cnncompile.run.report import Tally

    model, training, test = scored
    tally = Tally(10)
    scores = train._evaluate(model, model, training, test, tally=tally)
    assert tally.seen == COUNT and tally.matrix.sum() == COUNT

    # What train computed before (predict_on_batch, then the loss batch by batch): equal, not close.
    loss, accuracy = kt.loss(training, reduction=None), kt.metrics(training)["accuracy"]
    per_image, correct = [], []
    for start in range(0, COUNT, train.EVALUATION_BATCH):
        images, labels = test.x[start:start + train.EVALUATION_BATCH], test.y[start:start + train.EVALUATION_BATCH]
        probabilities, y = model.predict_on_batch(images), tf.one_hot(labels, 10, dtype=tf.float64)
        per_image.append(np.asarray(loss(y, probabilities), np.float64))
        correct.append(np.asarray(accuracy(y, probabilities)))
    assert scores == {"test_accuracy": float(np.mean(np.concatenate(correct))),
                      "test_loss": float(np.mean(np.concatenate(per_image)))}
    # However many batches are scored at once.
    monkeypatch.setattr(train, "SCORED_TOGETHER", 1)
    assert train._evaluate(model, model, training, test) == scores

    evaluated = model.evaluate(test.x, keras.utils.to_categorical(test.y, 10), batch_size=train.EVALUATION_BATCH,
                               verbose=0, return_dict=True)
    assert scores["test_accuracy"] == pytest.approx(evaluated["accuracy"], abs=1e-7)
    assert scores["test_loss"] == pytest.approx(evaluated["loss"], rel=1e-6)


EXIT_PROBE = """\
import atexit, gc, json, sys
from pathlib import Path

# Registered before `train` registers its gc.freeze, so it runs after it (atexit is last in,
# first out), as the interpreter's exit would: what is left for the exit's collections to walk.
atexit.register(lambda: Path(sys.argv[1]).write_text(json.dumps(
    {"unfrozen": len(gc.get_objects()), "frozen": gc.get_freeze_count(), "matplotlib": "matplotlib" in sys.modules})))
from cnncompile.cli import main

main(sys.argv[2:], prog_name="cnncompile")
"""


def test_train_exits_without_walking_tensorflows_objects_and_loses_nothing(tmp_path):
    """`train` imports TensorFlow with the collector paused (and without matplotlib), freezes
    what it made, and freezes everything at exit so CPython's finalization does not walk it
    again (~1 s of CPU); atexit handlers still run, and every file and the output line are complete."""
    import json
    import os
    import subprocess
    import sys

    import tensorflow as tf

    from tests.conftest import ROOT, make_idx_dir

    make_idx_dir(tmp_path / "data" / "mnist", n_train=64, n_test=16)
    (tmp_path / "tiny.yaml").write_text(TINY.replace("epochs: 1", "epochs: 2") + "    - {type: TensorBoard}\n")
    (tmp_path / "probe.py").write_text(EXIT_PROBE)
    result = subprocess.run([sys.executable, "probe.py", "exit.json", "train", "tiny.yaml", "--data-dir", "data",
                             "--out", "run", "--quiet"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("test accuracy ") and result.stdout.endswith("artifacts in run/\n")

    at_exit = json.loads((tmp_path / "exit.json").read_text())  # the other atexit handler ran
    assert at_exit["frozen"] > 100_000 and at_exit["unfrozen"] < 1_000, at_exit
    assert not at_exit["matplotlib"]  # neither Keras's import nor curves.png loads it (~0.3 s of CPU each)
    run = tmp_path / "run"
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert (run / "report.html").read_text().rstrip().endswith("</html>")
    assert len((run / "history.csv").read_text().splitlines()) == 3
    events = [event for path in (run / "tensorboard").rglob("*.tfevents.*")
              for event in tf.compat.v1.train.summary_iterator(str(path))]
    assert sorted(v.tag for e in events for v in e.summary.value if v.tag == "epoch_loss") == ["epoch_loss"] * 4


@pytest.mark.parametrize("low, high, integers, ticks", [
    (0.0, 1.0, False, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (0.31, 1.52, False, [0.5, 0.75, 1.0, 1.25, 1.5]),
    (0.5, 20.5, True, [5, 10, 15, 20]),
    (0.5, 1.5, True, [1]),
    (0.7, 0.98, False, [0.7, 0.8, 0.9]),
])
def test_curve_ticks_are_round_numbers(low, high, integers, ticks):
    from cnncompile.run.report import nice_ticks

    assert nice_ticks(low, high, integers=integers) == pytest.approx(ticks)


def test_curves_are_drawn_per_series_with_gaps_and_phases(tmp_path):
    from PIL import Image

    from cnncompile.run.report import SERIES, draw_curves

    history = [{"epoch": e, "loss": 1 / e, "accuracy": 1 - 1 / (e + 1), "val_loss": 1.1 / e,
                "val_accuracy": 1 - 1.2 / (e + 1)} for e in range(1, 7)]
    history[2]["val_loss"] = float("nan")  # a diverged value: a gap, not a crash
    for row in history:
        del row["val_accuracy"]  # no validation accuracy at all: no such line, no legend entry
    draw_curves(tmp_path / "curves.png", history, "run", phase_starts=[4])
    image = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB"))
    assert image.shape == (400, 1000, 3)
    (_, _, training), (_, _, validation) = SERIES

    def pixels(colour, columns):
        return int(np.all(image[:, columns] == colour, axis=-1).sum())

    loss, accuracy = slice(0, 500), slice(500, 1000)
    assert pixels(training, loss) > 100 and pixels(training, accuracy) > 100
    assert pixels(validation, loss) > 100 and pixels(validation, accuracy) == 0
