"""`cnncompile import` from ONNX: small graphs written with onnx.helper (NCHW as PyTorch exports
them, and NHWC behind a transpose as Keras exports them), run by onnxruntime and compared with
the imported spec's Keras model on real MNIST digits; a spec -> ONNX -> spec round trip; refusal.

The torchvision networks are a bench (bench/import_torchvision.py): torch is not a test dependency."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from cnncompile.analysis.check import compile_file
from cnncompile.cli import main
from cnncompile.importer.model_import import import_model
from tests.conftest import ROOT
from tests.test_import import mnist_images

RNG = np.random.default_rng(0)


def _init(name: str, shape: tuple, scale: float = 0.1) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.normal(0, scale, shape).astype("float32"), name)


def _model(nodes, inits, input_shape, output_shape, name="small") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _nchw_net() -> onnx.ModelProto:
    """What PyTorch exports: NCHW throughout; a padded strided conv, a depthwise conv, batch
    norm, hard-swish, a squeeze-and-excitation gate, a flatten of a 7x7 map into a Dense."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], name="/stem/conv/Conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        n("Relu", ["c1"], ["r1"], name="/stem/relu/Relu"),
        n("MaxPool", ["r1"], ["p1"], name="/pool/MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        n("Conv", ["p1", "w2"], ["c2"], name="/dw/Conv", group=8, pads=[1, 1, 1, 1], kernel_shape=[3, 3],
          strides=[2, 2]),
        n("BatchNormalization", ["c2", "g", "beta", "mean", "var"], ["bn"], name="/bn/BatchNormalization",
          epsilon=1e-3),
        n("HardSwish", ["bn"], ["hs"], name="/act/HardSwish"),
        n("GlobalAveragePool", ["hs"], ["gap"], name="/se/pool/GlobalAveragePool"),
        n("Conv", ["gap", "w3", "b3"], ["se"], name="/se/fc/Conv", kernel_shape=[1, 1]),
        n("HardSigmoid", ["se"], ["gate"], name="/se/gate/HardSigmoid", alpha=1 / 6, beta=0.5),
        n("Mul", ["hs", "gate"], ["scaled"], name="/se/Mul"),
        n("Flatten", ["scaled"], ["flat"], name="/flatten/Flatten", axis=1),
        n("Gemm", ["flat", "w4", "b4"], ["y"], name="/fc/Gemm", transB=1),
    ]
    var = numpy_helper.from_array(RNG.uniform(0.5, 2, 8).astype("float32"), "var")
    inits = [_init("w1", (8, 1, 3, 3)), _init("b1", (8,)), _init("w2", (8, 1, 3, 3)), _init("g", (8,)),
             _init("beta", (8,)), _init("mean", (8,)), var, _init("w3", (8, 8, 1, 1)), _init("b3", (8,)),
             _init("w4", (10, 8 * 7 * 7), 0.01), _init("b4", (10,))]
    return _model(nodes, inits, ["N", 1, 28, 28], ["N", 10], name="torch_jit")


def test_nchw_graph_imports_and_computes_the_same_on_mnist(tmp_path):
    onnx.save(_nchw_net(), tmp_path / "net.onnx")
    result = import_model(tmp_path / "net.onnx", tmp_path / "net.yaml", tmp_path / "net.weights.h5")
    compiled = compile_file(tmp_path / "net.yaml")
    layers = {layer.name: layer for layer in compiled.info.layers}
    assert compiled.spec.input.shape == [28, 28, 1] and compiled.spec.name == "net"
    assert layers["stem_conv"].output_shape == (None, 28, 28, 8)
    # A pad of 1 on each side before a 3x3/2 pool is not Keras's 'same' split: zeros first
    # (exact after a ReLU), then a valid pool.
    assert layers["pool_pad"].type == "ZeroPadding2D" and layers["pool"].output_shape == (None, 14, 14, 8)
    assert layers["dw"].type == "DepthwiseConv2D" and layers["act"].type == "Activation"
    assert layers["fc"].params == 8 * 7 * 7 * 10 + 10 and compiled.info.output_shape == (None, 10)

    import onnxruntime

    from cnncompile.backend.builder import build_model

    model = build_model(compiled.spec, preprocessing=False)
    model.load_weights(tmp_path / "net.weights.h5")
    images = mnist_images()
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": images.transpose(0, 3, 1, 2) / 255})[0]
    got = model.predict(images / 255, verbose=0)
    assert np.max(np.abs(got - expected)) <= 1e-4 and result.max_abs_diff is not None


