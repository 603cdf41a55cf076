"""`cnncompile export --onnx --int8`: ONNX's quantizer, static post-training quantization with
onnxruntime's tooling (the pipeline around it, calibration and checks, is deploy/pipeline.py).

The verified float ONNX model is pre-processed (`quant_pre_process`: symbolic shape inference
and onnxruntime's graph optimizations, which fold BatchNormalization into the convolution
before it and fuse), then `quantize_static` inserts QuantizeLinear/DequantizeLinear pairs (the
QDQ format): int8 activations and int8 weights (S8S8, what onnxruntime's guide recommends for
CPUs), weights per output channel, ranges calibrated (MinMax) on a seeded sample of training
images. On CPUs without VNNI the weights use 7 bits (`reduce_range`): there the x86 int8
kernels multiply with VPMADDUBSW, whose 16-bit intermediate sums saturate with full-range
weights (onnxruntime's quantization FAQ); VNNI accumulates in 32 bits and needs no such cut.

For the seed model on an AMD EPYC with AVX512_VNNI these settings were 1.4x the float file
at batch 64, and none of onnxruntime's other options (QOperator, U8S8, per-tensor weights,
the first convolution kept in float, lower session optimization levels) beat them by more
than the run-to-run spread (bench/int8_options.py; the table is in docs/deploy.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from cnncompile.deploy.int8 import Int8Capability, Int8Options
from cnncompile.deploy.onnx_export import INPUT_NAME
from cnncompile.deploy.pipeline import ExportError, Quantized

CALIBRATION_BATCH = 100


class _Calibration(CalibrationDataReader):
    def __init__(self, images: np.ndarray):
        self._batches = iter([{INPUT_NAME: images[i:i + CALIBRATION_BATCH].astype(np.float32)}
                              for i in range(0, len(images), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self._batches, None)


def quantize_onnx(float_bytes: bytes, calibration: np.ndarray, cpu: Int8Capability,
                  options: Int8Options) -> Quantized:
    """The verified float file, pre-processed and statically quantized (QDQ, S8S8, per channel)."""
    settings = {
        "tool": f"onnxruntime.quantization {onnxruntime.__version__} quantize_static",
        "format": "QDQ", "activations": "int8", "weights": "int8, per channel",
        "reduce_range": cpu.reduce_range, "calibration_method": "MinMax",
    }
    with tempfile.TemporaryDirectory() as tmp:
        float_path, prepared, quantized = (Path(tmp) / name for name in ("float.onnx", "pre.onnx", "int8.onnx"))
        float_path.write_bytes(float_bytes)
        try:
            quant_pre_process(str(float_path), str(prepared))
            quantize_static(str(prepared), str(quantized), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                            reduce_range=cpu.reduce_range, calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=_float_outputs(prepared))
        except Exception as exc:  # noqa: BLE001 - the quantization tool raises assorted errors
            raise ExportError(f"onnxruntime quantization failed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
        return Quantized(quantized.read_bytes(), settings, "ONNX int8 (QDQ, S8S8, per-channel), opset {opset}")


def _float_outputs(path: Path) -> list[str]:
    """The nodes that produce the model's outputs stay float: quantizing the final softmax would
    round probabilities to steps of 1/256 (and tie near-equal classes) to save nothing."""
    graph = onnx.load(str(path)).graph
    outputs = {o.name for o in graph.output}
    return [node.name for node in graph.node if outputs & set(node.output)]
