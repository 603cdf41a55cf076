"""The pipeline's direction, as a static contract: import-linter reads every import in the
package (pyproject.toml's [tool.importlinter]) without running any of it. The subprocess tests
in test_cli_check.py and test_draw.py prove the same at run time for the commands."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_stage_is_under_the_layers_contract():
    """A new folder or top-level module outside the layers would escape the contract silently."""
    (layers,) = [c["layers"] for c in _contracts() if c["type"] == "layers"]
    named = {part.strip() for layer in layers for part in layer.split("|")}
    package = ROOT / "cnncompile"
    present = {f"cnncompile.{p.name}" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    present |= {f"cnncompile.{p.stem}" for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert present == named, f"in the package but not the contract: {sorted(present - named)}; " \
                             f"in the contract but gone: {sorted(named - present)}"


def test_framework_free_stages_are_forbidden_the_frameworks():
    (forbidden,) = [c for c in _contracts() if c["type"] == "forbidden"]
    assert set(forbidden["source_modules"]) == {"cnncompile.language", "cnncompile.analysis", "cnncompile.editor"}
    assert {"tensorflow", "keras", "onnx", "onnxruntime", "optuna"} <= set(forbidden["forbidden_modules"])
