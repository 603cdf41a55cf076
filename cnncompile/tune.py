"""`cnncompile tune`: an Optuna study over a spec's `search:` space, one run directory per trial.

Tune directory:
  study.db         the Optuna study (SQLite) unless --storage points elsewhere
  trials/NNNN/     an ordinary `train` run directory per trained candidate, with its spec.yaml
  trials.csv       one row per trial: number, state, value, each parameter, params, MACs, seconds, reason
  history.png      value of every trial and the best so far
  importances.png  parameter importances, from 5 complete trials on
  best.yaml        the best candidate as a plain spec: `cnncompile train best.yaml` reproduces it
  best.json        its validation score, parameters, and its test-set score (the only one scored there)

Each process asks the study for candidates until it holds `trials` trained ones, so several
processes (or machines, through one database) share a study. A candidate is checked
statically first (search.py): one that is invalid or over budget is told PRUNED with the
reason and costs milliseconds. A trial whose process died (SIGKILL, power loss) is failed and
re-queued with the same values, and its run directory resumes from its last epoch:
immediately when its process is seen to be gone on this host, else once its heartbeat is
older than the grace period (RDB storages).
"""

from __future__ import annotations

import copy
import csv
import io
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)

import keras
import optuna
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from cnncompile.data.datasets import Dataset, load_dataset
from cnncompile.frontend import compile_file
from cnncompile.rundir import read_json, write_bytes, write_json
from cnncompile.search import Candidate, Space
from cnncompile.train import TrainOptions, evaluate_test, train

HEARTBEAT_SECONDS = 2
# A RUNNING trial silent this long is failed and retried (RDB storages). 20 s once failed a
# live trial in CI (its owner's tell then raised UpdateFinishedTrialError): be generous.
GRACE_SECONDS = 60
MAX_RETRIES = 3
MIN_TRIALS_FOR_IMPORTANCES = 5
REJECTIONS_IN_A_ROW = 200  # then the space is (nearly) all infeasible: stop and say so
HOST = socket.gethostname()

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the CLI reports each trial itself
# Heartbeats, retries and stale-trial checks are marked experimental; we use them deliberately,
# and drive heartbeats ourselves because trials run through ask/tell, not Study.optimize.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


class _Retry(RetryHeartbeatStaleTrialCallback):
    """Re-queues a lost trial with the same values and its run directory (a user attribute),
    but not the dead process's identity: the copy is nobody's until a process takes it."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("host", "pid", "pid_start")}
        super().__call__(study, trial)


RETRY = _Retry(max_retry=MAX_RETRIES, inherit_intermediate_values=True)


class TuneError(Exception):
    """A study that cannot proceed (other spec in the storage, storage unreachable, ...)."""


@dataclass
class TuneOptions:
    out: Path
    trials: int
    epochs: int | None = None  # overrides training.epochs in every candidate (and so in best.yaml)
    storage: str | None = None  # default: sqlite:///<out>/study.db
    data_dir: Path | None = None


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


def open_study(space: Space, options: TuneOptions) -> optuna.Study:
    """Create the study, or join it. Processes starting together race to create the tables and
    the study row; the loser sees a unique-key error and simply tries again."""
    problem = None
    for attempt in range(5):
        try:
            return optuna.create_study(study_name=space.base_spec.name, storage=open_storage(options.storage, options.out),
                                       direction=space.search.goal, load_if_exists=True,
                                       pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
        except TuneError as exc:
            problem = exc
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy and drivers fail in many ways
            problem = TuneError(f"cannot open the study in {options.storage or options.out / 'study.db'}: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        time.sleep(0.5 + attempt)
    raise problem


def open_storage(url: str | None, out: Path) -> optuna.storages.BaseStorage:
    """SQLite in the tune directory by default; any SQLAlchemy URL (postgresql://...); or
    journal:PATH for Optuna's append-only journal file on a shared filesystem."""
    try:
        if url and url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if url is None:
            out.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{(out / 'study.db').resolve()}"
        # SQLite: wait for the other process's write lock instead of failing at once.
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                                          grace_period=GRACE_SECONDS, heartbeat_stale_trial_callback=RETRY)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and drivers fail in many ways
        raise TuneError(f"cannot open the study storage {url}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def tune(space: Space, spec_path: Path, spec_sha256: str, options: TuneOptions,
         log: Callable[[str], None] = lambda message: None) -> StudyReport:
    """Work on the study until it holds options.trials trained trials; then score the best."""
    study = open_study(space, options)
    _claim(study, spec_sha256, options)
    fixed = {("training", "epochs"): options.epochs} if options.epochs else {}
    runner = _Runner(space, spec_path, options, fixed, log)
    in_a_row = 0
    while True:
        _fail_lost_trials(study)
        trials = study.get_trials(deepcopy=False)
        trained, running = _trained(trials), _running(trials)
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
        for key, value in (("host", HOST), ("pid", os.getpid()), ("pid_start", _process_start(os.getpid()))):
            trial.set_user_attr(key, value)
        candidate = space.candidate(_suggest(trial, space), fixed)
        trial.set_user_attr("check_seconds", candidate.seconds)
        if candidate.rejection:
            in_a_row += 1
            trial.set_user_attr("rejected", f"{candidate.rejection.kind}: {candidate.rejection.reason}")
            study.tell(trial, state=TrialState.PRUNED)
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
        if _surplus(study, trial.number, options.trials):
            trial.set_user_attr("surplus", f"the study already had {options.trials} trials in progress or done")
            study.tell(trial, state=TrialState.FAIL)
            continue
        runner.run(study, trial, candidate)
        write_trials_csv(study, options.out / "trials.csv")
    report = finish(study, space, runner, options)
    return report


