"""onnxruntime's int8 options for a small model, side by side against the float file.

  python bench/int8_options.py RUN_DIR [--spec examples/mnist_cnn.yaml] [--data-dir ../shared/data]
                               [--rounds 7] [--budget 0.5] [--threads N] [--clock wall|cpu]

RUN_DIR holds model.keras from `cnncompile train` of the spec. The float ONNX file is made by
the export pipeline's own converter; each variant below is quantized from it with onnxruntime's
tooling (calibrated on the same 1,000-image seeded sample of training images that `export
--int8` uses) and run in one process with the float file: images per second at batch 1 and 64
as medians of interleaved rounds (every model once per round, so a shared machine's noise falls
on all alike), top-1 accuracy on the 10,000 test images, file size. Prints a Markdown table and
writes bench/results/int8_options.json.

Variants: the quantization format (QDQ pairs, which onnxruntime fuses into int8 kernels when it
optimizes the session, or QOperator's QLinearConv/QLinearMatMul written directly), activation
type (S8S8 or U8S8), weights per channel or per tensor, the first convolution kept in float
(its single input channel gives an int8 kernel little to work with), and the session's graph
optimization level.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # noqa: E402
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

from cnncompile.analysis.check import compile_file  # noqa: E402
from cnncompile.deploy.int8 import int8_capability  # noqa: E402
from cnncompile.deploy.measure import interleaved_throughput  # noqa: E402
from cnncompile.deploy.onnx_export import convert_onnx  # noqa: E402
from cnncompile.deploy.onnx_int8 import _Calibration, _float_outputs  # noqa: E402
from cnncompile.deploy.pipeline import calibration_sample, export_data, load_trained  # noqa: E402

LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}
# name -> (format, activation type, per channel, first conv in float, session level)
VARIANTS = {
    "QDQ S8S8 per-channel (export's default)": (QuantFormat.QDQ, QuantType.QInt8, True, False, "all"),
    "QDQ U8S8 per-channel": (QuantFormat.QDQ, QuantType.QUInt8, True, False, "all"),
    "QDQ S8S8 per-tensor": (QuantFormat.QDQ, QuantType.QInt8, False, False, "all"),
    "QDQ S8S8 per-channel, first conv float": (QuantFormat.QDQ, QuantType.QInt8, True, True, "all"),
    "QDQ U8S8 per-channel, first conv float": (QuantFormat.QDQ, QuantType.QUInt8, True, True, "all"),
    "QOperator U8S8 per-channel": (QuantFormat.QOperator, QuantType.QUInt8, True, False, "all"),
    "QOperator U8S8 per-channel, first conv float": (QuantFormat.QOperator, QuantType.QUInt8, True, True, "all"),
    "QOperator S8S8 per-channel": (QuantFormat.QOperator, QuantType.QInt8, True, False, "all"),
    "QDQ S8S8 per-channel, session level extended": (QuantFormat.QDQ, QuantType.QInt8, True, False, "extended"),
    "QDQ S8S8 per-channel, session level basic": (QuantFormat.QDQ, QuantType.QInt8, True, False, "basic"),
}


def quantize(prepared: Path, out: Path, calibration: np.ndarray, fmt, activations, per_channel: bool,
             first_conv_float: bool, reduce_range: bool) -> bytes:
    graph = onnx.load(str(prepared)).graph
    exclude = _float_outputs(prepared)
    if first_conv_float:
        exclude.append(next(node.name for node in graph.node if node.op_type == "Conv"))
    quantize_static(str(prepared), str(out), _Calibration(calibration), quant_format=fmt,
                    activation_type=activations, weight_type=QuantType.QInt8, per_channel=per_channel,
                    reduce_range=reduce_range, calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude)
    return out.read_bytes()


def session(content: bytes, level: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.intra_op_num_threads = threads
    return ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])


def run(model: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    return model.run(None, {"image": batch})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--spec", type=Path, default=ROOT / "examples" / "mnist_cnn.yaml")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: images per second of process CPU time (stable on a loaded machine at --threads 1)")
    args = parser.parse_args()

    compiled = compile_file(args.spec)
    model = load_trained(compiled, args.run_dir)
    data = export_data(compiled, args.data_dir)
    images, labels = data.test
    x = images.astype(np.float32)
    cpu = int8_capability()
    calibration = calibration_sample(data.train_images, 1000, 0)
    float_bytes = convert_onnx(compiled, model, 17)
    files = {"float": float_bytes}
    with tempfile.TemporaryDirectory() as tmp:
        float_path, prepared = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx"
        float_path.write_bytes(float_bytes)
        quant_pre_process(str(float_path), str(prepared))
        for i, (name, (fmt, activations, per_channel, first_float, _)) in enumerate(VARIANTS.items()):
            files[name] = quantize(prepared, Path(tmp) / f"{i}.onnx", calibration, fmt, activations, per_channel,
                                   first_float, cpu.reduce_range)
    sessions = {"float": session(float_bytes, "all", args.threads)}
    sessions |= {name: session(files[name], spec[4], args.threads) for name, spec in VARIANTS.items()}
    runners = {name: functools.partial(run, s) for name, s in sessions.items()}
    accuracy = {name: float((np.concatenate([runners[name](x[i:i + 500])[0] for i in range(0, len(x), 500)])
                             .argmax(1) == labels).mean()) for name in runners}
    rounds = interleaved_throughput(runners, x, (1, 64), args.rounds, args.budget, args.clock)
    load = os.getloadavg()
    results = {"cpu": cpu.describe(), "threads": args.threads, "clock": args.clock, "rounds": args.rounds, "budget_seconds": args.budget,
               "load_average_1_5_15": load, "onnxruntime": ort.__version__, "variants": {
                   name: {"bytes": len(files[name]), "accuracy": accuracy[name],
                          "images_per_second": {str(b): rounds[b][name] for b in rounds},
                          "speedup": {str(b): rounds[b][name] / rounds[b]["float"] for b in rounds}}
                   for name in runners}}
    out = ROOT / "bench" / "results" / f"int8_options.{args.clock}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"CPU: {cpu.describe()}; onnxruntime {ort.__version__}; {args.threads} threads, {args.clock} clock; load average "
          f"{load[0]:.1f} at the end; medians of {args.rounds} interleaved rounds\n")
    print("| variant | bytes | top-1 | batch 1 images/s | vs float | batch 64 images/s | vs float |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results["variants"].items():
        ips, speed = r["images_per_second"], r["speedup"]
        print(f"| {name} | {r['bytes']:,} | {r['accuracy']:.4f} | {ips['1']:,.0f} | {speed['1']:.2f}x | "
              f"{ips['64']:,.0f} | {speed['64']:.2f}x |")


if __name__ == "__main__":
    main()
