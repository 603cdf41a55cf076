"""`cnncompile export --onnx --int8`: static post-training quantization with onnxruntime's tooling.

The verified float ONNX model is pre-processed (`quant_pre_process`: symbolic shape inference
and onnxruntime's graph optimizations, which fold BatchNormalization into the convolution
before it and fuse), then `quantize_static` inserts QuantizeLinear/DequantizeLinear pairs (the
QDQ format): int8 activations and int8 weights (S8S8, what onnxruntime's guide recommends for
CPUs), weights per output channel, ranges calibrated (MinMax) on a seeded sample of training
images. On CPUs without VNNI the weights use 7 bits (`reduce_range`): there the x86 int8
kernels multiply with VPMADDUBSW, whose 16-bit intermediate sums saturate with full-range
weights (onnxruntime's quantization FAQ); VNNI accumulates in 32 bits and needs no such cut.

Nothing is written unless the int8 model's top-1 accuracy on the labeled test set is within
the allowed drop of the float model's. Size and throughput against the float file are
measured here and reported as measured, with the CPU's int8 features named.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from cnncompile.deploy.onnx_export import (INPUT_NAME, ExportData, ExportError, ExportResult,
                               calibration_sample, compare_int8, convert_onnx, measured_metadata, model_metadata,
                               verify_accuracy, verify_parity)
from cnncompile.analysis.check import CompiledSpec
from cnncompile.deploy.int8 import Int8Options, int8_capability
from cnncompile.deploy.predict import OnnxClassifier
from cnncompile.files import write_bytes

CALIBRATION_BATCH = 100


class _Calibration(CalibrationDataReader):
    def __init__(self, images: np.ndarray):
        self._batches = iter([{INPUT_NAME: images[i:i + CALIBRATION_BATCH].astype(np.float32)}
                              for i in range(0, len(images), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self._batches, None)


def export_onnx_int8(compiled: CompiledSpec, model, out: Path, data: ExportData, *, opset: int,
                     untrained: bool = False, options: Int8Options = Int8Options()) -> ExportResult:
    """Float ONNX (verified against Keras), quantized, verified for accuracy, measured, then written."""
    data.require_dataset("--int8")
    cpu = int8_capability()
    metadata = model_metadata(compiled, data.labels, untrained)
    float_bytes = convert_onnx(compiled, model, metadata, opset)
    float_model = OnnxClassifier(float_bytes, name="float ONNX")
    verification = verify_parity(model, float_model, data.parity_images, data.parity_source, "ONNX")

    calibration = calibration_sample(data.train_images, options.calibration_images, options.calibration_seed)
    settings = {
        "tool": f"onnxruntime.quantization {onnxruntime.__version__} quantize_static",
        "format": "QDQ", "activations": "int8", "weights": "int8, per channel",
        "reduce_range": cpu.reduce_range, "calibration_method": "MinMax",
        "calibration_images": len(calibration), "calibration_seed": options.calibration_seed,
        "calibration_source": f"{data.name} training images",
        "cpu": cpu.describe(),
    }
    int8_bytes = _quantize(float_bytes, calibration, reduce_range=cpu.reduce_range)
    quantized = onnx.load_from_string(int8_bytes)
    onnx.helper.set_model_props(quantized, {**metadata, "cnncompile.precision": "int8",
                                            "cnncompile.quantization": json.dumps(settings)})
    int8_model = OnnxClassifier(quantized.SerializeToString(), name="int8 ONNX")

    images, _ = data.test
    accuracy = verify_accuracy(float_model.probabilities(images), "float ONNX", int8_model, data.test,
                               f"{data.name} test images", options.max_accuracy_drop, "int8 ONNX")
    comparison = compare_int8(cpu, float_model, int8_model, len(float_bytes), len(int8_bytes), images,
                              options.measure_rounds)
    onnx.helper.set_model_props(quantized, {**{p.key: p.value for p in quantized.metadata_props},
                                            **measured_metadata(accuracy, comparison)})
    final = quantized.SerializeToString()
    write_bytes(out, final)
    comparison.int8_bytes = len(final)
    return ExportResult(out, opset, verification, {p.key: p.value for p in quantized.metadata_props}, accuracy,
                        comparison, description=f"ONNX int8 (QDQ, S8S8, per-channel), opset {opset}")


def _quantize(float_bytes: bytes, calibration: np.ndarray, *, reduce_range: bool) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        float_path, prepared, quantized = (Path(tmp) / name for name in ("float.onnx", "pre.onnx", "int8.onnx"))
        float_path.write_bytes(float_bytes)
        try:
            quant_pre_process(str(float_path), str(prepared))
            quantize_static(str(prepared), str(quantized), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                            reduce_range=reduce_range, calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=_float_outputs(prepared))
        except Exception as exc:  # noqa: BLE001 - the quantization tool raises assorted errors
            raise ExportError(f"onnxruntime quantization failed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
        return quantized.read_bytes()


def _float_outputs(path: Path) -> list[str]:
    """The nodes that produce the model's outputs stay float: quantizing the final softmax would
    round probabilities to steps of 1/256 (and tie near-equal classes) to save nothing."""
    graph = onnx.load(str(path)).graph
    outputs = {o.name for o in graph.output}
    return [node.name for node in graph.node if outputs & set(node.output)]