def _claim(study: optuna.Study, spec_sha256: str, options: TuneOptions) -> None:
    """One study, one spec: refuse to mix candidates of different specs or epoch counts."""
    mine = {"spec_sha256": spec_sha256, "epochs": options.epochs}
    theirs = {key: study.user_attrs[key] for key in mine if key in study.user_attrs}
    if not theirs:
        for key, value in mine.items():
            study.set_user_attr(key, value)
    elif theirs != mine:
        raise TuneError(f"the study '{study.study_name}' in this storage was started from a different version "
                        f"of the spec or with other --epochs ({theirs}); use another --out or --storage")


def _suggest(trial: optuna.Trial, space: Space) -> dict:
    from cnncompile.spec.search import Choice, IntRange

    values = {}
    for dim in space.dimensions:
        r = dim.range
        if isinstance(r, Choice):
            # Optuna's choices are scalars; lists (kernel_size: [3, 5]) travel as their YAML text.
            labels = [_label(v) for v in r.choice]
            picked = trial.suggest_categorical(dim.path, labels)
            values[dim.path] = r.choice[labels.index(picked)]
        elif isinstance(r, IntRange):
            values[dim.path] = trial.suggest_int(dim.path, r.bounds[0], r.bounds[1], step=r.step)
        else:
            values[dim.path] = trial.suggest_float(dim.path, r.bounds[0], r.bounds[1], log=r.log)
    return values


def _label(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip()


def _trained(trials) -> list:
    """Trials that count toward the total: trained to the end or stopped by the pruner."""
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "rejected" not in t.user_attrs]


def _running(trials) -> list:
    return [t for t in trials if t.state == TrialState.RUNNING]


def _surplus(study: optuna.Study, number: int, total: int) -> bool:
    """Did other processes fill the study while this candidate was sampled? Trials with lower
    numbers go first; undecided ones count as trained, so the total is never exceeded (a
    shortfall is made up by the next loop)."""
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number]
    return len(_trained(earlier)) + len(_running(earlier)) >= total


def _process_start(pid: int) -> str | None:
    """The process's start time (Linux), so a reused pid is not mistaken for a live trial."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _fail_lost_trials(study: optuna.Study) -> None:
    """Fail and re-queue RUNNING trials whose process is gone: at once for processes of this host,
    after the grace period (heartbeats) for others on RDB storages."""
    storage = study._storage  # noqa: SLF001 - Optuna exposes no public handle for this
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") != HOST or "pid" not in attrs or attrs["pid"] == os.getpid():
            continue
        if _process_start(attrs["pid"]) == attrs.get("pid_start") and _alive(attrs["pid"]):
            continue
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):  # noqa: SLF001
                RETRY(study, storage.get_trial(trial._trial_id))  # noqa: SLF001
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another process got there first
    optuna.storages.fail_stale_trials(study)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Heartbeat:
    """Record the trial's heartbeat while it trains, so other hosts can tell it is alive."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        self.enabled = isinstance(storage, optuna.storages.RDBStorage)
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while True:
            self.storage.record_heartbeat(self.trial_id)
            if self.stop.wait(HEARTBEAT_SECONDS):
                return

    def __enter__(self):
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.enabled:
            self.thread.join()


