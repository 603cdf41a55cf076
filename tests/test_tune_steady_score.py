"""A tune trial is ranked by its best epoch averaged with its neighbours (search.smoothing), so
one lucky epoch on a small validation set no longer wins the pick; the weights kept are still
the best epoch's (issue 20)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from cnncompile.run.best_epoch import BEST_EPOCH_FILE, BestEpoch
from tests.conftest import run_cli
from tests.test_tune_best_epoch import _report

SPIKE = [0.80, 0.97, 0.80, 0.80]  # one lucky epoch
STEADY = [0.90, 0.94, 0.95, 0.94]


def _study() -> optuna.Study:
    return optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())


@pytest.mark.parametrize("smoothing, picked", [(1, "steady"), (0, "spike")])
def test_a_steady_trial_beats_one_lucky_epoch_unless_smoothing_is_off(smoothing, picked):
    study = _study()
    for name, values in (("spike", SPIKE), ("steady", STEADY)):
        reporter, trial = _report(study, values, epochs=4, smoothing=smoothing)
        trial.set_user_attr("name", name)
        study.tell(trial, reporter.best.score)
    assert study.best_trial.user_attrs["name"] == picked
    spike = study.trials[0]
    assert spike.value == pytest.approx(0.97 if smoothing == 0 else (0.80 + 0.97 + 0.80) / 3)


def test_the_pruner_is_told_the_score_so_far_and_the_best_epochs_weights_are_kept():
    study = _study()
    reporter, _ = _report(study, [0.5, 0.9, 0.5, 0.6, 0.95], epochs=5, smoothing=1)
    # Epoch 2 is best from epoch 2 on: its window fills as epoch 3 arrives; epoch 5 then
    # takes over with only its left neighbour trained.
    assert study.trials[0].intermediate_values == pytest.approx(
        {1: 0.5, 2: 0.7, 3: 1.9 / 3, 4: 1.9 / 3, 5: (0.6 + 0.95) / 2})
    assert (reporter.best.epoch, reporter.best.value) == (5, 0.95)
    assert reporter.best.weights[0].tolist() == [5, 5]


@pytest.mark.parametrize("smoothing, expected", [(0, 0.9), (1, (0.6 + 0.9 + 0.7) / 3), (2, (0.5 + 0.6 + 0.9 + 0.7) / 4)])
def test_a_resumed_trial_scores_the_epochs_trained_before_the_stop(tmp_path, smoothing, expected):
    """Killed after epoch 4 with its best at epoch 3: the values of epochs 1-4 come back from
    history.csv, and an epoch trained again after the resume replaces its old value."""
    (tmp_path / "history.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n"
                                          "1,0.4,1.0,0.5,1.0\n2,0.5,0.9,0.6,0.9\n3,0.6,0.8,0.9,0.8\n4,0.7,0.7,0.7,0.7\n")
    with open(tmp_path / BEST_EPOCH_FILE, "wb") as handle:
        np.savez(handle, value=0.9, epoch=3, w0000=np.zeros(2))
    best = BestEpoch("maximize", tmp_path, "val_accuracy", smoothing)
    assert (best.epoch, best.value) == (3, 0.9)
    assert best.score == pytest.approx(expected)

    class Model:
        def get_weights(self):
            return [np.ones(2)]

    best.offer(4, 0.8, Model())  # epoch 4 again, differently (it was past the checkpoint)
    assert best.epoch == 3 and best.score == pytest.approx({0: 0.9, 1: (0.6 + 0.9 + 0.8) / 3,
                                                            2: (0.5 + 0.6 + 0.9 + 0.8) / 4}[smoothing])


def test_smoothing_out_of_range_is_a_located_error(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("""\
name: s
input: {shape: [28, 28, 1]}
layers:
  - {type: Flatten}
  - {type: Dense, name: out, units: 10, activation: softmax}
training: {dataset: mnist, validation_split: 0.2}
search:
  smoothing: 9
  space:
    layers.out.units: {choice: [10]}
""")
    result = run_cli("check", str(spec), cwd=tmp_path)
    assert result.returncode != 0
    assert "s.yaml:8:" in result.stderr + result.stdout and "smoothing" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
