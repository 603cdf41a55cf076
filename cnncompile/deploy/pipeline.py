"""The one export pipeline, whatever the format: convert, verify, (quantize, verify, measure), write.

Every format (ONNX, TFLite; float or int8) walks the same steps with the same images:

1. convert the Keras model to the format's float file and attach the metadata `predict` reads;
2. parity: the float file, run in the runtime that deploys it, must match Keras on real test
   images (max |diff| <= 1e-4, same argmax) at batch 1 and an odd batch size;
3. int8 only: quantize, calibrated on a seeded sample of *training* images; the int8 file's
   top-1 accuracy on the labeled test set must stay within the allowed drop of the float
   file's (same format, same images); size and throughput against the float file are measured
   on this machine and recorded, with a plain verdict when int8 is not faster here;
4. write the file atomically, only once every check above passed.

A format is a row (`ExportFormat`): its converter, its quantizer, how it stores metadata and
which classifier runs it. Everything else lives here once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras
import numpy as np

from cnncompile import __version__
from cnncompile.analysis.check import CompiledSpec
from cnncompile.backend.builder import BackendMismatch, build_model, cross_check
from cnncompile.data.sources import ArraySplit, Split
from cnncompile.deploy.int8 import Int8Capability, Int8Options, int8_capability
from cnncompile.deploy.measure import interleaved_throughput
from cnncompile.deploy.predict import METADATA_MEAN, METADATA_SHAPE, Classifier
from cnncompile.files import write_bytes

MAX_ABS_DIFF = 1e-4
PARITY_IMAGES = 64
# A streamed split's brightness (predict's metadata) and int8 speed come from its first images.
MEAN_IMAGES = 1000
SPEED_IMAGES = 1024
SPEED_BATCHES = (1, 64)
DEFAULT_OPSET = 17  # ONNX only


class ExportError(Exception):
    """Export refused or failed verification; nothing was written."""

    def __init__(self, message: str, path: tuple | None = None):
        super().__init__(message)
        self.path = path  # where the spec layer at fault is written, for a located error


@dataclass
class Quantized:
    """What a format's quantizer returns: the int8 file (without cnncompile metadata), the settings
    it used (recorded in the file), and how to describe the file to a user."""

    content: bytes
    settings: dict
    description: str


@dataclass(frozen=True)
class ExportFormat:
    """One deployment format: the only things that differ between ONNX and TFLite."""

    name: str  # as users read it: "ONNX", "TFLite"
    convert: Callable[[CompiledSpec, keras.Model, int], bytes]  # float file, no metadata (int: ONNX opset)
    quantize: Callable[[CompiledSpec, keras.Model, bytes, np.ndarray, Int8Capability, Int8Options], Quantized]
    with_metadata: Callable[[bytes, dict[str, str]], bytes]  # the converter's bytes + cnncompile metadata
    classifier: Callable[..., Classifier]  # (bytes, name=...) -> runs it as `predict` does
    float_description: str  # "{opset}" is filled in
    has_opset: bool = False


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

    reference: str  # what the int8 model is compared with ("float ONNX", "float TFLite")
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


@dataclass(frozen=True)
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
        verdict = speed_verdict(self.images_per_second)
        if verdict:
            lines.append(f"note: {verdict}")
        return lines


def slower_batches(speeds: dict[int, dict[str, float]]) -> list[int]:
    return [batch for batch, rates in speeds.items() if rates["int8"] < rates["float"]]


def speed_verdict(speeds: dict[int, dict[str, float]]) -> str | None:
    """A plain sentence when int8 does not pay in speed here (None when it is faster everywhere):
    int8 is not faster on every CPU (no VNNI; or a model too small for int8 kernels to win)."""
    slower = slower_batches(speeds)
    if not slower:
        return None
    ratios = ", ".join(f"{speeds[b]['int8'] / speeds[b]['float']:.2f}x at batch {b}" for b in slower)
    return (f"int8 is slower than the float file on this CPU ({ratios}): it pays in size here, not in speed; "
            "keep the float file where speed matters")


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
    # The labeled test set, for int8 accuracy: a split (data/sources.py), streamed in batches,
    # or (images, labels) arrays.
    test: Split | tuple[np.ndarray, np.ndarray] | None
    train_images: Split | np.ndarray | None  # calibration draws from these, never from the test set
    name: str = ""
    missing: str = ""  # why the dataset could not be loaded, when it could not

    def __post_init__(self):
        classes = tuple(self.labels or ())
        if isinstance(self.test, tuple):
            self.test = ArraySplit(*self.test, classes)
        if isinstance(self.train_images, np.ndarray):
            self.train_images = ArraySplit(self.train_images, np.zeros(len(self.train_images), np.int64), classes)

    def require_dataset(self, why: str) -> None:
        if self.test is None or self.train_images is None:
            raise ExportError(f"{why} needs the spec's dataset (training images to calibrate, labeled test "
                              f"images to verify accuracy), which could not be loaded: {self.missing}")


def export_data(compiled: CompiledSpec, data_dir: Path | None = None) -> ExportData:
    """Real images from the spec's dataset when it can be found; else seeded noise for float parity
    (said so), and nothing for int8, which must refuse without labeled data."""
    from cnncompile.data.datasets import load_dataset
    from cnncompile.data.formats import DataError

    training = compiled.spec.training
    missing = "the spec has no training: section"
    if training is not None:
        try:
            # The training seed: it decides a single image folder's test split.
            data = load_dataset(training.dataset, data_dir=data_dir, spec_dir=compiled.path.parent,
                                image_shape=tuple(compiled.spec.input.shape), seed=training.seed)
            return ExportData(data.test.take(PARITY_IMAGES), f"{data.name} test images", data.labels,
                              data.test, data.train, data.name)
        except DataError as exc:
            missing = str(exc)
    noise = np.random.default_rng(0).integers(0, 256, (PARITY_IMAGES, *compiled.spec.input.shape), dtype=np.uint8)
    return ExportData(noise, "random images (the dataset was not found)", None, None, None, missing=missing)


def calibration_sample(train_images: Split | np.ndarray, count: int, seed: int) -> np.ndarray:
    """A fixed, seeded sample of training images (sorted indices: the same set whatever the
    order); a streamed split decodes only these."""
    total = train_images.count if isinstance(train_images, Split) else len(train_images)
    indices = np.sort(np.random.default_rng(seed).choice(total, min(count, total), replace=False))
    return train_images.gather(indices) if isinstance(train_images, Split) else train_images[indices]


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


def model_metadata(compiled: CompiledSpec, data: ExportData, untrained: bool) -> dict[str, str]:
    """What every exported file says about itself, whatever the format (predict reads these keys)."""
    spec = compiled.spec
    classes = compiled.info.output_shape[-1]
    metadata = {
        "cnncompile.spec_name": spec.name,
        "cnncompile.spec_sha256": compiled.sha256,
        "cnncompile.labels": json.dumps(list(data.labels) if data.labels else [str(i) for i in range(classes)]),
        "cnncompile.input_layout": "NHWC",
        METADATA_SHAPE: json.dumps(list(spec.input.shape)),
        "cnncompile.input_range": "0-255 (raw pixels; the model scales them)" if spec.input.scaled or spec.input.preprocessing else "as trained",
        # A spec with `weights:` exports its loaded weights even without a run: not untrained.
        "cnncompile.untrained": "true" if untrained and spec.weights is None else "false",
        "cnncompile.precision": "float32",
        "cnncompile.version": __version__,
        "keras.version": keras.__version__,
    }
    if data.train_images is not None and data.train_images.count:
        # predict compares an image's brightness with this (light digits on dark, or the reverse)
        metadata[METADATA_MEAN] = f"{float(_first_images(data.train_images, MEAN_IMAGES).mean()):.1f}"
    return metadata


def _first_images(split: Split, streamed: int) -> np.ndarray:
    """All of a split held in memory (as always); the first `streamed` of one that streams."""
    return split.take(split.count if split.in_memory else streamed)


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


def verify_accuracy(reference: Classifier, reference_name: str, quantized: Classifier, test: Split,
                    source: str, max_drop_points: float, what: str) -> AccuracyCheck:
    """Top-1 accuracy of the int8 file against its float reference on the same labeled images,
    streamed batch by batch; refuse when it drops by more than `max_drop_points` percentage points."""
    got, expected, truth = [], [], []
    for images, labels in test.numpy_batches():
        got.append(quantized.probabilities(images).argmax(1))
        expected.append(reference.probabilities(images).argmax(1))
        truth.append(labels)
    got, expected, truth = (np.concatenate(parts) for parts in (got, expected, truth))
    check = AccuracyCheck(reference_name, float((expected == truth).mean()), float((got == truth).mean()),
                          float((got == expected).mean()), len(truth), source, max_drop_points)
    if check.drop_points > max_drop_points:
        raise ExportError(f"int8 accuracy check failed: top-1 {check.accuracy:.4f} against {check.reference} "
                          f"{check.reference_accuracy:.4f} on {check.images:,} {source}, a drop of "
                          f"{check.drop_points:.2f} points (limit {max_drop_points:g}); argmax agreement "
                          f"{check.argmax_agreement:.2%}; the {what} file was not written")
    return check


def measured_metadata(accuracy: AccuracyCheck, float_bytes: int, cpu: Int8Capability,
                      speeds: dict[int, dict[str, float]]) -> dict[str, str]:
    """What an int8 file records of its own verification and measurement (its own size is the file's)."""
    return {"cnncompile.accuracy": accuracy.as_metadata(),
            "cnncompile.measured": json.dumps({
                "float_bytes": float_bytes, "cpu": cpu.describe(),
                "images_per_second": {str(batch): {name: round(rate, 1) for name, rate in rates.items()}
                                      for batch, rates in speeds.items()},
                "int8_slower_at_batches": slower_batches(speeds), "verdict": speed_verdict(speeds)})}


def export_model(compiled: CompiledSpec, model: keras.Model, fmt: ExportFormat, out: Path, data: ExportData, *,
                 int8: bool = False, untrained: bool = False, opset: int = DEFAULT_OPSET,
                 options: Int8Options = Int8Options()) -> ExportResult:
    """Convert, verify, (quantize, verify, measure), then write `out` atomically; raises
    ExportError, with nothing written, when any step says no."""
    if int8:
        data.require_dataset("--int8")
    metadata = model_metadata(compiled, data, untrained)
    float_bytes = fmt.with_metadata(fmt.convert(compiled, model, opset), metadata)
    float_model = fmt.classifier(float_bytes, name=f"float {fmt.name}")
    verification = verify_parity(model, float_model, data.parity_images, data.parity_source, fmt.name)
    used_opset = opset if fmt.has_opset else None
    if not int8:
        write_bytes(out, float_bytes)
        return ExportResult(out, used_opset, verification, metadata,
                            description=fmt.float_description.format(opset=opset))

    cpu = int8_capability()
    calibration = calibration_sample(data.train_images, options.calibration_images, options.calibration_seed)
    quantized = fmt.quantize(compiled, model, float_bytes, calibration, cpu, options)
    settings = {**quantized.settings, "calibration_images": len(calibration),
                "calibration_seed": options.calibration_seed,
                "calibration_source": f"{data.name} training images", "cpu": cpu.describe()}
    int8_metadata = {**metadata, "cnncompile.precision": "int8", "cnncompile.quantization": json.dumps(settings)}
    int8_model = fmt.classifier(fmt.with_metadata(quantized.content, int8_metadata), name=f"int8 {fmt.name}")
    accuracy = verify_accuracy(float_model, f"float {fmt.name}", int8_model, data.test, f"{data.name} test images",
                               options.max_accuracy_drop, f"int8 {fmt.name}")
    images = _first_images(data.test, SPEED_IMAGES).astype(np.float32)
    speeds = interleaved_throughput({"float": float_model.run, "int8": int8_model.run}, images, SPEED_BATCHES,
                                    options.measure_rounds)
    int8_metadata |= measured_metadata(accuracy, len(float_bytes), cpu, speeds)
    final = fmt.with_metadata(quantized.content, int8_metadata)
    write_bytes(out, final)
    return ExportResult(out, used_opset, verification, int8_metadata, accuracy,
                        SizeAndSpeed(cpu, len(float_bytes), len(final), speeds),
                        description=quantized.description.format(opset=opset))
