"""A rich progress bar per epoch, as a Keras callback. Presentation only: the CLI passes it in
(with cnncompile.progress.StageProgress for the data's stages)."""

from __future__ import annotations

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RichProgress(keras.callbacks.Callback):
    def __init__(self, console: Console):
        super().__init__()
        self.console = console
        self.progress: Progress | None = None

    def on_epoch_begin(self, epoch, logs=None):
        total = self.params.get("steps") if self.params else None
        self.epoch = epoch + 1
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
        shown = " ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        self.console.print(f"epoch {self.epoch}/{self.params.get('epochs')}: {shown}")

    def on_train_end(self, logs=None):
        if self.progress is not None:
            self.progress.stop()
