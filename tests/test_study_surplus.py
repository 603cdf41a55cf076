"""study.surplus: a candidate sampled while other processes filled the study is not trained.

The two-process and stress tests in test_tune.py rarely open the window where it matters (two
processes sampling at once while the study is one trial short), so they pass with surplus()
always False; this pins its rule on a study built by hand."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from cnncompile.run.study import surplus


def study_of(*states: str) -> optuna.Study:
    """Trials 0.. in these states ("rejected" is PRUNED before training, as tune marks it)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for state in states:
        trial = study.ask()
        if state == "rejected":
            trial.set_user_attr("rejected", "over budget")
            study.tell(trial, state=TrialState.PRUNED)
        elif state == "complete":
            study.tell(trial, 0.9)
        elif state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif state == "failed":
            study.tell(trial, state=TrialState.FAIL)
        # "running": asked, never told
    return study


@pytest.mark.parametrize(("states", "total", "expected"), [
    (("complete", "complete", "running"), 3, True),    # a running trial counts: it will finish
    (("complete", "pruned", "complete"), 3, True),     # stopped early still counts as trained
    (("complete", "complete", "running"), 4, False),
    (("complete", "rejected", "failed", "complete"), 3, False),  # rejected and failed do not count
    ((), 1, False),
])
def test_earlier_trials_in_progress_or_done_fill_the_study(states, total, expected):
    study = study_of(*states, "running")  # the candidate itself, sampled last
    assert surplus(study, len(states), total) is expected


def test_later_trials_do_not_make_an_earlier_candidate_surplus():
    """Lower numbers go first: trial 0 trains even if trials 1-3 were taken meanwhile."""
    study = study_of("running", "running", "running", "running")
    assert surplus(study, 0, 3) is False
    assert surplus(study, 3, 3) is True
