"""`cnncompile tune`: an Optuna study over a spec's `search:` space, one run directory per trial.

Tune directory:
  study.db         the Optuna study (SQLite) unless --storage points elsewhere
  trials/NNNN/     an ordinary `train` run directory per trained candidate, with its spec.yaml
                   and best_epoch.npz (its best epoch's weights, which its model.keras holds)
  trials.csv       one row per trial: number, state, value (its score), best epoch and its value, each
                   parameter, params, MACs, seconds, reason
  history.png      value of every trial and the best so far
  importances.png  parameter importances, from 5 complete trials on
  best.yaml        the best candidate as a plain spec, its epochs ending at its best epoch:
                   `cnncompile train best.yaml` reproduces it
  best.json        its best epoch, that epoch's validation value, its score, parameters, and its
                   test-set score (the only one scored there)

Each process asks the study for candidates until it holds `trials` trained ones, so several
processes (or machines, through one database) share a study. A candidate is checked
statically first (analysis/space.py): one that is invalid or over budget is told PRUNED with the
reason and costs milliseconds. A trained one is scored by its best epoch, averaged with its
neighbours (search.smoothing), and keeps that epoch's weights (best_epoch.py); it reports that
score so far after every epoch, and the search's
pruner (median, successive halving or hyperband: epochs are the resource) may stop it there,
from its third epoch on. --timeout ends the study on a wall-clock budget instead of a trial count. A trial whose process died (SIGKILL, power loss) is failed and
re-queued with the same values, and its run directory resumes from its last epoch:
immediately when its process is seen to be gone on this host, else once its heartbeat is
older than the grace period (RDB storages).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)

import keras
import optuna
from optuna.trial import TrialState

from cnncompile.analysis.check import compile_file
from cnncompile.analysis.space import Candidate, Space
from cnncompile.data.datasets import Dataset, load_dataset
from cnncompile.files import read_json, write_bytes, write_json
from cnncompile.language.search import label as _label
from cnncompile.run.best_epoch import BestEpoch, stopped_after
from cnncompile.run.study import (HEARTBEAT_SECONDS, OWNER, Heartbeat, TuneError, TuneOptions, claim,
                                  fail_lost_trials, finished_elsewhere, make_pruner, open_study, running_trials,
                                  surplus, take, tell, trained_trials)
from cnncompile.run.study_files import plot_study, spec_text, write_trials_csv
from cnncompile.run.train import TrainOptions, FitData, evaluate_test, train

REJECTIONS_IN_A_ROW = 200  # then the space is (nearly) all infeasible: stop and say so

__all__ = ["StudyReport", "TuneError", "TuneOptions", "tune"]


@dataclass
class StudyReport:
    """The whole study (all processes), for the closing lines."""

    trained: int
    pruned: int  # by the pruner, after some epochs
    rejected: int  # statically, before any TensorFlow work
    check_seconds: float  # mean static check per candidate
    trial_seconds: float  # mean wall time of a trained trial
    reasons: dict[str, int] = field(default_factory=dict)
    best: dict | None = None


def tune(space: Space, spec_path: Path, spec_sha256: str, options: TuneOptions,
         log: Callable[[str], None] = lambda message: None) -> StudyReport:
    """Work on the study until it holds options.trials trained trials; then score the best."""
    epochs = options.epochs or space.base_spec.training.total_epochs
    study = open_study(space.base_spec.name, space.search.goal, options, make_pruner(space.search.pruner, epochs))
    claim(study, spec_sha256, options)
    fixed = {("training", "epochs"): options.epochs} if options.epochs else {}
    runner = _Runner(space, spec_path, options, fixed, log)
    in_a_row, started = 0, time.monotonic()
    while True:
        if options.timeout is not None and time.monotonic() - started > options.timeout:
            log(f"time budget of {options.timeout:.0f} s reached: no new trials")
            break
        fail_lost_trials(study)
        trials = study.get_trials(deepcopy=False)
        trained, running = trained_trials(trials), running_trials(trials)
        if len(trained) >= options.trials:
            break
        if len(trained) + len(running) >= options.trials:
            time.sleep(HEARTBEAT_SECONDS)  # the rest are in progress elsewhere: wait for them (or their loss)
            continue
        trial = study.ask()
        # A fresh sampler per candidate, seeded by the trial's number (unique in the study): one
        # process replays the same study, and processes sharing one never sample in lockstep.
        # TPE samples each parameter when it is suggested, after ask(), so this sampler is used.
        # TPE counts statically rejected trials (told PRUNED) toward its random start-up phase;
        # add them, so that the start-up is made of trained candidates.
        rejected = sum("rejected" in t.user_attrs for t in trials)
        study.sampler = optuna.samplers.TPESampler(seed=(space.search.seed * 1_000_003 + trial.number) % 2**32,
                                                   n_startup_trials=rejected + min(10, max(3, options.trials // 2)))
        take(trial)
        candidate = space.candidate(_suggest(trial, space), fixed)
        trial.set_user_attr("check_seconds", candidate.seconds)
        if candidate.rejection:
            in_a_row += 1
            if tell(study, trial, log, state=TrialState.PRUNED,
                    attrs={"rejected": f"{candidate.rejection.kind}: {candidate.rejection.reason}"}):
                log(f"trial {trial.number}: rejected before training ({candidate.seconds * 1000:.1f} ms): "
                    f"{candidate.rejection.kind}: {candidate.rejection.reason}")
            if in_a_row >= REJECTIONS_IN_A_ROW:
                raise TuneError(f"{in_a_row} candidates in a row were rejected before training; the space is "
                                f"(nearly) all infeasible. Last: {candidate.rejection.reason}")
            continue
        in_a_row = 0
        trial.set_user_attr("params", candidate.info.total_params)
        trial.set_user_attr("macs", candidate.info.total_macs)
        trial.set_user_attr("feasible", True)
        if surplus(study, trial.number, options.trials):
            tell(study, trial, log, state=TrialState.FAIL,
                 attrs={"surplus": f"the study already had {options.trials} trials in progress or done"})
            continue
        runner.run(study, trial, candidate)
        write_trials_csv(study, options.out / "trials.csv")
    report = finish(study, space, runner, options)
    return report


def _suggest(trial: optuna.Trial, space: Space) -> dict:
    return {dim.path: dim.range.suggest(trial, dim.path) for dim in space.dimensions}


class _Reporter(keras.callbacks.Callback):
    """Reports the best value so far after every epoch (what the trial will be scored by) and
    keeps that epoch's weights (best_epoch.py); stops training when the pruner says so, except
    after the trial's last epoch, when there is nothing left to stop. When training is over the
    best epoch's weights go back into the model, so the run's model.keras is that epoch's."""

    def __init__(self, trial: optuna.Trial, metric: str, epochs: int, direction: str = "maximize",
                 run: Path | None = None, smoothing: int = 0):
        super().__init__()
        self.trial, self.metric, self.epochs, self.pruned_at, self.lost = trial, metric, epochs, None, False
        self.best = BestEpoch(direction, run, metric, smoothing)
        self.last_epoch: int | None = None  # seen by this process

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.metric)
        if value is None:
            return
        self.last_epoch = epoch + 1
        self.best.offer(epoch + 1, float(value), self.model)
        try:
            self.trial.report(self.best.score, epoch + 1)
        except optuna.exceptions.UpdateFinishedTrialError:  # failed elsewhere as lost: its retry trains on
            self.lost, self.model.stop_training = True, True
            return
        # Optuna's successive-halving rungs (1, 3, 9, ... epochs) do not know the last epoch:
        # with 9 epochs, rung 9 judged trials that had finished, told them PRUNED and so kept
        # fully trained models out of the pick (found in issue 20's race).
        if epoch + 1 < self.epochs and self.trial.should_prune():
            self.pruned_at = epoch + 1
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        # model.fit ends at every phase's end too: restore only once training is over (its
        # last epoch, a stop, or a resumed run that had finished its epochs before the kill).
        if self.last_epoch is None or self.last_epoch >= self.epochs or self.model.stop_training:
            self.best.restore(self.model)


