"""The per-epoch training checkpoint: everything a resumed run needs to continue exactly.

A run killed at any moment resumes from its last completed epoch and must end where an
uninterrupted run ends: same weights, same stopping epoch. So the checkpoint holds

- every variable of the training model and its optimizer (weights, BatchNormalization
  statistics, random layers' seed states, the step, the slots, the learning rate that
  ReduceLROnPlateau may have lowered), as plain arrays in `epoch-K.npz` (no pickles);
- the state of every callback that decides the outcome (EarlyStopping's patience count,
  best value and best weights; ReduceLROnPlateau's patience, best value and cooldown), and
  whether training was told to stop, in `state.json` beside the run's history.

The data order is the third piece; backend/fitting.py's `batches` derives each epoch's
shuffle from the seed and the epoch number alone, so it needs no saving.
"""

from __future__ import annotations

import time
from pathlib import Path

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras
import numpy as np

from cnncompile.run.rundir import RunError
from cnncompile.files import atomic_path, write_history, write_json

# Callback attributes that change what later epochs do. Keras resets them in on_train_begin,
# so a resumed run restores them after that (the Checkpoint callback runs after these).
_CALLBACK_STATE = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
}


def training_variables(model: keras.Model) -> list:
    """Everything training state is made of, in a stable order: the model's variables (weights,
    BatchNormalization statistics, random-layer seeds) then the optimizer's (step, rate, slots)."""
    return list(model.variables) + list(model.optimizer.variables)


def read(path: Path) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """(the training variables' values, callbacks' arrays by name) from a checkpoint file."""
    with np.load(path, allow_pickle=False) as archive:
        count = sum(name.startswith("arr_") for name in archive.files)
        return ([archive[f"arr_{i}"] for i in range(count)],
                {name: archive[name] for name in archive.files if not name.startswith("arr_")})


def check_matches(variables: list, values: list[np.ndarray]) -> None:
    """The checkpoint was written by the model this spec builds (same variables, same shapes)."""
    if [tuple(v.shape) for v in variables] != [tuple(value.shape) for value in values]:
        raise RunError("the checkpoint does not match the model this spec builds; use --force to start over")


def assign(variables: list, values: list[np.ndarray]) -> None:
    check_matches(variables, values)
    for variable, value in zip(variables, values):
        variable.assign(value)


def _stateful(callbacks: list[keras.callbacks.Callback]) -> list[tuple[int, keras.callbacks.Callback, tuple]]:
    return [(i, cb, attributes) for i, cb in enumerate(callbacks)
            for kind, attributes in _CALLBACK_STATE.items() if isinstance(cb, kind)]


class Checkpoint(keras.callbacks.Callback):
    """After every epoch: save the training state, then the state.json naming it.

    state.json is written after the checkpoint it points to, so a kill between the two
    leaves the previous, consistent pair. history.csv is rewritten from the state.
    Put it after the callbacks whose state it saves: it reads them after their epoch end
    and restores them after their train begin.
    """

    def __init__(self, out: Path, spec_sha256: str, callbacks: list[keras.callbacks.Callback],
                 state: dict | None = None, arrays: dict[str, np.ndarray] | None = None):
        super().__init__()
        self.dir = out / "checkpoint"
        self.out, self.spec_sha256, self.callbacks = out, spec_sha256, callbacks
        self.history = list(state["history"]) if state else []
        self.train_seconds = state["train_seconds"] if state else 0.0
        self.stopped = bool(state and state.get("stopped"))
        self._resume = (state.get("callbacks", {}), arrays or {}) if state else None
        self.session_seconds, self.session_epochs = 0.0, 0

    def on_train_begin(self, logs=None):
        if self._resume is None:
            return
        saved, arrays = self._resume
        for i, cb, attributes in _stateful(self.callbacks):
            for name in attributes:
                setattr(cb, name, saved[str(i)][name])
            best_weights = sorted((k for k in arrays if k.startswith(f"callback{i}_best_weights_")),
                                  key=lambda k: int(k.rsplit("_", 1)[1]))
            if hasattr(cb, "best_weights"):
                cb.best_weights = [arrays[k] for k in best_weights] or None
        self.model.stop_training = self.stopped

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        self.train_seconds += seconds
        self.session_seconds += seconds
        self.session_epochs += 1
        self.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
        saved, arrays = {}, {}
        for i, cb, attributes in _stateful(self.callbacks):
            saved[str(i)] = {name: _plain(getattr(cb, name)) for name in attributes}
            for j, weights in enumerate(getattr(cb, "best_weights", None) or []):
                arrays[f"callback{i}_best_weights_{j}"] = np.asarray(weights)
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1}.npz"
        with atomic_path(self.dir / name) as tmp:
            # Plain arrays: cheaper than a .keras archive each epoch, and loading them never
            # deserializes code.
            np.savez(tmp, *[np.asarray(v.numpy()) for v in training_variables(self.model)], **arrays)
        write_json(self.dir / "state.json", {
            "epoch": epoch + 1, "checkpoint": name, "spec_sha256": self.spec_sha256, "history": self.history,
            "train_seconds": self.train_seconds, "stopped": bool(self.model.stop_training), "callbacks": saved})
        for old in self.dir.glob("epoch-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)
        write_history(self.out / "history.csv", self.history)


def _plain(value):
    """A callback attribute as JSON: numpy scalars become Python numbers; None stays None."""
    return value.item() if isinstance(value, (np.generic, np.ndarray)) else value
