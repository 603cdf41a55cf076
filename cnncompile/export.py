"""`cnncompile export --onnx`: the trained Keras model as a verified, self-describing ONNX file.

Conversion goes through Keras 3's own `model.export(format="onnx")` (tf2onnx's
`from_function` with an explicit input signature underneath); tf2onnx's `from_keras`
fails on Keras 3 models (onnx/tensorflow-onnx#2329, #2348). The graph is then given
stable names (input `image` with a dynamic `batch` axis, output `probabilities`) and
metadata, checked, and verified against Keras on real images before it is written.
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras
import numpy as np
import onnx
import onnxruntime as ort

from cnncompile import __version__
from cnncompile.backend.builder import BackendMismatch, build_model, cross_check
from cnncompile.frontend import CompiledSpec
from cnncompile.rundir import write_bytes
from cnncompile.spec.graph import Node

INPUT_NAME, OUTPUT_NAME, BATCH = "image", "probabilities", "batch"
MAX_ABS_DIFF = 1e-4
DEFAULT_OPSET = 17


class ExportError(Exception):
    """Export refused or failed verification; nothing was written."""

    def __init__(self, message: str, path: tuple | None = None):
        super().__init__(message)
        self.path = path  # where the spec layer at fault is written, for a located error


@dataclass
class Verification:
    batch_sizes: list[int]
    max_abs_diff: float
    argmax_agreement: float
    images: int
    source: str


@dataclass
class ExportResult:
    path: Path
    opset: int
    verification: Verification
    metadata: dict[str, str] = field(default_factory=dict)


def load_trained(compiled: CompiledSpec, run_dir: Path) -> keras.Model:
    path = run_dir / "model.keras"
    if not path.exists():
        raise ExportError(f"no trained model in {run_dir}/ (model.keras is missing); run "
                          f"`cnncompile train {compiled.path}` first, or pass --run DIR or --untrained")
    try:
        model = keras.models.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt file can fail in many ways
        raise ExportError(f"{path} cannot be loaded ({type(exc).__name__}: {exc})") from None
    try:
        cross_check(model, compiled.info)  # the run must belong to this spec
    except (BackendMismatch, ValueError) as exc:
        raise ExportError(f"{path} was not trained from this spec (retrain it, or pass --run DIR): "
                          f"{str(exc).removeprefix('internal error: ')}") from None
    return model


def fresh_model(compiled: CompiledSpec, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = build_model(compiled.spec)
    cross_check(model, compiled.info)
    return model


def export_onnx(compiled: CompiledSpec, model: keras.Model, out: Path, images: np.ndarray, image_source: str,
                *, opset: int = DEFAULT_OPSET, labels: tuple[str, ...] | None = None,
                untrained: bool = False) -> ExportResult:
    """Convert, rename, annotate, check and verify; write `out` atomically only if all pass."""
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
    _rename_io(graph)
    _refuse_unconverted_ops(graph, compiled, opset)
    classes = compiled.info.output_shape[-1]
    metadata = {
        "cnncompile.spec_name": spec.name,
        "cnncompile.spec_sha256": compiled.sha256,
        "cnncompile.labels": json.dumps(list(labels) if labels else [str(i) for i in range(classes)]),
        "cnncompile.input_layout": "NHWC",
        "cnncompile.input_shape": json.dumps(list(spec.input.shape)),
        "cnncompile.input_range": "0-255 (raw pixels; the model scales them)" if spec.input.scale != 1 else "as trained",
        "cnncompile.untrained": "true" if untrained else "false",
        "cnncompile.version": __version__,
        "keras.version": keras.__version__,
    }
    onnx.helper.set_model_props(graph, metadata)
    graph.producer_name, graph.doc_string = "cnncompile", f"{spec.name} compiled from {compiled.path.name}"
    try:
        onnx.checker.check_model(graph, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(graph, strict_mode=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"the exported graph fails ONNX's checker: {exc}") from None
    out_shape = _shape_of(inferred.graph.output[0])
    if out_shape != [BATCH, classes]:
        raise ExportError(f"ONNX shape inference gives output {out_shape}, but check computed [batch, {classes}]")
    data = graph.SerializeToString()
    verification = verify(model, data, images, image_source)
    write_bytes(out, data)
    return ExportResult(out, opset, verification, metadata)


def verify(model: keras.Model, onnx_bytes: bytes, images: np.ndarray, source: str) -> Verification:
    """Keras and onnxruntime must agree on real images at batch 1 and an odd batch size."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    x = images.astype(np.float32)
    worst, agree, total = 0.0, 0, 0
    odd = min(len(x), 37)
    for batch in (x[:1], x[:odd]):
        expected = np.asarray(model(batch, training=False))
        got = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        worst = max(worst, float(np.abs(expected - got).max()))
        agree += int((expected.argmax(1) == got.argmax(1)).sum())
        total += len(batch)
    result = Verification([1, odd], worst, agree / total, total, source)
    if worst > MAX_ABS_DIFF or agree != total:
        raise ExportError(f"verification failed: max |diff| {worst:.3g} (limit {MAX_ABS_DIFF:g}), argmax agreement "
                          f"{agree}/{total} on {source}; the ONNX file was not written")
    return result


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
