"""`cnncompile export --onnx`: the trained Keras model as a verified, self-describing ONNX file.

Conversion goes through Keras 3's own `model.export(format="onnx")` (tf2onnx's
`from_function` with an explicit input signature underneath); tf2onnx's `from_keras`
fails on Keras 3 models (onnx/tensorflow-onnx#2329, #2348). The graph is then given
stable names (input `image` with a dynamic `batch` axis, output `probabilities`) and
checked; deploy/pipeline.py adds the metadata, verifies it against Keras on real images and
writes it. `FORMAT` at the end is this format's row in that pipeline.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from pathlib import Path

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras
import numpy as np
import onnx

from cnncompile.analysis.check import CompiledSpec
from cnncompile.deploy.int8 import Int8Capability, Int8Options
from cnncompile.deploy.pipeline import ExportError, ExportFormat, Quantized
from cnncompile.deploy.predict import OnnxClassifier
from cnncompile.language.graph import Node

INPUT_NAME, OUTPUT_NAME, BATCH = "image", "probabilities", "batch"


def convert_onnx(compiled: CompiledSpec, model: keras.Model, opset: int) -> bytes:
    """The Keras model as checked ONNX bytes: stable names, output shape as inferred."""
    spec = compiled.spec
    model(np.zeros((1, *spec.input.shape), np.float32))  # Keras exports only models that have been called
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        try:
            with warnings.catch_warnings():  # Keras's tf2onnx shim probes np.object (FutureWarning)
                warnings.simplefilter("ignore", FutureWarning)
                model.export(str(raw_path), format="onnx", opset_version=opset, verbose=False)
        except Exception as exc:  # noqa: BLE001 - tf2onnx raises assorted errors
            raise _conversion_error(exc, compiled, opset) from None
        graph = onnx.load(str(raw_path))
    _inline_captured_constants(graph, model, compiled)
    _rename_io(graph)
    _refuse_unconverted_ops(graph, compiled, opset)
    _constant_reshape_shapes(graph)
    classes = compiled.info.output_shape[-1]
    graph.producer_name, graph.doc_string = "cnncompile", f"{spec.name} compiled from {compiled.path.name}"
    try:
        onnx.checker.check_model(graph, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(graph, strict_mode=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"the exported graph fails ONNX's checker: {exc}") from None
    out_shape = _shape_of(inferred.graph.output[0])
    if out_shape != [BATCH, classes]:
        raise ExportError(f"ONNX shape inference gives output {out_shape}, but check computed [batch, {classes}]")
    return graph.SerializeToString()


# Tensors a layer keeps as plain attributes rather than variables (Normalization's mean and
# variance) are captured by the traced function, and tf2onnx turns captures into graph
# *inputs* named <model>/<layer>/<Op>/<operand>:0. Which attribute each one holds:
_CAPTURED = {("Sub", "y"): "mean", ("Add", "y"): "mean", ("Sqrt", "x"): "variance"}


def _inline_captured_constants(graph: onnx.ModelProto, model: keras.Model, compiled: CompiledSpec) -> None:
    """Turn captured-constant inputs back into initializers holding the layer's values; the
    parity check afterwards proves the values are the right ones."""
    initializers = {t.name for t in graph.graph.initializer}
    inputs = [i for i in graph.graph.input if i.name not in initializers]
    for graph_input in inputs[1:]:  # the first is the image
        parts = graph_input.name.removesuffix(":0").split("/")
        node = _spec_node(graph_input.name, compiled)
        attribute = _CAPTURED.get(tuple(parts[-2:]))
        if node is None or attribute is None:
            raise ExportError(f"the converter left an unexpected graph input '{graph_input.name}'; "
                              "please report this spec")
        value = np.asarray(getattr(model.get_layer(node.name), attribute), np.float32)
        graph.graph.initializer.append(onnx.numpy_helper.from_array(value, graph_input.name))
        graph.graph.input.remove(graph_input)


def _rename_io(graph: onnx.ModelProto) -> None:
    """Input `image` with a dynamic axis named `batch`; output `probabilities`."""
    (graph_input,) = [i for i in graph.graph.input if i.name not in {t.name for t in graph.graph.initializer}]
    old_in = graph_input.name
    graph_input.name = INPUT_NAME
    graph_input.type.tensor_type.shape.dim[0].dim_param = BATCH
    (graph_output,) = graph.graph.output
    old_out = graph_output.name
    graph_output.name = OUTPUT_NAME
    graph_output.type.tensor_type.shape.dim[0].dim_param = BATCH
    for node in graph.graph.node:
        node.input[:] = [INPUT_NAME if n == old_in else OUTPUT_NAME if n == old_out else n for n in node.input]
        node.output[:] = [OUTPUT_NAME if n == old_out else n for n in node.output]


def _constant_reshape_shapes(graph: onnx.ModelProto) -> None:
    """tf2onnx computes Flatten's target shape at run time (Shape -> Gather -> Concat on the
    tensor being flattened). Where ONNX's shape inference (with data propagation) knows every
    output dimension but one (the batch), the Reshape gets a constant shape with -1 there
    instead, and the shape arithmetic, now unused, is removed. Besides saving ops, this lets
    int8 quantization fuse the convolution before a Flatten: onnxruntime fuses a QDQ Conv only
    when its output feeds nothing but its QuantizeLinear, and the Shape node reading it kept
    that convolution in float (measured: the seed model's last Conv)."""
    inferred = onnx.shape_inference.infer_shapes(graph, data_prop=True).graph
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in (*inferred.value_info, *inferred.output)}
    constants = {t.name for t in graph.graph.initializer}
    for node in graph.graph.node:
        shape = dims.get(node.output[0]) if node.op_type == "Reshape" else None
        if not shape or node.input[1] in constants or shape.count(None) != 1 or 0 in shape:
            continue  # 0 would mean "copy this dimension" to Reshape
        name = f"{node.name}/constant_shape"
        graph.graph.initializer.append(onnx.numpy_helper.from_array(
            np.array([-1 if d is None else d for d in shape], np.int64), name))
        node.input[1] = name
    needed = {o.name for o in graph.graph.output}
    kept = []
    for node in reversed(graph.graph.node):  # nodes are in topological order
        if needed & set(node.output):
            kept.append(node)
            needed |= set(node.input)
    del graph.graph.node[:]
    graph.graph.node.extend(reversed(kept))
    unused = [t for t in graph.graph.initializer if t.name not in needed]
    for tensor in unused:
        graph.graph.initializer.remove(tensor)


