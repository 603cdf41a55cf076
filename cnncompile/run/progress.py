"""A rich progress bar per epoch, as a Keras callback. Presentation only: the CLI passes it in
(with cnncompile.progress.StageProgress for the data's stages)."""

from __future__ import annotations

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class EpochLog(keras.callbacks.Callback):
    """One line per epoch with its scores. It watches no single batch, so `train` may run a
    whole epoch per call of Keras's train function (backend/fitting.py steps_per_execution)."""

    def __init__(self, console: Console):
        super().__init__()
        self.console = console

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_epoch_end(self, epoch, logs=None):
        shown = " ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        self.console.print(f"epoch {self.epoch}/{self.params.get('epochs')}: {shown}")


class RichProgress(EpochLog):
    """EpochLog with a bar that follows the epoch's batches: on a terminal, where it is drawn."""

    def __init__(self, console: Console):
        super().__init__(console)
        self.progress: Progress | None = None

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        total = self.params.get("steps") if self.params else None
        self.progress = Progress(TextColumn(f"epoch {self.epoch}/{self.params.get('epochs')}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
                                 console=self.console, transient=True, disable=not self.console.is_terminal)
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, stats="")

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        stats = " ".join(f"{k} {float(v):.4f}" for k, v in logs.items() if k in ("loss", "accuracy"))
        self.progress.update(self.task, completed=batch + 1, stats=stats)

    def on_epoch_end(self, epoch, logs=None):
        if self.progress is not None:
            self.progress.stop()
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        if self.progress is not None:
            self.progress.stop()


def training_progress(console: Console) -> EpochLog:
    """A bar per epoch where one can be drawn (a terminal), else the epochs' lines alone."""
    return RichProgress(console) if console.is_terminal else EpochLog(console)
