"""Every deployment format of trained runs on the real MNIST test set: accuracy, file size, throughput.

  python bench/deploy.py RUN_DIR... [--data-dir ../shared/data] [--rounds 5] [--budget 1.0] [--threads N] [--clock wall|cpu]

Each RUN_DIR holds model.keras from `cnncompile train` of an example (its spec is read from
examples/<run dir name>.yaml). The four exports are made here through the library call the
CLI uses (verification included; ONNX int8's own size/speed report is printed too), then
Keras (direct call), ONNX float, ONNX int8, TFLite float and TFLite int8 are measured in one
process: top-1 accuracy on all 10,000 test images, file size, and images per second at batch
1 and 64 as medians of interleaved rounds (every model once per round), with the CPU's int8
features named. Writes bench/results/deploy.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cnncompile.backend  # noqa: E402,F401
import keras  # noqa: E402
import numpy as np  # noqa: E402

from cnncompile.data.datasets import load_dataset  # noqa: E402
from cnncompile.deploy.export import ExportRequest, export  # noqa: E402
from cnncompile.analysis.check import compile_file  # noqa: E402
from cnncompile.deploy.int8 import int8_capability  # noqa: E402
from cnncompile.deploy.measure import interleaved_throughput  # noqa: E402
from cnncompile.deploy.predict import open_classifier  # noqa: E402

FORMATS = {  # column -> (format, int8, file name)
    "ONNX float": ("onnx", False, "model.onnx"),
    "ONNX int8": ("onnx", True, "model.int8.onnx"),
    "TFLite float": ("tflite", False, "model.tflite"),
    "TFLite int8": ("tflite", True, "model.int8.tflite"),
}
BATCHES = (1, 64)


def bench_run(run_dir: Path, data_dir: Path, rounds: int, budget: float, threads: int | None, clock: str) -> dict:
    compiled = compile_file(ROOT / "examples" / f"{run_dir.name}.yaml")
    files, reports = {"Keras": run_dir / "model.keras"}, {}
    for column, (fmt, int8, name) in FORMATS.items():
        result = export(compiled, ExportRequest(fmt, run_dir, int8=int8, output=run_dir / name, data_dir=data_dir))
        files[column] = result.path
        if result.comparison is not None:
            reports[column] = result.comparison.lines()
            print(f"{run_dir.name} {column}: " + "; ".join(reports[column]), flush=True)
    mnist = load_dataset("mnist", data_dir=data_dir)
    x_test, y_test = mnist.x_test, mnist.y_test
    x = x_test.astype(np.float32)
    model = keras.models.load_model(run_dir / "model.keras", safe_mode=True)
    classifiers = {column: open_classifier(files[column], threads) for column in FORMATS}
    runners = {"Keras": lambda b: model(b, training=False), **{c: k.run for c, k in classifiers.items()}}
    keras_probabilities = np.concatenate([np.asarray(model(x[i:i + 500], training=False)) for i in range(0, len(x), 500)])
    accuracy = {"Keras": float((keras_probabilities.argmax(1) == y_test).mean())}
    accuracy |= {c: float((k.probabilities(x_test).argmax(1) == y_test).mean()) for c, k in classifiers.items()}
    speed = interleaved_throughput(runners, x, BATCHES, rounds, budget, clock)
    return {"spec": compiled.spec.name, "accuracy": accuracy,
            "bytes": {column: path.stat().st_size for column, path in files.items()},
            "images_per_second": {str(b): {c: round(v, 1) for c, v in r.items()} for b, r in speed.items()},
            "export_reports": reports}


def table(results: list[dict]) -> str:
    columns = ["Keras", *FORMATS]
    rows = ["| model | metric | " + " | ".join(columns) + " |", "| --- | --- |" + " --- |" * len(columns)]
    for r in results:
        ips = r["images_per_second"]
        rows.append(f"| {r['spec']} | test accuracy | " + " | ".join(f"{r['accuracy'][c]:.4f}" for c in columns) + " |")
        rows.append("| | file size (KB) | " + " | ".join(f"{r['bytes'][c] / 1024:,.0f}" for c in columns) + " |")
        for b in BATCHES:
            rows.append(f"| | images/s, batch {b} | " + " | ".join(f"{ips[str(b)][c]:,.0f}" for c in columns) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per model per round")
    parser.add_argument("--threads", type=int, help="runtime threads (default: predict's, one per core)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: images per second of this process's CPU time (stable on a busy machine with --threads 1)")
    args = parser.parse_args()
    if args.threads:  # Keras too, before TensorFlow's runtime starts
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    cpu = int8_capability()
    print(f"CPU: {cpu.describe()}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}", flush=True)
    results = [bench_run(run_dir, args.data_dir, args.rounds, args.budget, args.threads, args.clock)
               for run_dir in args.run_dirs]
    load = os.getloadavg()[0]  # a shared machine: say how busy it was
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    name = f"deploy{'-threads' + str(args.threads) if args.threads else ''}-{args.clock}.json"
    (ROOT / "bench" / "results" / name).write_text(json.dumps({"cpu": cpu.describe(), "threads": args.threads, "clock": args.clock,
                                                               "load_average_after": load, "runs": results}, indent=2))
    print(table(results))
    print(f"load average at the end: {load:.1f}")


if __name__ == "__main__":
    main()
