"""Shared helpers: paths, a CLI runner (in-process or a real subprocess), spec writers, one trained tiny run."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
# Real MNIST (5,000 train / 10,000 test) laid out by the workplace beside the repo.
SHARED_DATA = Path(os.environ.get("CNNCOMPILE_TEST_DATA", ROOT.parent / "shared" / "data"))


# Commands run in this process through click's CliRunner, as the worker has already paid for
# the imports: a fresh interpreter costs ~0.4 s of CPU, one that loads TensorFlow 3-5 s. Tests
# that are about a fresh process (framework-free imports, signals, crashes) start one themselves
# or pass in_process=False.
IN_PROCESS = frozenset({"check", "schema", "draw", "report", "train", "tune", "export", "predict", "import"})
# Read once, when Python or a framework starts, so setting them for one command needs a fresh
# process: a fake module on the path, Keras's cache folder, and a MultiWorkerMirroredStrategy
# cluster (TensorFlow configures the process's collective runtime once).
READ_AT_START = ("PYTHONPATH", "KERAS_HOME", "KERAS_BACKEND", "TF_CONFIG")
# Commands that build no Keras model: check, schema, draw and report import no framework (tests
# prove it in fresh processes: modules_imported_by, test_check_imports_no_framework), `data`
# uses TensorFlow's TFRecord files at most. They leave no Keras garbage, so the full collection
# after a command is skipped for them: in a worker holding TensorFlow it costs 0.15-0.5 s of
# CPU a call. Keras's state is still reset after them.
FRAMEWORK_FREE = frozenset({"check", "schema", "draw", "report", "data"})


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 600, in_process: bool | None = None) -> subprocess.CompletedProcess:
    """`cnncompile ARGS` as a user runs it: a fresh Python process, or (unless in_process=False
    or env sets a variable read at start-up) the same click command in this process."""
    if in_process is None:
        in_process = bool(args) and args[0] in IN_PROCESS and not any((env or {}).get(name) for name in READ_AT_START)
    if in_process:
        return _run_in_process(args, cwd, env)
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cnncompile", *args], cwd=cwd or ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def _run_in_process(args: tuple[str, ...], cwd: Path | None, env: dict | None) -> subprocess.CompletedProcess:
    from click.testing import CliRunner

    from cnncompile.cli import main

    with as_a_fresh_process(args):
        os.chdir(cwd or ROOT)
        result = CliRunner().invoke(main, list(args), prog_name="cnncompile", env={"NO_COLOR": "1", **(env or {})})
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # what the interpreter would have printed, so "no Traceback" assertions still see it
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(["cnncompile", *args], result.exit_code, result.stdout, stderr)


@contextlib.contextmanager
def as_a_fresh_process(args: tuple[str, ...]):
    """Run a command in this process as if it had one to itself, and leave nothing behind:
    sys.argv (run.json records it), the environment, cwd, Python's and NumPy's random
    generators, Keras's global state (layer names, seeds, dtype policy) and TensorFlow's op
    determinism, which `train` turns on for the whole process."""
    saved = (list(sys.argv), dict(os.environ), os.getcwd(), random.getstate(), np.random.get_state())
    _reset_frameworks(free_memory=False)
    sys.argv = [str(ROOT / "cnncompile" / "__main__.py"), *args]  # what `python -m cnncompile` sees
    try:
        yield
    finally:
        _reset_frameworks(free_memory=not args or args[0] not in FRAMEWORK_FREE)
        sys.argv, environ, cwd, python_state, numpy_state = saved
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _reset_frameworks(free_memory: bool) -> None:
    # Only frameworks already imported: a framework-free command must stay framework-free.
    if "keras" in sys.modules:
        import keras

        keras.backend.clear_session(free_memory=free_memory)
    if "tensorflow" in sys.modules:
        from tensorflow.python.framework import config  # disable_op_determinism is not exported

        config.disable_op_determinism()


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


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def make_idx_dir(folder: Path, n_train=12, n_test=6, compress=True) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_train, 28, 28)), compress)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_train), compress)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_test, 28, 28)), compress)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_test), compress)
    return folder


# A small spec that exercises most of training: BatchNormalization, dropout, a schedule,
# augmentation, a validation split and a callback.
TINY = """\
name: tiny
input: {shape: [28, 28, 1]}
layers:
  - {type: Conv2D, filters: 4, kernel_size: 3, activation: relu}
  - {type: MaxPooling2D, pool_size: 2}
  - {type: BatchNormalization}
  - {type: Flatten}
  - {type: Dropout, rate: 0.1}
  - {type: Dense, units: 10, activation: softmax}
training:
  dataset: mnist
  optimizer: {type: adam, learning_rate: {type: CosineDecay, initial_learning_rate: 0.01}}
  loss: categorical_crossentropy
  epochs: 1
  batch_size: 32
  validation_split: 0.25
  augmentation:
    - {type: RandomTranslation, height_factor: 0.1, width_factor: 0.1}
  callbacks:
    - {type: EarlyStopping, monitor: val_loss, patience: 5}
"""


FRAMEWORKS = ("tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx")


def tally_at_once(out: Path, probabilities, y_true, images, labels) -> dict:
    """The report's per-class numbers for a test set given as one batch (run/report.Tally)."""
    from cnncompile.run import report

    tally = report.Tally(len(labels))
    tally.add(probabilities, y_true, images)
    return tally.finish(out, labels)


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


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """TINY trained once per session by a real `cnncompile train` (256 random train / 64 test
    images in data/mnist, one epoch, seed 0): the project folder and the command's result.
    Read-only: a test that writes into it takes `tiny_project` (a copy) instead."""
    project = tmp_path_factory.mktemp("tiny-trained")
    make_idx_dir(project / "data" / "mnist", n_train=256, n_test=64)
    (project / "tiny.yaml").write_text(TINY)
    result = run_cli("train", str(project / "tiny.yaml"), "--data-dir", str(project / "data"),
                     "--out", str(project / "run"), cwd=project)
    assert result.returncode == 0, result.stderr
    return project, result


@pytest.fixture
def tiny_project(tiny_trained, tmp_path) -> Path:
    """A writable copy of tiny_trained's project: tiny.yaml, data/ and the finished run/."""
    return Path(shutil.copytree(tiny_trained[0], tmp_path / "project"))


# pytest-xdist hands whole files to its two workers in collection order (pyproject.toml turns
# off its own reordering by test count, which put the few-test, long files last). Longest
# first, so the suite ends on short files instead of one worker finishing a long file alone:
# CPU seconds per file, measured (docs/benchmarks.md, the suite section); others keep their order.
LONGEST_FIRST = ("test_tune.py", "test_zoo.py", "test_distributed.py", "test_deploy.py", "test_train.py",
                 "test_export.py", "test_shards.py", "test_weights.py", "test_streaming.py", "test_phases.py",
                 "test_hostile.py", "test_import.py", "test_keras_parity.py", "test_draw.py", "test_report.py",
                 "test_cli_check.py", "test_editor.py")


@pytest.hookimpl(trylast=True)  # after pytest groups a file's tests by their module-scoped parameters
def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order stays
