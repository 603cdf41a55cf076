"""training.precision: the policy `auto` picks and why, the output layer in float32, a float32
model.keras and ONNX export after mixed-precision training, and no resume across precisions."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from cnncompile.cpu import CpuFeatures
from cnncompile.files import write_json
from tests.conftest import TINY, make_idx_dir, run_cli


def cpu(*flags: str, known: bool = True) -> CpuFeatures:
    return CpuFeatures("Test CPU", frozenset(flags), known)


@pytest.mark.parametrize(("requested", "hardware", "gpus", "policy", "reason"), [
    ("auto", cpu("avx2", "avx512f", "avx512_bf16"), [], "mixed_bfloat16", "auto: Test CPU has AVX512_BF16"),
    ("auto", cpu("avx2", "amx_bf16", "amx_tile"), [], "mixed_bfloat16", "auto: Test CPU has AMX_BF16"),
    ("auto", cpu("avx2", "avx512f", "avx512_vnni"), [], "float32",
     "auto: Test CPU has no bfloat16 instructions (AVX512_BF16 or AMX)"),
    ("auto", cpu(known=False), [], "float32", "auto: CPU features unknown (no /proc/cpuinfo)"),
    ("auto", cpu("avx512_bf16"), [{"device_name": "Tesla V100", "compute_capability": (7, 0)}], "mixed_float16",
     "auto: GPU Tesla V100 has float16 tensor cores"),
    ("auto", cpu("avx2"), [{"device_name": "Tesla P100", "compute_capability": (6, 0)}], "float32",
     "auto: the GPU has no float16 tensor cores"),
    ("mixed_bfloat16", cpu(), [], "mixed_bfloat16", "as asked"),
    ("float32", cpu("avx512_bf16"), [], "float32", "as asked"),
])
def test_auto_precision_reads_the_hardware_and_says_why(requested, hardware, gpus, policy, reason):
    from cnncompile.backend.precision import choose

    chosen = choose(requested, hardware, gpus)
    assert (chosen.policy, chosen.reason) == (policy, reason)


def test_cpu_features_from_cpuinfo_text(tmp_path):
    from cnncompile.cpu import cpu_features

    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512_bf16\n")
    found = cpu_features(tmp_path / "cpuinfo")
    assert (found.model_name, found.known, "avx512_bf16" in found.flags) == ("AMD EPYC 9R14", True, True)
    assert not cpu_features(tmp_path / "missing").known


def test_mixed_policy_keeps_the_output_layer_and_the_variables_in_float32(tmp_path):
    import keras

    from cnncompile.analysis.check import compile_file
    from cnncompile.backend.builder import build_model, dtype_policy
    from cnncompile.backend.precision import float32_inference

    (tmp_path / "tiny.yaml").write_text(TINY)
    spec = compile_file(tmp_path / "tiny.yaml").spec
    with dtype_policy("mixed_bfloat16"):
        model = build_model(spec)
    assert keras.config.dtype_policy().name == "float32", "the global policy leaked"
    *hidden, output = model.layers[1:]
    assert {layer.dtype_policy.name for layer in hidden} == {"mixed_bfloat16"}
    assert output.dtype_policy.name == "float32"
    assert {w.dtype for w in model.weights} == {"float32"}
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype("float32")
    assert model(images).dtype == "float32"
    plain = float32_inference(model, spec)
    assert {layer.dtype_policy.name for layer in plain.layers[1:]} == {"float32"}
    for a, b in zip(plain.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Same weights; bfloat16 keeps 8 significant bits, so the outputs agree to about 1e-2.
    np.testing.assert_allclose(plain(images), model(images), atol=0.05)


@pytest.fixture
def project(tmp_path):
    make_idx_dir(tmp_path / "data" / "mnist", n_train=256, n_test=64)
    (tmp_path / "tiny.yaml").write_text(TINY)
    return tmp_path


def test_bfloat16_training_saves_and_exports_float32_and_refuses_to_resume_in_float32(project):
    trained = run_cli("train", "tiny.yaml", "--data-dir", "data", "--precision", "mixed_bfloat16", cwd=project)
    assert trained.returncode == 0, trained.stderr
    assert "precision: mixed_bfloat16 (as asked)" in trained.stdout
    run = project / "runs" / "tiny"
    assert json.loads((run / "run.json").read_text())["precision"] == "mixed_bfloat16"
    config = zipfile.ZipFile(run / "model.keras").read("config.json").decode()
    assert "bfloat16" not in config and "float32" in config
    exported = run_cli("export", "tiny.yaml", "--onnx", "--data-dir", "data", cwd=project)
    assert exported.returncode == 0, exported.stderr
    assert "verified on" in exported.stdout
    import onnx

    graph = onnx.load(run / "model.onnx").graph
    assert not [n.name for n in graph.node if n.op_type == "Cast" and any(
        a.name == "to" and a.i == onnx.TensorProto.BFLOAT16 for a in n.attribute)]

    # An unfinished bfloat16 run (as a kill leaves it) is not resumed in float32.
    (run / "metrics.json").unlink()
    write_json(run / "checkpoint" / "state.json", {"epoch": 1, "checkpoint": "epoch-1.keras",
                                                   "spec_sha256": json.loads((run / "run.json").read_text())["spec_sha256"],
                                                   "history": [], "train_seconds": 1})
    refused = run_cli("train", "tiny.yaml", "--data-dir", "data", "--precision", "float32", cwd=project)
    assert refused.returncode == 1
    assert ("holds an unfinished run trained in mixed_bfloat16, not float32; resume it with --precision "
            "mixed_bfloat16") in refused.stderr
    assert "Traceback" not in refused.stderr
