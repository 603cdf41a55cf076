"""A tune trial is its best epoch: ranked by it (with its neighbours), its weights kept, best.yaml stopping there.

KerasTuner scores a trial by its best epoch and keeps that epoch's weights; `tune` used to
score and keep the last one. On examples/mnist_tune.yaml most full-length models peaked before
their last epoch, by 1-5 points of validation accuracy (docs/tuning.md), so the last epoch
both misranked trials and handed the test set a worse model than the trial had held.

A trial's score is not that one epoch's value, though: it is averaged with its neighbours'
(`search.smoothing` epochs on each side, 1 by default). On examples/mnist_tune.yaml's 1,000
validation images an accuracy near 0.97 has a standard error of 0.5 points, and a study
compares ~200 such epochs: the highest single one was mostly luck. In issue 20's race the
picks peaked at one epoch and fell back (0.982 then 0.966), and their test accuracy stood
4th, 14th and 16th of their studies' models. The weights kept are still the best epoch's.

The best epoch's weights go to the run directory (`best_epoch.npz`, with the epoch and its
value) whenever the search metric improves, so a trial killed and resumed still knows them;
when training ends they are put back into the model before `train` saves model.keras.
`best.yaml` reproduces that model by training only the best epoch's number of epochs: the
same seed gives the same weights up to there (shuffling is by (seed, epoch), see train.py),
provided nothing depends on the run's length. What does is pinned (`stopped_after`).
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import keras
import numpy as np

from cnncompile.files import atomic_path
from cnncompile.language.model import ModelSpec
from cnncompile.language.training import CosineDecay
from cnncompile.run.phasing import phase_runs

BEST_EPOCH_FILE = "best_epoch.npz"


class BestEpoch:
    """The best value of a metric so far, its (1-based) epoch and that epoch's weights; every
    epoch's value, for the score around the best one."""

    def __init__(self, direction: str, run: Path | None = None, metric: str | None = None, smoothing: int = 0):
        self.maximize, self.smoothing = direction == "maximize", smoothing
        self.file = run / BEST_EPOCH_FILE if run is not None else None
        self.value: float | None = None
        self.epoch: int | None = None
        self.weights: list[np.ndarray] | None = None  # in memory once seen in this process
        self.values: dict[int, float] = {}  # epoch -> value
        if self.file is not None and self.file.exists():  # a resumed trial: its best so far
            with np.load(self.file) as saved:
                self.value, self.epoch = float(saved["value"]), int(saved["epoch"])
            history = run / "history.csv"
            if metric is not None and history.exists():  # its epochs before the stop; re-trained ones are replaced
                with open(history, newline="") as handle:
                    self.values = {int(row["epoch"]): float(row[metric]) for row in csv.DictReader(handle)
                                   if row.get(metric)}

    def better(self, value: float) -> bool:
        return self.value is None or (value > self.value if self.maximize else value < self.value)

    @property
    def score(self) -> float | None:
        """The best epoch's value averaged with those of up to `smoothing` epochs on each side
        (the ones trained so far): what the trial reports to the pruner and is ranked by."""
        if self.epoch is None:
            return None
        around = [self.values.get(e) for e in range(self.epoch - self.smoothing, self.epoch + self.smoothing + 1)]
        around = [v for v in around if v is not None] or [self.value]
        return sum(around) / len(around)

    def offer(self, epoch: int, value: float, model: keras.Model) -> None:
        """After an epoch: keep the model's weights if the value is the best so far."""
        self.values[epoch] = value
        if not self.better(value):
            return
        self.value, self.epoch, self.weights = value, epoch, model.get_weights()
        if self.file is not None:
            with atomic_path(self.file) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, value=value, epoch=epoch, **{f"w{i:04d}": w for i, w in enumerate(self.weights)})

    def restore(self, model: keras.Model) -> None:
        """Put the best epoch's weights back into the model (from this process or the file)."""
        weights = self.weights
        if weights is None and self.file is not None and self.file.exists():
            with np.load(self.file) as saved:
                weights = [saved[name] for name in sorted(saved.files) if name.startswith("w")]
        if weights is not None:
            model.set_weights(weights)


def stopped_after(tree: dict, spec: ModelSpec, epochs: int, steps_per_epoch: int) -> dict:
    """The spec's tree as a run of its first `epochs` epochs, which trains to the same weights
    as those epochs of the full run: a CosineDecay without decay_steps decays over its whole
    run (or phase), so its decay_steps are pinned to the full length; phases after the cut go,
    the one it falls in is shortened. Early stopping and ReduceLROnPlateau depend only on the
    epochs so far, the seeded shuffle only on (seed, epoch): they need nothing."""
    tree = copy.deepcopy(tree)
    training = tree["training"]
    if not spec.training.phases:
        schedule, training["epochs"] = spec.training.optimizer.learning_rate, epochs
        if isinstance(schedule, CosineDecay) and schedule.decay_steps is None and epochs < spec.training.epochs:
            training["optimizer"]["learning_rate"] = _pinned(schedule, steps_per_epoch * spec.training.epochs)
        return tree
    runs = [run for run in phase_runs(spec, spec.training.total_epochs) if run.first_epoch < epochs]
    last, phases = runs[-1], training["phases"][:len(runs)]
    phases[-1] = {**phases[-1], "epochs": epochs - last.first_epoch}
    schedule = last.training.optimizer.learning_rate
    if isinstance(schedule, CosineDecay) and schedule.decay_steps is None and epochs < last.last_epoch:
        pinned = _pinned(schedule, steps_per_epoch * last.epochs)
        if isinstance(phases[-1].get("optimizer"), dict):
            phases[-1]["optimizer"] = {**phases[-1]["optimizer"], "learning_rate": pinned}
        else:  # the phase's own learning_rate, or training.optimizer's, now spelled out
            phases[-1]["learning_rate"] = pinned
    training["phases"] = phases
    if "epochs" in training:
        training["epochs"] = epochs
    return tree


def _pinned(schedule: CosineDecay, decay_steps: int) -> dict:
    return schedule.model_copy(update={"decay_steps": decay_steps}).model_dump(exclude_none=True)