class _Reporter(keras.callbacks.Callback):
    """Reports the metric after every epoch; stops training when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str):
        super().__init__()
        self.trial, self.metric, self.pruned_at = trial, metric, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.metric)
        if value is None:
            return
        self.trial.report(float(value), epoch + 1)
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            self.model.stop_training = True


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
        reporter = _Reporter(trial, self.space.search.metric)
        with _Heartbeat(study._storage, trial._trial_id):  # noqa: SLF001
            train(compiled, self.dataset(compiled),
                  TrainOptions(run, training.epochs, training.batch_size, training.seed, evaluate_test=False),
                  log=self.log, progress=reporter)
        seconds = time.perf_counter() - started
        trial.set_user_attr("seconds", round(seconds, 3))
        history = list(csv.DictReader(io.StringIO((run / "history.csv").read_text())))
        value = float(history[-1][self.space.search.metric])
        try:
            if reporter.pruned_at is not None:
                trial.set_user_attr("pruned", f"stopped by the median pruner after epoch {reporter.pruned_at}: "
                                              f"{self.space.search.metric} {value:.4f}")
                study.tell(trial, state=TrialState.PRUNED)
                self.log(f"trial {trial.number}: {trial.user_attrs['pruned']} ({seconds:.1f} s)")
                return
            study.tell(trial, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another process judged this trial lost (its heartbeat looked stale) and re-queued
            # it; the retry decides the study's value. This run directory stays as it is.
            self.log(f"trial {trial.number}: finished, but another process had already failed and re-queued it; "
                     "its retry counts instead")
            return
        self.log(f"trial {trial.number}: {self.space.search.metric} {value:.4f} after {len(history)} epochs ({seconds:.1f} s)")


def spec_text(tree: dict, origin: Path, dest_dir: Path) -> str:
    """A candidate's tree as a spec file in dest_dir; a dataset path stays pointing at the same data."""
    tree = dict(tree)
    dataset = (tree.get("training") or {}).get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("path"), str):
        absolute = (origin.parent / dataset["path"]).resolve()
        tree["training"] = {**tree["training"], "dataset": {**dataset, "path": os.path.relpath(absolute, dest_dir.resolve())}}
    return yaml.safe_dump(tree, sort_keys=False, default_flow_style=None, width=100)


def finish(study: optuna.Study, space: Space, runner: _Runner, options: TuneOptions) -> StudyReport:
    """trials.csv, plots, best.yaml and the best trial's test score; the study's totals."""
    out = options.out
    write_trials_csv(study, out / "trials.csv")
    plot_study(study, out, space.search.metric)
    trials = study.get_trials(deepcopy=False)
    rejected = [t for t in trials if "rejected" in t.user_attrs]
    trained = _trained(trials)
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
        header = (f"# best of study '{study.study_name}': trial {best.number}, {space.search.metric} {best.value:.4f}\n"
                  f"# `cnncompile train` on this file trains it again, to the same weights (same seed)\n")
        write_bytes(out / "best.yaml", (header + best.user_attrs["spec"]).encode())
        known = {"trial": best.number, "run": str(run), space.search.metric: best.value, "params": best.params,
                 "total_params": best.user_attrs.get("params"), "macs": best.user_attrs.get("macs"),
                 "host": best.user_attrs.get("host"), "test_accuracy": None, "test_loss": None}
        if (run / "model.keras").exists():  # else it ran on another host, whose tune directory has it
            compiled = compile_file(run / "spec.yaml")
            metrics = evaluate_test(compiled, runner.dataset(compiled), run)
            known.update(test_accuracy=metrics["test_accuracy"], test_loss=metrics["test_loss"])
        write_json(out / "best.json", known)
    report.best = known
    return report


def write_trials_csv(study: optuna.Study, target: Path) -> None:
    trials = study.get_trials(deepcopy=False)
    names = list(dict.fromkeys(name for t in trials for name in t.params))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", "value", *names, "params", "macs", "seconds", "check_ms", "run", "reason"])
    for t in trials:
        a = t.user_attrs
        reason = a.get("rejected") or a.get("pruned") or a.get("surplus") or ""
        if t.state == TrialState.FAIL and not reason:
            reason = "failed (its process stopped); retried" if "failed_trial" not in t.system_attrs else "failed"
        check_ms = round(a["check_seconds"] * 1000, 3) if "check_seconds" in a else ""
        writer.writerow([t.number, t.state.name, "" if t.value is None else t.value,
                         *[t.params.get(n, "") for n in names], a.get("params", ""), a.get("macs", ""),
                         a.get("seconds", ""), check_ms, a.get("run", ""), reason])
    write_bytes(target, buffer.getvalue().encode())


def plot_study(study: optuna.Study, out: Path, metric: str) -> None:
    """history.png (every trained trial's value and the best so far) and importances.png."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cnncompile.rundir import atomic_path

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([t.number for t in complete], [t.value for t in complete], "o", label="trial")
    best, running = [], None
    for t in complete:
        running = t.value if running is None else (max if maximize else min)(running, t.value)
        best.append(running)
    ax.step([t.number for t in complete], best, where="post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"{study.study_name}: optimisation history")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "history.png") as tmp:
        fig.savefig(tmp, dpi=100)
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCES:
        return  # with fewer, Optuna's estimate says little (it warns that all come out equal)
    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return  # no parameter varied among the complete trials
    if not importances:
        return
    fig = Figure(figsize=(7, 1 + 0.4 * len(importances)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel(f"importance for {metric} (Optuna's default evaluator)")
    ax.set_title(f"{study.study_name}: parameter importances")
    fig.tight_layout()
    with atomic_path(out / "importances.png") as tmp:
        fig.savefig(tmp, dpi=100)
