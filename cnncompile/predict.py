"""`cnncompile predict`: classify images with an exported model, using onnxruntime alone.

Never imports TensorFlow or Keras: a deployment needs only onnxruntime, numpy and Pillow.
The model's own metadata says its labels and input layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnncompile.data.formats import DataError, IMAGE_SUFFIXES, as_images, read_idx

IDX_IMAGE_MARK, IDX_LABEL_MARK = "images-idx3", "labels-idx1"


@dataclass
class Prediction:
    source: str  # file, or file[index] for IDX sets
    top: list[tuple[str, float]]  # (label, probability), best first


@dataclass
class PredictReport:
    predictions: list[Prediction]
    notes: list[str]  # e.g. resizing, per file
    accuracy: dict[str, float]  # IDX file -> accuracy, where its labels file exists


class Classifier:
    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime's default thread count used one of this machine's two cores; one thread
        # per core measured 1.8x faster at batch 64 and 1000 (bench/inference.py).
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise DataError(f"{path}: not a loadable ONNX model ({exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "cnncompile.input_shape" not in meta:
            raise DataError(f"{path}: no cnncompile metadata; export it with `cnncompile export --onnx`")
        self.shape = tuple(json.loads(meta["cnncompile.input_shape"]))  # (H, W, C)
        self.labels = json.loads(meta["cnncompile.labels"])
        self.input = self.session.get_inputs()[0].name
        self.untrained = meta.get("cnncompile.untrained") == "true"

    def probabilities(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 (N, H, W, C) -> (N, classes)."""
        chunks = [self.session.run(None, {self.input: images[i:i + batch_size].astype(np.float32)})[0]
                  for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.labels)), np.float32)

    def top(self, probabilities: np.ndarray, k: int) -> list[tuple[str, float]]:
        order = np.argsort(-probabilities)[:k]
        return [(self.labels[i], float(probabilities[i])) for i in order]


def predict(model_path: Path, inputs: list[Path], top_k: int = 3) -> PredictReport:
    from cnncompile.data.formats import read_image

    classifier = Classifier(model_path)
    height, width, channels = classifier.shape
    report = PredictReport([], [], {})
    if classifier.untrained:
        report.notes.append(f"{model_path} is an untrained export: its predictions are meaningless")
    for path in inputs:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(path) as original:
                size, mode = original.size, original.mode
            if size != (width, height):
                report.notes.append(f"{path}: resized from {size[0]}x{size[1]} to {width}x{height}")
            image = read_image(path, (height, width), channels)
            if mode not in ("L" if channels == 1 else "RGB",):
                report.notes.append(f"{path}: converted from {mode} to {'grayscale' if channels == 1 else 'RGB'}")
            probs = classifier.probabilities(image[None])[0]
            report.predictions.append(Prediction(str(path), classifier.top(probs, top_k)))
        else:
            images = as_images(read_idx(path), str(path))
            if images.shape[1:] != (height, width, channels):
                raise DataError(f"{path}: IDX images are {images.shape[1:]}, the model takes {(height, width, channels)}")
            probs = classifier.probabilities(images)
            report.predictions += [Prediction(f"{path}[{i}]", classifier.top(p, top_k)) for i, p in enumerate(probs)]
            labels_path = path.with_name(path.name.replace(IDX_IMAGE_MARK, IDX_LABEL_MARK))
            if labels_path != path and labels_path.is_file():
                truth = read_idx(labels_path).reshape(-1)
                if len(truth) == len(images):
                    report.accuracy[str(path)] = float((probs.argmax(1) == truth).mean())
    return report
