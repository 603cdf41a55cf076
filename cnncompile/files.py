"""Files written atomically: a crash at any moment leaves the old file or the new one.

A write goes to a temporary file in the same folder, is flushed to disk, then renamed
over the target, never leaving a truncated file. Every stage that writes (run directories,
drawings, exports, downloads) goes through here.
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
