"""`cnncompile check` and `schema` as a user runs them: real subprocesses, real files."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from cnncompile.language import reference
from cnncompile.language.layers import LAYER_TYPES
from tests.conftest import EXAMPLES, ROOT, run_cli, spec_text

SEED_SUMMARY = """\
Model: "mnist_cnn"
----------------------------------------------------------------------
Layer (type)                    Output Shape        Param #       MACs
----------------------------------------------------------------------
conv2d (Conv2D)                 (None, 26, 26, 32)      320    194,688
max_pooling2d (MaxPooling2D)    (None, 13, 13, 32)        0          0
conv2d_1 (Conv2D)               (None, 11, 11, 64)   18,496  2,230,272
max_pooling2d_1 (MaxPooling2D)  (None, 5, 5, 64)          0          0
conv2d_2 (Conv2D)               (None, 3, 3, 64)     36,928    331,776
flatten (Flatten)               (None, 576)               0          0
dense (Dense)                   (None, 64)           36,928     36,864
dense_1 (Dense)                 (None, 10)              650        640
----------------------------------------------------------------------
Total params: 93,322
Trainable params: 93,322
Non-trainable params: 0
Total MACs: 2,794,240 per image
"""


def test_check_seed_model_plain_summary():
    result = run_cli("check", "examples/mnist_cnn.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == SEED_SUMMARY
    assert result.stderr == ""


def test_check_json_has_the_documented_shape():
    result = run_cli("check", "--json", "examples/mnist_cnn.yaml")
    data = json.loads(result.stdout)
    assert data["input_shape"] == [None, 28, 28, 1]
    assert data["layers"][0] == {"name": "conv2d", "type": "Conv2D", "output_shape": [None, 26, 26, 32],
                                 "params": 320, "trainable_params": 320, "macs": 194688, "line": 7,
                                 "inputs": ["input"], "block": []}
    assert (data["total_params"], data["trainable_params"], data["non_trainable_params"],
            data["total_macs"]) == (93322, 93322, 0, 2794240)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_check_every_example(path):
    result = run_cli("check", "--json", str(path.relative_to(ROOT)))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warnings either
    assert json.loads(result.stdout)["layers"][-1]["output_shape"] == [None, 10]


def test_invalid_spec_exits_1_with_located_errors_and_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(spec_text("""
        {type: Conv2d, filters: 8, kernel_size: 3}
        {type: Dense, unit: 10}
    """))
    result = run_cli("check", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}:5:5: error: layers[0]: unknown layer type 'Conv2d'; did you mean 'Conv2D'?"
    assert lines[-1] == f"3 errors in {path}"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["check", "missing.yaml"], "cannot read missing.yaml: No such file or directory"),
    (["check", "examples"], "File 'examples' is a directory"),
    (["check"], "Missing argument 'SPEC'"),
    (["check", "--bogus", "examples/mnist_cnn.yaml"], "No such option '--bogus'"),
])
def test_usage_errors_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_binary_garbage_is_refused_cleanly(tmp_path):
    path = tmp_path / "garbage.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    result = run_cli("check", str(path))
    assert result.returncode == 1
    # 0x0a at offset 10 ends line 1; 0x80 at offset 128 is the first byte UTF-8 refuses.
    assert result.stderr.startswith(f"{path}:2:118: error: file is not valid UTF-8: byte 0x80")
    assert "Traceback" not in result.stderr


def test_warnings_print_but_exit_0(tmp_path):
    path = tmp_path / "logits.yaml"
    path.write_text(spec_text("""
        {type: Flatten}
        {type: Dense, units: 10}
    """, training="training: {dataset: mnist}\n"))
    result = run_cli("check", str(path))
    assert result.returncode == 0
    assert f"{path}:6:5: warning: the model ends in Dense with activation 'linear'" in result.stderr


@pytest.mark.parametrize("spec", ["examples/mnist_cnn.yaml", "examples/mnist_tune.yaml"])
def test_check_imports_no_framework(spec):
    """`check` must stay framework-free: nothing from TensorFlow, Keras or ONNX is imported
    (nor Optuna when it surveys a search space), and it stays fast: no search for pydantic
    plugins through importlib.metadata."""
    code = (f"import sys, runpy; sys.argv = ['cnncompile', 'check', '{spec}'];\n"
            "try:\n    runpy.run_module('cnncompile', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'onnx', 'onnxruntime', 'tf2onnx', 'numpy', 'optuna') "
            "or m == 'importlib.metadata')\n"
            "print('FRAMEWORKS', bad)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert "FRAMEWORKS []" in result.stdout, result.stdout + result.stderr


def test_schema_file_is_current():
    result = run_cli("schema")
    assert result.returncode == 0
    assert result.stdout == (ROOT / "spec" / "cnncompile.schema.json").read_text()
    layer, block_use = json.loads(result.stdout)["properties"]["layers"]["items"]["oneOf"]
    assert layer["discriminator"]["propertyName"] == "type"
    assert block_use == {"$ref": "#/$defs/BlockUse"}


def test_language_reference_is_current_and_complete():
    text = (ROOT / "spec" / "README.md").read_text()
    assert text == reference.markdown(), "regenerate: cnncompile schema --format markdown > spec/README.md"
    for cls in LAYER_TYPES:
        assert f"### {cls.__name__}\n" in text
        for field in cls.model_fields:
            if field != "type":
                assert f"| `{field}` |" in text


def test_every_example_has_the_schema_modeline():
    for path in EXAMPLES:
        assert path.read_text().startswith("# yaml-language-server: $schema=../spec/cnncompile.schema.json\n")


def test_examples_validate_against_the_json_schema():
    """The generated schema accepts what pydantic accepts (the editor sees what check sees)."""
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json.loads((ROOT / "spec" / "cnncompile.schema.json").read_text())
    for path in EXAMPLES:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(spec_text("{type: Conv2d, filters: 3, kernel_size: 3}")), schema)


def test_terminal_gets_a_rich_table():
    """On a real terminal (a pty here) the summary is a rich table; piped, it is plain text."""
    import os
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: cnncompile on a terminal
        os.chdir(ROOT)
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        env.update(TERM="xterm-256color", COLUMNS="120")
        os.execve(sys.executable, [sys.executable, "-m", "cnncompile", "check", "examples/mnist_cnn.yaml"], env)
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    raw = b"".join(chunks).decode()
    assert "\x1b[" in raw  # styled for the terminal
    screen = re.sub(r"\x1b\[[0-9;]*m", "", raw)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "┃ Layer (type)" in screen and "│ conv2d (Conv2D)" in screen
    assert "Total params: 93,322" in screen