class _Runner:
    """Trains candidates as ordinary run directories; keeps datasets loaded between trials."""

    def __init__(self, space: Space, spec_path: Path, options: TuneOptions, fixed: dict, log):
        self.space, self.spec_path, self.options, self.fixed, self.log = space, spec_path, options, fixed, log
        self.datasets: dict[str, Dataset] = {}

    def dataset(self, compiled) -> Dataset:
        training = compiled.spec.training
        key = repr((training.dataset, training.seed, compiled.spec.input.shape))
        if key not in self.datasets:
            self.datasets[key] = load_dataset(training.dataset, data_dir=self.options.data_dir,
                                              spec_dir=compiled.path.parent, image_shape=tuple(compiled.spec.input.shape),
                                              seed=training.seed)
        return self.datasets[key]

    def run(self, study: optuna.Study, trial: optuna.Trial, candidate: Candidate) -> None:
        # A retried trial keeps its first run directory (the attribute is copied to the retry),
        # so training resumes from that run's last epoch.
        run_name = trial.user_attrs.get("run") or f"{trial.number:04d}"
        trial.set_user_attr("run", run_name)
        run = self.options.out / "trials" / run_name
        spec_file = run / "spec.yaml"
        if not spec_file.exists():
            header = f"# candidate {run_name} of `cnncompile tune {self.spec_path}`\n"
            write_bytes(spec_file, (header + spec_text(candidate.tree, self.spec_path, run)).encode())
        # In the study too: any host sharing it can write best.yaml, wherever the trial ran.
        trial.set_user_attr("spec", spec_text(candidate.tree, self.spec_path, self.options.out))
        compiled = compile_file(spec_file)
        training = compiled.spec.training
        shown = ", ".join(f"{k}={_label(v)}" for k, v in candidate.values.items())
        self.log(f"trial {trial.number}: training {shown} ({candidate.info.total_params:,} params, "
                 f"{candidate.info.total_macs:,} MACs) in {run}")
        started = time.perf_counter()
        search = self.space.search
        reporter = _Reporter(trial, search.metric, training.total_epochs, search.goal, run, search.smoothing)
        dataset = self.dataset(compiled)
        with Heartbeat(study._storage, trial._trial_id):  # noqa: SLF001
            train(compiled, dataset,
                  TrainOptions(run, training.total_epochs, training.batch_size, training.seed, evaluate_test=False),
                  log=self.log, progress=reporter)
        seconds = time.perf_counter() - started
        if reporter.lost:
            self.log(finished_elsewhere(study, trial))
            return
        trained = len(list(csv.DictReader(io.StringIO((run / "history.csv").read_text()))))
        best = reporter.best
        attrs = {"seconds": round(seconds, 3), "best_epoch": best.epoch, "best_value": best.value}
        if best.epoch < training.total_epochs:  # best.yaml, if this is the pick, stops at the best epoch
            steps = FitData.split(training, dataset, training.batch_size).steps_per_epoch
            attrs["spec"] = spec_text(stopped_after(candidate.tree, compiled.spec, best.epoch, steps),
                                      self.spec_path, self.options.out)
        at = f"{search.metric} {best.value:.4f} (best: epoch {best.epoch} of {trained}; score {best.score:.4f})"
        if reporter.pruned_at is not None:
            attrs["pruned"] = f"stopped by the {search.pruner} pruner after epoch {reporter.pruned_at}: {at}"
            if tell(study, trial, self.log, state=TrialState.PRUNED, attrs=attrs):
                self.log(f"trial {trial.number}: {attrs['pruned']} ({seconds:.1f} s)")
        elif tell(study, trial, self.log, best.score, attrs=attrs):
            self.log(f"trial {trial.number}: {at} ({seconds:.1f} s)")


