"""A command that needs an optional extra, run without it, says which extra and the pip command
in one line and exits 1: no traceback. Each case hides packages from a real `cnncompile`
process with an import blocker (tests/hiding.py), as if they were not installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions

import pytest

from cnncompile.cli import EXTRAS
from tests.conftest import ROOT
from tests.hiding import Hide

def run_hiding(hidden: str, *args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.hiding", hidden, *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env={**os.environ, "NO_COLOR": "1"}, timeout=300)


@pytest.mark.parametrize("hidden, args, extra", [
    ("tensorflow", ["train", "examples/mnist_cnn.yaml"], "train"),
    ("numpy", ["train", "examples/mnist_cnn.yaml"], "train"),
    ("optuna", ["tune", "examples/mnist_tune.yaml"], "tune"),
    ("tf2onnx", ["export", "examples/mnist_cnn.yaml", "--onnx"], "export"),
    ("onnxruntime", ["predict", "MODEL", "IMAGE"], "predict"),
    ("PIL", ["predict", "MODEL", "IMAGE"], "predict"),
    ("pygls", ["lsp"], "lsp"),
])
def test_a_missing_extra_is_one_line_naming_it(hidden, args, extra, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not read")
    args = [str(tmp_path / "m.onnx") if a == "MODEL" else str(tmp_path / "digit.png") if a == "IMAGE" else a
            for a in args]
    result = run_hiding(hidden, *args)
    assert result.returncode == 1, result.stderr
    assert result.stderr == (f"error: `cnncompile {args[0]}` needs the '{extra}' extra ({hidden} is not installed): "
                             f"pip install 'cnncompile[{extra}]'\n")


def test_a_module_only_some_paths_import_is_caught_when_it_fails(tmp_path):
    """psycopg2 is imported only for a PostgreSQL study; the blocker makes that import fail
    inside the command, after the up-front check passed."""
    from cnncompile import cli

    hidden = "psycopg2"
    assert hidden in cli.OPTIONAL_MODULES and hidden not in cli.EXTRAS["tune"]

    @cli.needs("tune")
    def tune():
        import psycopg2  # noqa: F401

    sys.meta_path.insert(0, Hide({hidden}))
    try:
        with pytest.raises(SystemExit) as stop:
            sys.modules.pop(hidden, None)
            tune()
    finally:
        sys.meta_path.pop(0)
    assert stop.value.code == 1


def test_core_commands_need_no_extra(tmp_path):
    """check, draw's DOT output and report use only the core install."""
    everything = ",".join(sorted({m for modules in EXTRAS.values() for m in modules} | {"ai_edge_litert"}))
    checked = run_hiding(everything, "check", "examples/mnist_cnn.yaml")
    assert checked.returncode == 0, checked.stderr
    (tmp_path / "run").mkdir()
    reported = run_hiding(everything, "report", str(tmp_path / "run"))
    assert reported.returncode == 1 and reported.stderr.startswith("error: ") and "Traceback" not in reported.stderr


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: tensorflow_cpu is tensorflow-cpu


def _extra_distributions(extra: str, extras: dict) -> set[str]:
    names = set()
    for requirement in extras[extra]:
        name = _normal(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0))
        nested = re.fullmatch(r"cnncompile\[(.+)\]", requirement)
        names |= set().union(*(_extra_distributions(e, extras) for e in nested.group(1).split(","))) if nested \
            else {name}
    return names


@pytest.mark.parametrize("extra", EXTRAS)
def test_each_module_the_cli_asks_for_is_installed_by_that_extra(extra):
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = _extra_distributions(extra, extras)
    installed_by = packages_distributions()
    for module in EXTRAS[extra]:
        distributions = {_normal(d) for d in installed_by.get(module, [])}
        assert distributions & wanted, f"{module} ({distributions}) is not installed by cnncompile[{extra}]"
