"""The run directory's files, every one written atomically.

A write goes to a temporary file in the same folder, is flushed to disk, then renamed
over the target: a crash at any moment leaves either the old file or the new one,
never a truncated one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


@contextlib.contextmanager
def atomic_path(target: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write; renamed onto `target` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix or target.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual permissions
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: Path, value: Any) -> None:
    write_bytes(target, (json.dumps(value, indent=2) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_history(target: Path, rows: list[dict[str, Any]]) -> None:
    """history.csv, one row per completed epoch, rewritten whole (it is small) and atomically."""
    if not rows:
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes(target, buffer.getvalue().encode())
