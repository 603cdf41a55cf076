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

from cnncompile import __version__
from cnncompile.backend.builder import BackendMismatch, build_model, cross_check
from cnncompile.deploy.int8 import Int8Capability
from cnncompile.analysis.check import CompiledSpec
from cnncompile.deploy.measure import interleaved_throughput
from cnncompile.deploy.predict import METADATA_SHAPE, Classifier, OnnxClassifier
from cnncompile.files import write_bytes
from cnncompile.language.graph import Node

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
    """Float parity: the exported file against Keras on the same images."""

    batch_sizes: list[int]
    max_abs_diff: float
    argmax_agreement: float
    images: int
    source: str


@dataclass
class AccuracyCheck:
    """An int8 file against its float reference, top-1 on labeled test images."""

    reference: str  # what the int8 model is compared with ("float ONNX", "Keras")
    reference_accuracy: float
    accuracy: float
    argmax_agreement: float
    images: int
    source: str
    max_drop_points: float

    @property
    def drop_points(self) -> float:
        return 100 * (self.reference_accuracy - self.accuracy)

    def as_metadata(self) -> str:
        return json.dumps({"test_images": self.images, "source": self.source, "reference": self.reference,
                           "reference_accuracy": self.reference_accuracy, "accuracy": self.accuracy,
                           "argmax_agreement": self.argmax_agreement, "max_drop_points": self.max_drop_points})


@dataclass
class ExportResult:
    path: Path
    opset: int | None  # ONNX only
    verification: Verification | None  # float parity (also checked before quantizing)
    metadata: dict[str, str] = field(default_factory=dict)
    accuracy: AccuracyCheck | None = None  # int8 only
    comparison: SizeAndSpeed | None = None  # int8 only: against the float file of the same format
    description: str = "ONNX float32"


@dataclass
class ExportData:
    """Which images verify an export and calibrate quantization: export policy, kept here so that
    library callers get the same checks as the CLI."""

    parity_images: np.ndarray  # uint8 (n, H, W, C): Keras vs the file, max |diff| and argmax
    parity_source: str
    labels: tuple[str, ...] | None
    test: tuple[np.ndarray, np.ndarray] | None  # the labeled test set, for int8 accuracy
    train_images: np.ndarray | None  # calibration draws from these, never from the test set
    name: str = ""
    missing: str = ""  # why the dataset could not be loaded, when it could not

    def require_dataset(self, why: str) -> None:
        if self.test is None or self.train_images is None:
            raise ExportError(f"{why} needs the spec's dataset (training images to calibrate, labeled test "
                              f"images to verify accuracy), which could not be loaded: {self.missing}")


PARITY_IMAGES = 64


def export_data(compiled: CompiledSpec, data_dir: Path | None = None) -> ExportData:
    """Real images from the spec's dataset when it can be found; else seeded noise for float parity
    (said so), and nothing for int8, which must refuse without labeled data."""
    from cnncompile.data.datasets import load_dataset
    from cnncompile.data.formats import DataError

    training = compiled.spec.training
    missing = "the spec has no training: section"
    if training is not None:
        try:
            data = load_dataset(training.dataset, data_dir=data_dir, spec_dir=compiled.path.parent,
                                image_shape=tuple(compiled.spec.input.shape))
            return ExportData(data.x_test[:PARITY_IMAGES], f"{data.name} test images", data.labels,
                              (data.x_test, data.y_test), data.x_train, data.name)
        except DataError as exc:
            missing = str(exc)
    noise = np.random.default_rng(0).integers(0, 256, (PARITY_IMAGES, *compiled.spec.input.shape), dtype=np.uint8)
    return ExportData(noise, "random images (the dataset was not found)", None, None, None, missing=missing)


