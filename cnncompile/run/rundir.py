"""The run directory: where a spec's run lives, and the error a run reports.

Its files are written atomically through cnncompile.files.
"""

from __future__ import annotations

from pathlib import Path


class RunError(Exception):
    """A run that cannot proceed as asked (changed spec, missing data, unreachable peers, ...).

    `where` is the path of the spec value the problem is about (e.g. ("training", "dataset")),
    so the CLI can point at its line; () when it is about no one value.
    """

    def __init__(self, message: str, where: tuple[str | int, ...] = ()):
        super().__init__(message)
        self.where = where


def default_run_dir(name: str) -> Path:
    """Where a spec's run lives unless told otherwise: runs/<name>, relative to the working directory."""
    return Path("runs") / name
