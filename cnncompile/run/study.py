"""The Optuna study that `tune` processes share: storage, the spec it belongs to, and which
trials are alive.

A trial's owner records its host, pid and the pid's start time in one user attribute, `owner`
(one write, so no other process ever sees half of it); a RUNNING trial whose process is gone
is failed and re-queued with the same values (its run directory resumes): at once when the
process is seen to be gone on this host, else once its heartbeat is older than the grace
period (RDB storages). A RUNNING trial without an owner yet is never judged.
"""

from __future__ import annotations

import copy
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

HEARTBEAT_SECONDS = 2
# A RUNNING trial silent this long is failed and retried (RDB storages): a host paused this
# long (suspended VM, swapping) loses its trial to a retry, which its tune command then logs.
GRACE_SECONDS = 60
MAX_RETRIES = 3
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
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != OWNER}
        super().__call__(study, trial)


OWNER = "owner"  # the user attribute {"host", "pid", "pid_start"} of a trial's process
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
    timeout: float | None = None  # seconds: no new trial starts after this (the one training finishes)


REDUCTION_FACTOR = 3  # successive halving and hyperband keep the best third at each rung
# No pruner judges a trial before its third epoch. In issue 20's race on examples/mnist_tune.yaml
# (9-epoch models), the rank correlation (Spearman) of the validation accuracy after epoch 1 with
# that after epoch 9 was 0.36-0.42 over three seeds (after epoch 3: 0.36-0.78): epoch 1 mostly
# rewards a high learning rate's fast start, so rungs there threw good models away.
FIRST_JUDGED_EPOCH = 3


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """The search's pruner, with epochs as the resource (trials report once per epoch, from 1)."""
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=FIRST_JUDGED_EPOCH, reduction_factor=REDUCTION_FACTOR)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=FIRST_JUDGED_EPOCH,
                                              max_resource=max(epochs, FIRST_JUDGED_EPOCH),
                                              reduction_factor=REDUCTION_FACTOR)
    if name == "median":
        # Steps before n_warmup_steps are never pruned: steps 1 and 2 here.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=FIRST_JUDGED_EPOCH)
    return optuna.pruners.NopPruner()


def open_study(name: str, direction: str, options: TuneOptions,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study, or join it. Processes starting together race to create the tables and
    the study row; the loser sees a unique-key error and simply tries again."""
    problem = None
    for attempt in range(5):
        try:
            return optuna.create_study(study_name=name, storage=open_storage(options.storage, options.out),
                                       direction=direction, load_if_exists=True,
                                       pruner=pruner or make_pruner("median", 1))
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


def claim(study: optuna.Study, spec_sha256: str, options: TuneOptions) -> None:
    """One study, one spec: refuse to mix candidates of different specs or epoch counts."""
    mine = {"spec_sha256": spec_sha256, "epochs": options.epochs}
    theirs = {key: study.user_attrs[key] for key in mine if key in study.user_attrs}
    if not theirs:
        for key, value in mine.items():
            study.set_user_attr(key, value)
    elif theirs != mine:
        raise TuneError(f"the study '{study.study_name}' in this storage was started from a different version "
                        f"of the spec or with other --epochs ({theirs}); use another --out or --storage")


def trained_trials(trials) -> list:
    """Trials that count toward the total: trained to the end or stopped by the pruner."""
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "rejected" not in t.user_attrs]


def running_trials(trials) -> list:
    return [t for t in trials if t.state == TrialState.RUNNING]


def surplus(study: optuna.Study, number: int, total: int) -> bool:
    """Did other processes fill the study while this candidate was sampled? Trials with lower
    numbers go first; undecided ones count as trained, so the total is never exceeded (a
    shortfall is made up by the next loop)."""
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number]
    return len(trained_trials(earlier)) + len(running_trials(earlier)) >= total


def process_start(pid: int) -> str | None:
    """The process's start time (Linux), so a reused pid is not mistaken for a live trial."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def take(trial: optuna.Trial) -> None:
    """Record this process as the trial's owner, in one write: the three values were once three
    writes, and another process that read the trial between the pid and its start time compared
    the live process's start time with a missing one, failed the live trial and re-queued it;
    the owner's next write then raised UpdateFinishedTrialError (issue 22)."""
    trial.set_user_attr(OWNER, {"host": HOST, "pid": os.getpid(), "pid_start": process_start(os.getpid())})


def tell(study: optuna.Study, trial: optuna.Trial, log: Callable[[str], None], value: float | None = None, *,
         state: TrialState | None = None, attrs: dict | None = None) -> bool:
    """Record the trial's last attributes and tell the study; False (and a log line) if another
    process has legitimately finished the trial first (its heartbeat looked stale)."""
    try:
        for key, item in (attrs or {}).items():
            trial.set_user_attr(key, item)
        study.tell(trial, value, state=state)
        return True
    except optuna.exceptions.UpdateFinishedTrialError:
        log(finished_elsewhere(study, trial))
        return False


def finished_elsewhere(study: optuna.Study, trial: optuna.Trial) -> str:
    state = study._storage.get_trial(trial._trial_id).state.name
    return (f"trial {trial.number}: another process finished it first ({state}): its heartbeat looked older than "
            f"{GRACE_SECONDS} s, so it was judged lost and re-queued; the retry counts instead of this run")


def fail_lost_trials(study: optuna.Study) -> None:
    """Fail and re-queue RUNNING trials whose process is gone: at once for processes of this host,
    after the grace period (heartbeats) for others on RDB storages."""
    storage = study._storage  # noqa: SLF001 - Optuna exposes no public handle for this
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER)
        if owner is None or owner["host"] != HOST or owner["pid"] == os.getpid():
            continue  # just asked for (not yet owned), another host's, or this process's own
        if process_start(owner["pid"]) == owner["pid_start"] and _alive(owner["pid"]):
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


class Heartbeat:
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


