"""`training.phases` during a run: which layers train and with which optimizer, phase by phase.

A run without phases is one phase of `epochs`. Entering a phase sets Keras's `trainable` flags
(analysis/unfreezing.py decides them) and compiles the training model with the phase's own
optimizer, its slots built before a checkpoint is read. A run resumed from a checkpoint enters
the phase that wrote it, takes its values, and goes on from there, so a kill in phase 2 resumes
in phase 2 with phase 2's optimizer state.
"""

from __future__ import annotations

from dataclasses import dataclass

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras

from cnncompile.analysis.unfreezing import trainable_in_phase
from cnncompile.backend import fitting as kt
from cnncompile.backend.precision import loss_scaled
from cnncompile.language.model import ModelSpec
from cnncompile.language.training import Training


@dataclass(frozen=True)
class PhaseRun:
    index: int
    first_epoch: int  # 0-based, as Keras's initial_epoch
    last_epoch: int  # exclusive, as Keras's epochs
    trainable: frozenset[str]  # names of the layers that train
    training: Training  # the training section with this phase's optimizer
    unfreeze: tuple[str, ...] = ()

    @property
    def epochs(self) -> int:
        return self.last_epoch - self.first_epoch

    def describe(self, count: int) -> str:
        unfreeze = f", unfreezing {', '.join(self.unfreeze)}" if self.unfreeze else ""
        return (f"phase {self.index + 1} of {count}: epochs {self.first_epoch + 1}-{self.last_epoch}, "
                f"{len(self.trainable)} layers train{unfreeze}")


def phase_runs(spec: ModelSpec, epochs: int) -> list[PhaseRun]:
    """The run's phases; without `training.phases`, one phase of `epochs`."""
    training = spec.training
    nodes = spec.graph()
    if not training.phases:
        return [PhaseRun(0, 0, epochs, frozenset(node.name for node in nodes if node.trainable), training)]
    runs, first = [], 0
    for index, phase in enumerate(training.phases):
        if phase.optimizer is not None:
            phase_training = training.model_copy(update={"optimizer": phase.optimizer})
        elif phase.learning_rate is not None:
            phase_training = training.model_copy(
                update={"optimizer": training.optimizer.model_copy(update={"learning_rate": phase.learning_rate})})
        else:
            phase_training = training
        runs.append(PhaseRun(index, first, first + phase.epochs, trainable_in_phase(nodes, training.phases, index),
                             phase_training, tuple(phase.unfreeze)))
        first += phase.epochs
    return runs


def phase_of(runs: list[PhaseRun], completed_epochs: int) -> PhaseRun:
    """The phase whose state a checkpoint after `completed_epochs` epochs holds (the first at 0)."""
    return next((run for run in runs if run.first_epoch < completed_epochs <= run.last_epoch), runs[0])


def enter(phase: PhaseRun, spec: ModelSpec, inference: keras.Model, model: keras.Model, steps_per_epoch: int,
          precision: str = "float32", steps_per_execution: int = 1) -> None:
    """Set the layers' trainable flags and compile `model` (the training model around `inference`)
    with the phase's optimizer, its schedule spanning the phase (loss-scaled under mixed_float16),
    running `steps_per_execution` steps per call of its train function (a divisor of steps_per_epoch)."""
    present = {layer.name for layer in inference.layers}
    for node in spec.graph():
        if node.name in present:  # a dead branch is not in the Keras model
            inference.get_layer(node.name).trainable = node.name in phase.trainable
    training = phase.training
    model.compile(optimizer=loss_scaled(kt.optimizer(training, steps_per_epoch * phase.epochs), precision),
                  loss=kt.loss(training), metrics=list(kt.metrics(training)), steps_per_execution=steps_per_execution)
    model.optimizer.build(model.trainable_variables)  # its slots exist before a checkpoint is read


def phase_starts(spec: ModelSpec) -> list[int]:
    """The 1-based epochs at which phases after the first start (for curves and the report)."""
    return [run.first_epoch + 1 for run in phase_runs(spec, spec.training.total_epochs)[1:]] \
        if spec.training and spec.training.phases else []