def test_nhwc_input_transposes_disappear(tmp_path):
    n = helper.make_node
    nodes = [n("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             n("Conv", ["t", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             n("Transpose", ["c"], ["back"], perm=[0, 2, 3, 1]),
             n("Transpose", ["back"], ["again"], perm=[0, 3, 1, 2]),
             n("AveragePool", ["again"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    onnx.save(_model(nodes, [_init("w", (4, 3, 3, 3))], ["N", 8, 8, 3], ["N", 4, 4, 4]), tmp_path / "t.onnx")
    import_model(tmp_path / "t.onnx", tmp_path / "t.yaml", tmp_path / "t.weights.h5")
    compiled = compile_file(tmp_path / "t.yaml")
    assert compiled.spec.input.shape == [8, 8, 3]
    assert [(l.name, l.type) for l in compiled.info.layers] == [("conv", "Conv2D"), ("pool", "AveragePooling2D")]
    assert compiled.info.output_shape == (None, 4, 4, 4)


def test_refusal_lists_every_unsupported_node_and_writes_nothing(tmp_path):
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
             n("LRN", ["c"], ["l"], name="norm", size=3),
             n("Clip", ["c", "lo", "hi"], ["k"], name="clip"),
             n("MaxPool", ["c"], ["m"], name="pool", kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1]),
             n("Add", ["l", "k"], ["y"], name="add")]
    inits = [_init("w", (2, 1, 3, 3)), numpy_helper.from_array(np.float32(-1), "lo"),
             numpy_helper.from_array(np.float32(1), "hi")]
    model = _model(nodes, inits, ["N", 1, 8, 8], ["N", 2, 6, 6])
    onnx.save(model, tmp_path / "bad.onnx")
    out = tmp_path / "bad.yaml"
    result = CliRunner().invoke(main, ["import", str(tmp_path / "bad.onnx"), "-o", str(out)])
    assert result.exit_code == 1 and not out.exists()
    assert "node 'norm' (LRN): no layer of the language computes this op" in result.output
    assert "node 'clip' (Clip): Clip to [-1.0, 1.0]; only [0, max] is a ReLU" in result.output
    assert "node 'pool' (MaxPool): pads [1, 1, 1, 1] are not Keras's 'same'" in result.output
    assert "3 unsupported parts" in result.output and "Traceback" not in result.output


def test_spec_to_onnx_and_back_is_the_same_spec(tmp_path):
    """An imported spec -> `export --onnx` (tf2onnx) -> import: the same text, the same outputs."""
    from cnncompile.backend.builder import build_model
    from cnncompile.deploy import onnx_export
    from cnncompile.deploy.pipeline import ExportData, export_model

    original = compile_file(ROOT / "examples" / "mnist_inception.yaml")
    model = build_model(original.spec, preprocessing=False)
    rng = np.random.default_rng(1)  # non-zero biases, as trained ones are (tf2onnx drops zero ones)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "m.keras")
    first = import_model(tmp_path / "m.keras", tmp_path / "a.yaml", tmp_path / "a.weights.h5")
    compiled = compile_file(tmp_path / "a.yaml")
    imported = build_model(compiled.spec, preprocessing=False)
    imported.load_weights(tmp_path / "a.weights.h5")
    images = mnist_images(16)
    export_model(compiled, imported, onnx_export.FORMAT, tmp_path / "a.onnx", ExportData(images, "MNIST", None, None, None),
                 opset=17)
    second = import_model(tmp_path / "a.onnx", tmp_path / "b.yaml", tmp_path / "b.weights.h5")

    def body(text: str) -> list[str]:  # comments and the weights file's own name aside
        return [line for line in text.splitlines() if not line.startswith(("#", "weights:"))]

    assert first.blocks == second.blocks == ["mixed"]
    assert body(second.text) == body(first.text)
    again = build_model(compile_file(tmp_path / "b.yaml").spec, preprocessing=False)
    again.load_weights(tmp_path / "b.weights.h5")
    assert np.max(np.abs(again.predict(images, verbose=0) - model.predict(images, verbose=0))) <= 1e-4


@pytest.mark.parametrize("garbage", [b"", b"\x08\x01garbage"])
def test_unreadable_onnx_is_one_clean_error(tmp_path, garbage):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(garbage)
    result = CliRunner().invoke(main, ["import", str(bad), "-o", str(tmp_path / "m.yaml")])
    assert result.exit_code == 1 and result.output.startswith("error:") and "Traceback" not in result.output


def test_onnx_import_without_weights_needs_no_tensorflow(tmp_path):
    from tests.conftest import modules_imported_by

    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3]), n("Relu", ["c"], ["y"], name="relu")]
    onnx.save(_model(nodes, [_init("w", (2, 1, 3, 3))], ["N", 1, 8, 8], ["N", 2, 6, 6]), tmp_path / "m.onnx")
    imported = modules_imported_by("import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"),
                                   watch=("tensorflow", "keras", "torch"))
    assert imported == [] and (tmp_path / "m.yaml").exists()