def calibration_sample(train_images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A fixed, seeded sample of training images (sorted indices: the same set whatever the order)."""
    rng = np.random.default_rng(seed)
    return train_images[np.sort(rng.choice(len(train_images), min(count, len(train_images)), replace=False))]


SPEED_BATCHES = (1, 64)


@dataclass
class SizeAndSpeed:
    """An int8 file against the float one of the same format, measured on this machine."""

    cpu: Int8Capability
    float_bytes: int
    int8_bytes: int
    images_per_second: dict[int, dict[str, float]]  # batch -> {"float": ..., "int8": ...}

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / self.float_bytes

    def speedup(self, batch: int) -> float:
        rates = self.images_per_second[batch]
        return rates["int8"] / rates["float"]

    def lines(self) -> list[str]:
        lines = [f"size: {self.int8_bytes:,} bytes, {self.size_ratio:.2f}x the float file's {self.float_bytes:,}",
                 f"CPU: {self.cpu.describe()}"]
        for batch, rates in self.images_per_second.items():
            ratio = self.speedup(batch)
            verdict = "faster" if ratio > 1 else "not faster: slower" if ratio < 1 else "the same"
            lines.append(f"batch {batch}: int8 {rates['int8']:,.0f} images/s vs float {rates['float']:,.0f} "
                         f"({ratio:.2f}x, {verdict}; medians of interleaved runs here)")
        return lines


def compare_int8(cpu: Int8Capability, float_model: Classifier, int8_model: Classifier, float_bytes: int,
                 int8_bytes: int, images: np.ndarray, rounds: int) -> SizeAndSpeed:
    runners = {"float": float_model.run, "int8": int8_model.run}
    return SizeAndSpeed(cpu, float_bytes, int8_bytes,
                        interleaved_throughput(runners, images.astype(np.float32), SPEED_BATCHES, rounds))


def measured_metadata(accuracy: AccuracyCheck, comparison: SizeAndSpeed) -> dict[str, str]:
    """What an int8 file records of its own verification and measurement."""
    return {"cnncompile.accuracy": accuracy.as_metadata(),
            "cnncompile.measured": json.dumps({
                "float_bytes": comparison.float_bytes, "cpu": comparison.cpu.describe(),
                "images_per_second": {str(batch): {name: round(rate, 1) for name, rate in rates.items()}
                                      for batch, rates in comparison.images_per_second.items()}})}


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
    """The spec's model as built, with its `weights:` loaded when it has them (export --untrained
    of such a spec is how a Keras file becomes a verified ONNX or TFLite file without training)."""
    keras.utils.set_random_seed(seed)
    model = build_model(compiled.spec)
    cross_check(model, compiled.info)
    if compiled.spec.weights is not None:
        from cnncompile.backend.weights import WeightsProblem, load_weights

        try:
            load_weights(model, compiled.spec, base_dir=compiled.path.parent)
        except WeightsProblem as exc:
            raise ExportError("weights: " + "; ".join(exc.problems), ("weights",)) from None
    return model


def export_onnx(compiled: CompiledSpec, model: keras.Model, out: Path, images: np.ndarray, image_source: str,
                *, opset: int = DEFAULT_OPSET, labels: tuple[str, ...] | None = None,
                untrained: bool = False) -> ExportResult:
    """Convert, rename, annotate, check and verify; write `out` atomically only if all pass."""
    metadata = model_metadata(compiled, labels, untrained)
    data = convert_onnx(compiled, model, metadata, opset)
    verification = verify_parity(model, OnnxClassifier(data, name=out.name), images, image_source, "ONNX")
    write_bytes(out, data)
    return ExportResult(out, opset, verification, metadata, description=f"ONNX float32, opset {opset}")


def model_metadata(compiled: CompiledSpec, labels: tuple[str, ...] | None, untrained: bool) -> dict[str, str]:
    """What every exported file says about itself, whatever the format (predict reads these keys)."""
    spec = compiled.spec
    classes = compiled.info.output_shape[-1]
    return {
        "cnncompile.spec_name": spec.name,
        "cnncompile.spec_sha256": compiled.sha256,
        "cnncompile.labels": json.dumps(list(labels) if labels else [str(i) for i in range(classes)]),
        "cnncompile.input_layout": "NHWC",
        METADATA_SHAPE: json.dumps(list(spec.input.shape)),
        "cnncompile.input_range": "0-255 (raw pixels; the model scales them)" if spec.input.scaled or spec.input.preprocessing else "as trained",
        # A spec with `weights:` exports its loaded weights even without a run: not untrained.
        "cnncompile.untrained": "true" if untrained and spec.weights is None else "false",
        "cnncompile.precision": "float32",
        "cnncompile.version": __version__,
        "keras.version": keras.__version__,
    }


def convert_onnx(compiled: CompiledSpec, model: keras.Model, metadata: dict[str, str], opset: int) -> bytes:
    """The Keras model as checked ONNX bytes: stable names, `metadata`, output shape as inferred."""
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
    return graph.SerializeToString()


def verify_parity(model: keras.Model, exported: Classifier, images: np.ndarray, source: str,
                  what: str) -> Verification:
    """Keras and the exported file, in the runtime that deploys it, must agree on real images at
    batch 1 and an odd batch size (dynamic batch axis, no padding assumptions)."""
    x = images.astype(np.float32)
    worst, agree, total = 0.0, 0, 0
    odd = min(len(x), 37)
    for batch in (x[:1], x[:odd]):
        expected = np.asarray(model(batch, training=False))
        got = exported.run(batch)
        worst = max(worst, float(np.abs(expected - got).max()))
        agree += int((expected.argmax(1) == got.argmax(1)).sum())
        total += len(batch)
    result = Verification([1, odd], worst, agree / total, total, source)
    if worst > MAX_ABS_DIFF or agree != total:
        raise ExportError(f"verification failed: max |diff| {worst:.3g} (limit {MAX_ABS_DIFF:g}), argmax agreement "
                          f"{agree}/{total} on {source}; the {what} file was not written")
    return result


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


def verify_accuracy(reference: np.ndarray, reference_name: str, quantized: Classifier,
                    test: tuple[np.ndarray, np.ndarray], source: str, max_drop_points: float,
                    what: str) -> AccuracyCheck:
    """Top-1 accuracy of the int8 file against its float reference's probabilities on the same
    labeled images; refuse when it drops by more than `max_drop_points` percentage points."""
    images, truth = test
    got = quantized.probabilities(images).argmax(1)
    expected = reference.argmax(1)
    check = AccuracyCheck(reference_name, float((expected == truth).mean()), float((got == truth).mean()),
                          float((got == expected).mean()), len(images), source, max_drop_points)
    if check.drop_points > max_drop_points:
        raise ExportError(f"int8 accuracy check failed: top-1 {check.accuracy:.4f} against {reference_name} "
                          f"{check.reference_accuracy:.4f} on {check.images:,} {source}, a drop of "
                          f"{check.drop_points:.2f} points (limit {max_drop_points:g}); argmax agreement "
                          f"{check.argmax_agreement:.2%}; the {what} file was not written")
    return check


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
