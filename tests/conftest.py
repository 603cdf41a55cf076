"""Shared helpers: paths, a real-subprocess CLI runner, spec writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
# Real MNIST (5,000 train / 10,000 test) laid out by the workplace beside the repo.
SHARED_DATA = Path(os.environ.get("CNNCOMPILE_TEST_DATA", ROOT.parent / "shared" / "data"))


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """`cnncompile ARGS` in a fresh Python process, exactly as a user runs it."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cnncompile", *args], cwd=cwd or ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def write_spec(tmp_path):
    """Write YAML text (dedented) to a file and return its path."""
    def write(text: str, name: str = "model.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path
    return write


def spec_text(layers: str, shape: str = "[28, 28, 1]", training: str = "") -> str:
    """A complete spec around a layers block (one layer per line, flow style)."""
    body = "\n".join(f"  - {line.strip()}" for line in textwrap.dedent(layers).strip().splitlines())
    return f"name: t\ninput:\n  shape: {shape}\nlayers:\n{body}\n{textwrap.dedent(training)}"


FRAMEWORKS = ("tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx")


def modules_imported_by(*args: str, watch: tuple[str, ...] = FRAMEWORKS) -> list[str]:
    """Run `cnncompile ARGS` in a fresh interpreter; the modules from `watch` it imported."""
    code = ("import json, sys, runpy; sys.argv = ['cnncompile', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('cnncompile', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print('IMPORTED', json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {watch!r})))")
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = next((l for l in result.stdout.splitlines() if l.startswith("IMPORTED ")), None)
    assert line is not None, result.stdout + result.stderr
    return json.loads(line[len("IMPORTED "):])
