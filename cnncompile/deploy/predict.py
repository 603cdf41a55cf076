"""`cnncompile predict`: classify images with an exported model, .onnx (float or int8) or .tflite.

Never imports TensorFlow or Keras: a deployment needs only onnxruntime or the standalone
LiteRT interpreter (ai-edge-litert), numpy and Pillow. Every format takes raw 0-255 pixels
and returns probabilities; the model's own metadata says its labels and input layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnncompile.data.formats import (IDX_TYPES, IMAGE_FORMATS, DataError, as_images, decode_image, max_image_pixels,
                                     read_idx, regular_file, sniff_format)
from cnncompile.native import quiet_native_stderr

IDX_IMAGE_MARK, IDX_LABEL_MARK = "images-idx3", "labels-idx1"
METADATA_SHAPE = "cnncompile.input_shape"
METADATA_MEAN = "cnncompile.training_mean_pixel"  # of the raw training images, for the polarity hint
TFLITE_IDENTIFIER = b"TFL3"
TFLITE_METADATA_NAME = "cnncompile"  # the .tflite metadata entry holding the same keys as ONNX metadata_props


@dataclass
class Prediction:
    source: str  # file, or file[index] for IDX sets
    top: list[tuple[str, float]]  # (label, probability), best first


@dataclass
class InputError:
    source: str
    message: str  # one line: the file and the reason


@dataclass
class PredictReport:
    predictions: list[Prediction]
    notes: list[str]  # e.g. resizing, per file
    accuracy: dict[str, float]  # IDX file -> accuracy, where its labels file exists
    errors: list[InputError]  # inputs that could not be classified, one each


class Classifier:
    """An exported model, whatever its format: raw uint8 pixels in, probabilities out, labels
    and input shape from its cnncompile metadata (the same keys in every format)."""

    kind = "model"

    def __init__(self, path: Path, metadata: dict[str, str]):
        if METADATA_SHAPE not in metadata:
            raise DataError(f"{path}: no cnncompile metadata; export it with `cnncompile export`")
        self.path = path
        self.metadata = metadata
        self.shape = tuple(json.loads(metadata[METADATA_SHAPE]))  # (H, W, C)
        self.labels = json.loads(metadata["cnncompile.labels"])
        self.untrained = metadata.get("cnncompile.untrained") == "true"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (n, H, W, C) -> (n, classes)."""
        raise NotImplementedError

    def probabilities(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 (N, H, W, C) -> (N, classes)."""
        chunks = [self.run(images[i:i + batch_size].astype(np.float32)) for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.labels)), np.float32)

    def top(self, probabilities: np.ndarray, k: int) -> list[tuple[str, float]]:
        order = np.argsort(-probabilities)[:k]
        return [(self.labels[i], float(probabilities[i])) for i in order]


class OnnxClassifier(Classifier):
    kind = "ONNX"

    def __init__(self, path: Path | bytes, threads: int | None = None, name: str | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime's default thread count used one of this machine's two cores; one thread
        # per core measured 1.8x faster at batch 64 and 1000 (bench/inference.py).
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        source = path if isinstance(path, bytes) else str(path)
        shown = Path(name or ("<memory>" if isinstance(path, bytes) else path))
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise DataError(f"{shown}: not a loadable ONNX model ({exc})") from None
        super().__init__(shown, dict(self.session.get_modelmeta().custom_metadata_map))
        self.input = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: batch})[0]


class LiteRTClassifier(Classifier):
    """A .tflite file run by the standalone LiteRT interpreter (ai-edge-litert), not TensorFlow.
    Its cnncompile metadata is a JSON entry in the flatbuffer's own `metadata` table, read
    with the schema module LiteRT ships."""

    kind = "LiteRT"

    def __init__(self, path: Path | bytes, threads: int | None = None, name: str | None = None):
        from ai_edge_litert.interpreter import Interpreter

        content = path if isinstance(path, bytes) else Path(path).read_bytes()
        shown = Path(name or ("<memory>" if isinstance(path, bytes) else path))
        try:
            self.interpreter = Interpreter(model_content=content, num_threads=threads or os.cpu_count() or 1)
            metadata = read_tflite_metadata(content)
        except Exception as exc:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError variants
            raise DataError(f"{shown}: not a loadable LiteRT model ({exc})") from None
        super().__init__(shown, metadata)
        (self.input,), (self.output,) = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        self.batch = None  # the batch size the interpreter's tensors are allocated for

    def run(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self.batch:  # the file's batch axis is dynamic; LiteRT allocates per size
            self.interpreter.resize_tensor_input(self.input["index"], batch.shape, strict=True)
            with quiet_native_stderr():  # "Created TensorFlow Lite XNNPACK delegate for CPU"
                self.interpreter.allocate_tensors()
            self.batch = len(batch)
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])


def read_tflite_metadata(content: bytes) -> dict[str, str]:
    """The `cnncompile` entry of a .tflite file's metadata table (a JSON object), or {}."""
    from ai_edge_litert import schema_py_generated as schema

    if content[4:8] != TFLITE_IDENTIFIER:
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == TFLITE_METADATA_NAME.encode():
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return {}


def open_classifier(path: Path, threads: int | None = None) -> Classifier:
    """By content, not name: TFLite flatbuffers carry the identifier TFL3 at byte 4."""
    regular_file(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[4:8] == TFLITE_IDENTIFIER:
        return LiteRTClassifier(path, threads)
    return OnnxClassifier(path, threads)


def predict(model_path: Path, inputs: list[Path], top_k: int = 3, invert: bool = False) -> PredictReport:
    """Classify every input it can; each one it cannot becomes one line in `errors` (the file and
    why), and the rest of the call goes on. A model that cannot be opened raises DataError."""
    classifier = open_classifier(model_path)
    report = PredictReport([], [], {}, [])
    if classifier.untrained:
        report.notes.append(f"{model_path} is an untrained export: its predictions are meaningless")
    for path in inputs:
        try:
            _predict_file(classifier, path, top_k, invert, report)
        except DataError as exc:
            report.errors.append(InputError(str(path), str(exc)))
    return report


def _predict_file(classifier: Classifier, path: Path, top_k: int, invert: bool, report: PredictReport) -> None:
    """By content, not name: PNG/JPEG images one at a time, IDX sets (raw or gzip) whole."""
    regular_file(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    kind = sniff_format(head)
    if kind not in ("PNG", "JPEG", "gzip") and not (head[:2] == b"\0\0" and len(head) >= 4 and head[2] in IDX_TYPES):
        what = "an empty file" if not head else f"a {kind} file" if kind else "not an image"
        raise DataError(f"{path}: {what}; predict reads {IMAGE_FORMATS} images or IDX image sets")
    height, width, channels = classifier.shape
    if kind in ("PNG", "JPEG"):
        decoded = decode_image(path, (height, width), channels)
        report.notes += decoded.notes
        image = 255 - decoded.pixels if invert else decoded.pixels
        report.notes += _polarity_hint(classifier, path, image, invert)
        probabilities = classifier.probabilities(image[None])[0]
        report.predictions.append(Prediction(str(path), classifier.top(probabilities, top_k)))
        return
    images = as_images(read_idx(path, max_image_pixels()), str(path))
    if images.shape[1:] != (height, width, channels):
        raise DataError(f"{path}: IDX images are {images.shape[1:]}, the model takes {(height, width, channels)}")
    probabilities = classifier.probabilities(255 - images if invert else images)
    report.predictions += [Prediction(f"{path}[{i}]", classifier.top(p, top_k)) for i, p in enumerate(probabilities)]
    labels_path = path.with_name(path.name.replace(IDX_IMAGE_MARK, IDX_LABEL_MARK))
    if labels_path != path and labels_path.is_file():
        truth = read_idx(labels_path, max_image_pixels()).reshape(-1)
        if len(truth) == len(images):
            report.accuracy[str(path)] = float((probabilities.argmax(1) == truth).mean())


def _polarity_hint(classifier: Classifier, path: Path, image: np.ndarray, inverted: bool) -> list[str]:
    """MNIST-style models read light strokes on a dark background; a dark digit on white paper
    is read confidently and wrongly. Say so when the image's brightness is on the other side
    of the middle from the training images' (recorded at export)."""
    trained = classifier.metadata.get(METADATA_MEAN)
    if trained is None:
        return []
    trained_mean, mean = float(trained), float(image.mean())
    if (mean > 127.5) == (trained_mean > 127.5):
        return []
    light, trained_light = ("light" if m > 127.5 else "dark" for m in (mean, trained_mean))
    fix = ("this image may not need --invert" if inverted else
           f"if the digit is {'dark on light' if light == 'light' else 'light on dark'}, pass --invert")
    return [f"{path}: mostly {light}{' after --invert' if inverted else ''} (mean pixel {mean:.0f} of 255), but the "
            f"model was trained on {trained_light} images (mean pixel {trained_mean:.0f}); {fix}"]
