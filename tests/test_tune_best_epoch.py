"""A tune trial is scored by its best epoch and keeps that epoch's weights; best.yaml stops at
that epoch and retrains to the same model; no pruner judges a trial before its third epoch
(issue 20)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from cnncompile.language.model import ModelSpec
from cnncompile.run.best_epoch import stopped_after
from cnncompile.run.study import make_pruner
from cnncompile.run.tune import _Reporter
from tests.conftest import run_cli
from tests.test_tune import SPEC, learnable_mnist, run, tune_command

# RMSprop at 0.01 learns the plain digits in two epochs (12 steps of 32 of the 384 training
# images each); the staircase schedule then multiplies the rate by 100, so epochs 3 and 4
# diverge: the trial's best epoch is its second. The model is test_tune's.
DIVERGING = SPEC[:SPEC.index("training:")] + """\
training:
  dataset: mnist
  epochs: 4
  batch_size: 32
  validation_split: 0.25
  optimizer:
    type: rmsprop
    learning_rate: {type: ExponentialDecay, initial_learning_rate: 0.01, decay_steps: 24, decay_rate: 100,
                    staircase: true}
search:
  trials: 1
  pruner: none
  space:
    layers.conv1.filters: {choice: [4]}
"""


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_trial_is_its_best_epoch_and_best_yaml_retrains_that_model(tmp_path):
    import keras

    learnable_mnist(tmp_path / "data" / "mnist", n_train=512, n_test=64)
    (tmp_path / "tt.yaml").write_text(DIVERGING)
    result = run(tune_command(tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr
    trial = tmp_path / "tune" / "trials" / "0000"
    history = [float(row["val_accuracy"]) for row in _history(trial)]
    assert len(history) == 4 and history[1] == max(history) > history[-1] + 0.2, history  # the engineered divergence

    # Ranked by epoch 2 averaged with its neighbours (search.smoothing's default, 1).
    score = sum(history[:3]) / 3
    with open(tmp_path / "tune" / "trials.csv") as handle:
        row = next(csv.DictReader(handle))
    assert (float(row["value"]), int(row["best_epoch"]), float(row["best_value"])) == (pytest.approx(score), 2, history[1])
    best = json.loads((tmp_path / "tune" / "best.json").read_text())
    assert (best["epoch"], best["val_accuracy"], best["score"]) == (2, history[1], pytest.approx(score))

    # best.yaml stops at the best epoch and trains to the same weights and the same scores.
    text = (tmp_path / "tune" / "best.yaml").read_text()
    assert f"val_accuracy {history[1]:.4f} after epoch 2 (score {score:.4f})" in text.splitlines()[0]
    assert yaml.safe_load(text)["training"]["epochs"] == 2
    retrain = run_cli("train", str(tmp_path / "tune" / "best.yaml"), "--data-dir", str(tmp_path / "data"),
                      "--out", str(tmp_path / "again"), "--quiet", cwd=tmp_path)
    assert retrain.returncode == 0, retrain.stderr
    assert [float(row["val_accuracy"]) for row in _history(tmp_path / "again")] == history[:2]
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["test_accuracy"] == best["test_accuracy"]

    # The trial's model.keras holds epoch 2's weights, not epoch 4's.
    kept = keras.models.load_model(trial / "model.keras").get_weights()
    retrained = keras.models.load_model(tmp_path / "again" / "model.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(kept, retrained, strict=True))


class _Weights:
    """What the reporter reads of a model: get_weights, and the stop flag."""

    def __init__(self):
        self.stop_training, self.epoch = False, 0

    def get_weights(self):
        return [np.full(2, self.epoch)]


def _report(study: optuna.Study, values: list[float], epochs: int, **options) -> tuple[_Reporter, optuna.Trial]:
    trial = study.ask()
    reporter = _Reporter(trial, "val_accuracy", epochs, **options)
    model = _Weights()
    reporter.set_model(model)
    for epoch, value in enumerate(values):
        model.epoch = epoch + 1
        reporter.on_epoch_end(epoch, {"val_accuracy": value})
        if model.stop_training:
            break
    return reporter, trial


@pytest.mark.parametrize("direction, values, reported, best_epoch", [
    ("maximize", [0.9, 0.5, 0.95, 0.4], [0.9, 0.9, 0.95, 0.95], 3),
    ("minimize", [0.3, 0.6, 0.2, 0.25], [0.3, 0.3, 0.2, 0.2], 3),  # a loss: lower is better
])
def test_the_pruner_is_told_the_best_value_so_far(direction, values, reported, best_epoch):
    study = optuna.create_study(direction=direction, pruner=optuna.pruners.NopPruner())
    reporter, _ = _report(study, values, epochs=4, direction=direction)
    assert study.trials[0].intermediate_values == dict(enumerate(reported, start=1))
    assert (reporter.best.epoch, reporter.best.value) == (best_epoch, values[best_epoch - 1])
    assert reporter.best.weights[0].tolist() == [best_epoch, best_epoch]  # that epoch's weights


@pytest.mark.parametrize("pruner", ["median", "successive_halving", "hyperband"])
def test_no_pruner_stops_a_trial_before_its_third_epoch(pruner):
    """Three strong trials of 4 epochs, then a hopeless one: judged first after epoch 3."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner(pruner, epochs=4))
    for _ in range(3):
        reporter, trial = _report(study, [0.99] * 4, epochs=4)
        assert reporter.pruned_at is None
        study.tell(trial, 0.99)
    reporter, _ = _report(study, [0.1] * 4, epochs=4)
    assert reporter.pruned_at == 3


COSINE = """\
name: c
input: {shape: [28, 28, 1]}
layers: [{type: Flatten}, {type: Dense, units: 10, activation: softmax}]
training:
  dataset: mnist
  optimizer: {type: adam, learning_rate: {type: CosineDecay, initial_learning_rate: 0.01}}
"""


@pytest.mark.parametrize("training, cut", [
    ({"epochs": 9}, {"epochs": 4, "optimizer": {"type": "adam", "learning_rate": {
        "type": "CosineDecay", "initial_learning_rate": 0.01, "decay_steps": 90, "alpha": 0.0}}}),
    # Phases: the second is cut to 1 epoch; the cosine it inherits keeps its 5 epochs of steps.
    ({"phases": [{"epochs": 3}, {"epochs": 5}]}, {"phases": [{"epochs": 3}, {"epochs": 1, "learning_rate": {
        "type": "CosineDecay", "initial_learning_rate": 0.01, "decay_steps": 50, "alpha": 0.0}}]}),
])
def test_best_yaml_pins_a_cosine_decay_to_the_trials_whole_run(training, cut):
    tree = yaml.safe_load(COSINE)
    tree["training"].update(training)
    spec = ModelSpec.model_validate(tree)
    stopped = stopped_after(tree, spec, 4, steps_per_epoch=10)
    assert {key: stopped["training"][key] for key in cut} == cut
    ModelSpec.model_validate(stopped)  # still a valid spec
