"""ONNX export with verified parity, metadata and dynamic batch; `predict` with onnxruntime alone."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cnncompile.deploy import onnx_export as exporter  # noqa: E402
from cnncompile.deploy.pipeline import ExportData, ExportError, export_model, fresh_model  # noqa: E402
from cnncompile.analysis.check import compile_file  # noqa: E402
from tests.conftest import EXAMPLES, ROOT, run_cli, write_idx  # noqa: E402

RNG = np.random.default_rng(0)


def images_for(compiled, n=40):
    return RNG.integers(0, 256, (n, *compiled.spec.input.shape), dtype=np.uint8)


def export_onnx(compiled, model, out, images, source, *, labels=None, untrained=False):
    """Float ONNX through the one export pipeline, verified on `images` (no dataset)."""
    data = ExportData(images, source, labels, None, None)
    return export_model(compiled, model, exporter.FORMAT, out, data, untrained=untrained)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_exports_untrained_and_trained(path, tmp_path):
    import keras

    compiled = compile_file(path)
    model = fresh_model(compiled)
    out = tmp_path / "untrained.onnx"
    result = export_onnx(compiled, model, out, images_for(compiled), "random images", untrained=True)
    assert result.verification.max_abs_diff <= 1e-4 and result.verification.argmax_agreement == 1.0
    assert onnx.load(str(out)).metadata_props  # written, with metadata

    # A few real training steps, so BatchNormalization statistics and biases are non-trivial.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    classes = compiled.info.output_shape[-1]
    model.fit(images_for(compiled, 64).astype("float32"), RNG.integers(0, classes, 64), epochs=1, batch_size=16, verbose=0)
    trained = export_onnx(compiled, model, tmp_path / "trained.onnx", images_for(compiled), "random images")
    assert trained.verification.argmax_agreement == 1.0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "trained.onnx")).metadata_props}
    assert meta["cnncompile.untrained"] == "false" and meta["keras.version"] == keras.__version__


def test_file_contract_dynamic_batch_and_metadata(tmp_path):
    compiled = compile_file(ROOT / "examples" / "mnist_cnn.yaml")
    out = tmp_path / "m.onnx"
    export_onnx(compiled, fresh_model(compiled), out, images_for(compiled), "random images",
                labels=tuple("zero one two three four five six seven eight nine".split()))
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph, full_check=True)
    (inp,), (outp,) = graph.graph.input, graph.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp), inp.type.tensor_type.elem_type) == ("image", ["batch", 28, 28, 1], onnx.TensorProto.FLOAT)
    assert (outp.name, dims(outp)) == ("probabilities", ["batch", 10])
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["cnncompile.spec_name"] == "mnist_cnn"
    assert meta["cnncompile.spec_sha256"] == compiled.sha256
    assert json.loads(meta["cnncompile.labels"])[3] == "three"
    assert meta["cnncompile.input_layout"] == "NHWC" and meta["cnncompile.input_range"].startswith("0-255")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 5, 64):
        probabilities = session.run(None, {"image": np.full((batch, 28, 28, 1), 128, np.float32)})[0]
        assert probabilities.shape == (batch, 10)
        assert np.allclose(probabilities.sum(1), 1, atol=1e-5)


def test_corrupted_weight_fails_verification_and_leaves_no_file(tmp_path, monkeypatch):
    compiled = compile_file(ROOT / "examples" / "mnist_cnn.yaml")
    rename = exporter._rename_io

    def rename_and_corrupt(graph):
        rename(graph)
        weight = max(graph.graph.initializer, key=lambda t: len(t.raw_data) or len(t.float_data))
        array = onnx.numpy_helper.to_array(weight).copy()
        array *= 1.5  # one weight tensor off: what a conversion bug would look like
        weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))

    monkeypatch.setattr(exporter, "_rename_io", rename_and_corrupt)
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=r"verification failed: max \|diff\|"):
        export_onnx(compiled, fresh_model(compiled), out, images_for(compiled), "random images")
    assert list(tmp_path.iterdir()) == []


def test_missing_trained_model_says_to_train_first(tmp_path):
    result = run_cli("export", "examples/mnist_cnn.yaml", "--onnx", "--run", str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert "no trained model in" in result.stderr and "run `cnncompile train examples/mnist_cnn.yaml` first" in result.stderr
    usage = run_cli("export", "examples/mnist_cnn.yaml")
    assert usage.returncode == 2 and "--onnx" in usage.stderr


def test_cli_train_export_predict_end_to_end(tiny_project):
    from PIL import Image

    tmp_path = tiny_project  # TINY trained by `cnncompile train` into run/ (conftest), a copy
    exported = run_cli("export", "tiny.yaml", "--onnx", "--data-dir", "data", "--run", "run", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "verified on 38 mnist test images at batch sizes [1, 37]" in exported.stdout
    onnx_path = tmp_path / "run" / "model.onnx"
    assert f"wrote {onnx_path.relative_to(tmp_path)}" in exported.stdout

    # PNGs of another size and mode, and an IDX set with its labels beside it.
    Image.fromarray(RNG.integers(0, 256, (56, 40, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(RNG.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / "digit.png")
    idx_images = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", RNG.integers(0, 256, (30, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", RNG.integers(0, 10, 30))

    fake = tmp_path / "fake"  # predict must not import TensorFlow or Keras
    for package in ("tensorflow", "keras"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text(f"raise SystemExit('{package} was imported')\n")
    env = {"PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"}
    result = run_cli("predict", str(onnx_path), "big.png", "digit.png", idx_images.name, "-k", "2",
                     cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "note: big.png: resized from 40x56 to 28x28" in result.stderr
    assert "note: big.png: converted from RGB to grayscale" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("big.png: ") and lines[0].count(",") == 1  # top-2
    assert any(line.startswith("t10k-images-idx3-ubyte.gz: accuracy ") for line in lines)

    # The rest in this process: the one above proved predict needs no framework.
    as_json = run_cli("predict", str(onnx_path), "digit.png", "--json", cwd=tmp_path)
    data = json.loads(as_json.stdout)
    top = data["predictions"][0]["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"]
    assert {t["label"] for t in top} <= {str(i) for i in range(10)}

    bad = run_cli("predict", str(onnx_path), "t10k-labels-idx1-ubyte.gz", cwd=tmp_path)
    assert bad.returncode == 1 and "expected images" in bad.stderr and "Traceback" not in bad.stderr
    not_onnx = run_cli("predict", "tiny.yaml", "digit.png", cwd=tmp_path)
    assert not_onnx.returncode == 1 and "not a loadable ONNX model" in not_onnx.stderr


def test_unexportable_activation_names_the_layer_and_line(tmp_path):
    """gelu lowers to TensorFlow's Erfc, which tf2onnx cannot convert: say which layer, where."""
    path = tmp_path / "gelu.yaml"
    path.write_text("name: gelu_net\ninput: {shape: [8, 8, 1]}\nlayers:\n"
                    "  - {type: Conv2D, filters: 2, kernel_size: 3}\n"
                    "  - {type: Conv2D, filters: 2, kernel_size: 3, activation: gelu}\n"
                    "  - {type: Flatten}\n  - {type: Dense, units: 3, activation: softmax}\n")
    compiled = compile_file(path)
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError) as exc:
        export_onnx(compiled, fresh_model(compiled), out, images_for(compiled), "random images")
    assert str(exc.value).startswith("layer 'conv2d_1' (Conv2D) (activation gelu) cannot be exported at opset 17: "
                                     "its TensorFlow op Erfc has no ONNX operator")
    assert exc.value.path == ("layers", 1)
    assert not out.exists()
    cli = run_cli("export", str(path), "--onnx", "--untrained", "-o", str(out))
    assert cli.returncode == 1 and not out.exists()
    assert f"{path}:5:5: error: layer 'conv2d_1' (Conv2D) (activation gelu) cannot be exported" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_run_of_another_spec_is_refused(tmp_path):
    """A model.keras trained from a different spec must not be exported under this one."""
    from cnncompile.deploy.pipeline import load_trained

    lenet = compile_file(ROOT / "examples" / "lenet5.yaml")
    (tmp_path / "run").mkdir()
    fresh_model(lenet).save(tmp_path / "run" / "model.keras")
    with pytest.raises(ExportError, match="was not trained from this spec"):
        load_trained(compile_file(ROOT / "examples" / "mnist_cnn.yaml"), tmp_path / "run")