def _refuse_unconverted_ops(graph: onnx.ModelProto, compiled: CompiledSpec, opset: int) -> None:
    """tf2onnx leaves TensorFlow ops it cannot map (gelu's Erfc, celu's Expm1) in the graph as
    they are; name the layer they came from instead of letting ONNX's checker fail vaguely."""
    for node in graph.graph.node:
        if onnx.defs.has(node.op_type, node.domain or ""):
            continue
        source = _spec_node(node.name, compiled)
        where = f"node {node.name}"
        if source is not None:
            activation = getattr(source.layer, "activation", None)
            where = f"layer '{source.name}' ({source.layer.type}){f' (activation {activation})' if activation else ''}"
        raise ExportError(f"{where} cannot be exported at opset {opset}: its TensorFlow op {node.op_type} has no "
                          "ONNX operator and tf2onnx left it unconverted; use another activation (relu, swish, "
                          "elu, ...) or layer for a deployable model", path=source.path if source else None)


def _spec_node(node_name: str, compiled: CompiledSpec) -> Node | None:
    """The spec layer a graph node came from. Node names are TensorFlow name scopes, e.g.
    'mnist_cnn_1/conv2d_1/Gelu/Erfc'; when the model's own scope got a _N suffix (a later
    trace), every layer scope got one too."""
    parts = node_name.split("/")
    by_name = {node.name: node for node in compiled.spec.graph()}
    retraced = parts[0] != compiled.spec.name and re.sub(r"_\d+$", "", parts[0]) == compiled.spec.name
    for part in parts[1:]:
        name = re.sub(r"_\d+$", "", part) if retraced else part
        if name in by_name:
            return by_name[name]
    return None


def _shape_of(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _conversion_error(exc: Exception, compiled: CompiledSpec, opset: int) -> ExportError:
    """Name the layer whose op the opset cannot express, when the converter's message says."""
    text = str(exc)
    first = text.splitlines()[0][:300] if text else ""
    for node in compiled.spec.graph():
        if re.search(rf"(^|[/\s'\"]){re.escape(node.name)}(/|\b)", text):
            return ExportError(f"layer '{node.name}' ({node.layer.type}) cannot be exported at opset {opset}: {first}",
                               path=node.path)
    return ExportError(f"conversion to ONNX (opset {opset}) failed: {type(exc).__name__}: {first}")


def with_onnx_metadata(content: bytes, metadata: dict[str, str]) -> bytes:
    """ONNX keeps metadata as the model's metadata_props (string keys and values), replaced whole."""
    graph = onnx.load_from_string(content)
    onnx.helper.set_model_props(graph, metadata)
    return graph.SerializeToString()


def _quantize(compiled: CompiledSpec, model: keras.Model, float_bytes: bytes, calibration: np.ndarray,
              cpu: Int8Capability, options: Int8Options) -> Quantized:
    from cnncompile.deploy.onnx_int8 import quantize_onnx  # onnxruntime's quantization tooling, only for --int8

    return quantize_onnx(float_bytes, calibration, cpu, options)


FORMAT = ExportFormat("ONNX", convert_onnx, _quantize, with_onnx_metadata, OnnxClassifier,
                      "ONNX float32, opset {opset}", has_opset=True)
