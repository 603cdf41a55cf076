"""The one renderer of `progress(what, done, total)`, as data/ reports it (scanning a folder,
decoding it, packing shards, hashing them): a bar per stage, with its counts, or its sizes for
a stage counted in bytes. Presentation only: the CLI makes one and passes it in.

Framework-free, and rich loads only when a stage worth showing starts, so importing this
costs a command nothing.
"""

from __future__ import annotations

from typing import Any


class StageProgress:
    """`progress(what, done, total)` drawn with rich, one bar per stage (`what`).

    On a terminal the bar is live and its finished line stays; anywhere else (a log, a pipe)
    only a finished stage writes its line, once, so an interrupted or failed stage leaves
    nothing half-drawn behind its error. Stages of fewer than `min_total` items draw nothing.
    """

    MIN_TOTAL = 1000

    def __init__(self, console: Any, unit_bytes: bool = False, min_total: int = MIN_TOTAL):
        self.console = console  # a rich Console (stderr for the data commands, train's own)
        self.unit_bytes = unit_bytes
        self.min_total = min_total
        self.stage: str | None = None
        self.progress: Any = None  # rich.progress.Progress of the current stage

    def __call__(self, what: str, done: int, total: int) -> None:
        if total < self.min_total:
            return
        if what != self.stage:
            self.close()
            self._start(what, total)
        self.progress.update(self.task, completed=done, total=total)
        if done >= total:
            if not self.console.is_terminal:  # the finished line, once, from the same columns
                self.console.print(self.progress.make_tasks_table(self.progress.tasks))
            self.close()

    def _start(self, what: str, total: int) -> None:
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        counts = DownloadColumn() if self.unit_bytes else MofNCompleteColumn()
        self.progress = Progress(TextColumn(what), BarColumn(), counts, TimeRemainingColumn(elapsed_when_finished=True),
                                 console=self.console, disable=not self.console.is_terminal)
        self.progress.start()
        self.task = self.progress.add_task(what, total=total)
        self.stage = what

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End the current stage's bar (a finished one stays on a terminal)."""
        if self.progress is not None:
            self.progress.stop()
        self.progress, self.stage = None, None
