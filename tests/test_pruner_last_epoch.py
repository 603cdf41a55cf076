"""A pruner stops trials between epochs, never after a trial's last one (issue 20's race).

Optuna's successive-halving rungs sit at 1, 3, 9, ... epochs whatever a trial's length: with
9 epochs, rung 9 used to judge trials that had already finished and tell them PRUNED, which
kept fully trained models out of the pick. Real Optuna pruner, in-memory study, no training.
"""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from cnncompile.run.tune import _Reporter


def _study_with_three_strong_trials() -> optuna.Study:
    """Three trials that scored 0.5, 0.9 and 0.99 in their 3 epochs, judged at rungs 1 and 3 as they went."""
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    for _ in range(3):
        trial = study.ask()
        for step, value in zip((1, 2, 3), (0.5, 0.9, 0.99), strict=True):
            trial.report(value, step)
            assert not trial.should_prune()
        study.tell(trial, 0.99)
    return study


def _train(reporter: _Reporter, values: list[float]) -> SimpleNamespace:
    """Epochs as model.fit calls the callback: until the last or until the reporter stops it."""
    model = SimpleNamespace(stop_training=False, get_weights=list)  # the reporter keeps the best epoch's
    reporter.set_model(model)
    for epoch, value in enumerate(values):
        reporter.on_epoch_end(epoch, {"val_accuracy": value})
        if model.stop_training:
            break
    return model


def test_a_weak_trial_is_stopped_at_the_first_rung():
    study = _study_with_three_strong_trials()
    reporter = _Reporter(study.ask(), "val_accuracy", epochs=3)
    model = _train(reporter, [0.1, 0.1, 0.1])
    assert (reporter.pruned_at, model.stop_training) == (1, True)


@pytest.mark.parametrize("epochs", [3, 9])
def test_a_trial_that_reached_its_last_epoch_is_never_pruned(epochs):
    """Strong through rung 1, weak at rung 3 (its best, 0.6, is told): rung 3 would prune it after epoch 3,
    where there is nothing left to stop (epochs=3); with 9 epochs it is judged at rung 3 as usual."""
    study = _study_with_three_strong_trials()
    trial = study.ask()
    reporter = _Reporter(trial, "val_accuracy", epochs=epochs)
    model = _train(reporter, [0.6, 0.6, 0.6] + [0.99] * (epochs - 3))
    if epochs == 3:
        assert (reporter.pruned_at, model.stop_training) == (None, False)
        assert trial.should_prune()  # what the pruner says: the rung alone would have pruned it
    else:
        assert (reporter.pruned_at, model.stop_training) == (3, True)