def finish(study: optuna.Study, space: Space, runner: _Runner, options: TuneOptions) -> StudyReport:
    """trials.csv, plots, best.yaml and the best trial's test score; the study's totals."""
    out = options.out
    write_trials_csv(study, out / "trials.csv")
    plot_study(study, out, space.search.score_label)
    trials = study.get_trials(deepcopy=False)
    rejected = [t for t in trials if "rejected" in t.user_attrs]
    trained = trained_trials(trials)
    checks = [t.user_attrs["check_seconds"] for t in trials if "check_seconds" in t.user_attrs]
    seconds = [t.user_attrs["seconds"] for t in trained if "seconds" in t.user_attrs]
    reasons: dict[str, int] = {}
    for t in rejected:
        kind = t.user_attrs["rejected"].split(":", 1)[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    report = StudyReport(len(trained), sum(t.state == TrialState.PRUNED for t in trained), len(rejected),
                         sum(checks) / max(len(checks), 1), sum(seconds) / max(len(seconds), 1), reasons)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return report
    best = study.best_trial
    run = out / "trials" / best.user_attrs["run"]
    known = read_json(out / "best.json") if (out / "best.json").exists() else {}
    if known.get("trial") != best.number or (known.get("test_accuracy") is None and (run / "model.keras").exists()):
        epoch, value = best.user_attrs.get("best_epoch"), best.user_attrs.get("best_value", best.value)
        score = f" (score {best.value:.4f})" if best.value != value else ""
        header = (f"# best of study '{study.study_name}': trial {best.number}, {space.search.metric} {value:.4f}"
                  f"{f' after epoch {epoch}' if epoch else ''}{score}\n"
                  "# `cnncompile train` on this file trains it again, to the same weights (same seed): its epochs\n"
                  "# stop at the trial's best epoch; a CosineDecay's decay_steps are the trial's whole run's\n")
        write_bytes(out / "best.yaml", (header + best.user_attrs["spec"]).encode())
        known = {"trial": best.number, "run": str(run), space.search.metric: value, "score": best.value, "epoch": epoch,
                 "params": best.params, "total_params": best.user_attrs.get("params"), "macs": best.user_attrs.get("macs"),
                 "host": best.user_attrs.get(OWNER, {}).get("host"), "test_accuracy": None, "test_loss": None}
        if (run / "model.keras").exists():  # else it ran on another host, whose tune directory has it
            compiled = compile_file(run / "spec.yaml")
            metrics = evaluate_test(compiled, runner.dataset(compiled), run)
            known.update(test_accuracy=metrics["test_accuracy"], test_loss=metrics["test_loss"])
        write_json(out / "best.json", known)
    report.best = known
    return report


