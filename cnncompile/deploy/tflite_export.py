"""`cnncompile export --tflite [--int8]`: a LiteRT (TFLite) file through TensorFlow's converter.

Conversion is Keras 3's own `model.export(format="litert")` (a SavedModel, then
`TFLiteConverter.from_saved_model`), restricted to LiteRT's builtin operators: Keras would
otherwise also allow SELECT_TF_OPS, whose files need TensorFlow's Flex delegate and do not
run in the standalone interpreter `predict` uses. `--int8` is full-integer quantization
(TFLITE_BUILTINS_INT8 only) calibrated on a seeded sample of training images; the file's
input and output stay float32 (quantize/dequantize at the edges), so every format takes raw
0-255 pixels and returns probabilities.

Labels and the rest of the metadata go into the flatbuffer's own `metadata` table as one JSON
entry named `cnncompile`, with the same keys as ONNX's metadata_props. The alternatives were
worse for `predict`: the TFLite Metadata schema would add tflite-support (its writer and
reader) to predict's dependencies, and a labels file beside the model gets separated from it.
The table is read with the schema module that ai-edge-litert ships, without TensorFlow.

deploy/pipeline.py verifies the bytes in that same LiteRT interpreter before anything is written;
`FORMAT` at the end is this format's row in that pipeline.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from cnncompile.analysis.check import CompiledSpec
from cnncompile.deploy.int8 import Int8Capability, Int8Options
from cnncompile.deploy.pipeline import ExportError, ExportFormat, Quantized
from cnncompile.deploy.predict import TFLITE_METADATA_NAME, LiteRTClassifier
from cnncompile.native import quiet_native_stderr


def convert_tflite(compiled: CompiledSpec, model, opset: int | None = None) -> bytes:
    """Float32 LiteRT bytes (builtin operators only); `opset` is ONNX's and ignored here."""
    return _convert(compiled, model)


def quantize_tflite(compiled: CompiledSpec, model, float_bytes: bytes, calibration: np.ndarray,
                    cpu: Int8Capability, options: Int8Options) -> Quantized:
    """Full-integer conversion from the Keras model (TFLite quantizes while converting)."""
    settings = {"tool": f"TensorFlow {tf.__version__} TFLiteConverter, full-integer (TFLITE_BUILTINS_INT8)",
                "activations": "int8", "weights": "int8, per channel", "input_output": "float32"}
    return Quantized(_convert(compiled, model, calibration), settings,
                     "TFLite int8 (full integer, float32 input/output)")


def _convert(compiled: CompiledSpec, model, calibration: np.ndarray | None = None) -> bytes:
    model(np.zeros((1, *compiled.spec.input.shape), np.float32))  # Keras exports only models that have been called
    options: dict = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if calibration is not None:
        def representative_dataset():  # one image per step, as the converter's calibrator expects
            for image in calibration:
                yield [image[None].astype(np.float32)]

        options = {"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": representative_dataset,
                   "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        try:
            with warnings.catch_warnings(), quiet_native_stderr():
                warnings.simplefilter("ignore")  # the converter warns about its own deprecations
                model.export(str(path), format="litert", verbose=False, **options)
        except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError and others
            text = str(exc).strip()
            detail = next((line.strip() for line in text.splitlines() if "error:" in line), text.splitlines()[0][:300]
                          if text else "")
            raise ExportError(f"conversion to TFLite{' int8' if calibration is not None else ''} failed: "
                              f"{type(exc).__name__}: {detail[:400]}") from None
        return path.read_bytes()


def with_tflite_metadata(content: bytes, metadata: dict[str, str]) -> bytes:
    """The converter's flatbuffer with a `cnncompile` metadata entry added."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    model.metadata = model.metadata or []
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = TFLITE_METADATA_NAME, len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


FORMAT = ExportFormat("TFLite", convert_tflite, quantize_tflite, with_tflite_metadata, LiteRTClassifier,
                      "TFLite float32")
