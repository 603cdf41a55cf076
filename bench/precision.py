"""Training throughput and accuracy, float32 against mixed_bfloat16 (training.precision).

  python bench/precision.py [--specs examples/mnist_bn_dropout.yaml examples/mnist_resnet.yaml]
                            [--epochs 3] [--rounds 2] [--seeds 0] [--data-dir ../shared/data]

Each run is a fresh process (`train_spec` with a callback that times every epoch); the two
precisions alternate, round after round, to spread a shared machine's noise. Steady
throughput is training images / the median epoch time, leaving out the first epoch (it
traces and compiles). The fraction of the CPU's peak counts 6 FLOPs per MAC per image
(forward 2, backward 4) against the peak this CPU's vector units can reach (see `peak`).
Under a shared machine's load the wall-clock rate mostly measures the scheduler's share, so
each run also reports images per CPU-second (the process's CPU time over the same epochs).
Results go to bench/results/precision.json (not committed; docs/precision.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def epoch_timer():
    """A Keras callback that keeps each epoch's wall-clock and CPU seconds (bench/precision_bisect.py uses it too)."""
    import cnncompile.backend  # noqa: F401

    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started, self.cpu_started = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)
            self.cpu_seconds.append(time.process_time() - self.cpu_started)

    return EpochTimer()


def child(spec: str, precision: str, epochs: int, seed: int, data_dir: str) -> None:
    from cnncompile.analysis.check import compile_file
    from cnncompile.run.train import train_spec

    timer = epoch_timer()
    compiled = compile_file(spec)
    result = train_spec(compiled, out=Path(tempfile.mkdtemp(prefix="bench-precision-")), epochs=epochs, seed=seed,
                        data_dir=Path(data_dir), force=True, precision=precision, progress=timer)
    print(json.dumps({"epoch_seconds": timer.seconds, "epoch_cpu_seconds": timer.cpu_seconds,
                      "train_images": result.metrics["train_images"],
                      "test_accuracy": result.metrics["test_accuracy"], "macs": compiled.info.total_macs,
                      "precision": result.metrics["precision"]}))


def peak(policy: str) -> tuple[float, str]:
    """FLOP/s this CPU's vector units can reach: cores x clock x FLOPs per cycle per core. AVX-512
    FMA: 2 pipes x 16 float32 lanes x 2 FLOPs = 64 per cycle; AVX512_BF16's VDPBF16PS does twice
    the multiply-adds per instruction. Zen 4 runs 512-bit operations on 256-bit pipes (half of
    this); the figure is the upper bound the instruction set allows, so fractions are conservative."""
    from cnncompile.cpu import cpu_features

    info = Path("/proc/cpuinfo").read_text()
    cores = sum(line.startswith("processor") for line in info.splitlines())
    mhz = max(float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz"))
    flags = cpu_features().flags
    per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags else 8
    if policy == "mixed_bfloat16" and "avx512_bf16" in flags:
        per_cycle *= 2
    return cores * mhz * 1e6 * per_cycle, f"{cores} cores x {mhz:.0f} MHz x {per_cycle} FLOP/cycle"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--specs", nargs="+", default=["examples/mnist_bn_dropout.yaml", "examples/mnist_resnet.yaml"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data-dir", default=os.environ.get("CNNCOMPILE_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--child", nargs=4, metavar=("SPEC", "PRECISION", "EPOCHS", "SEED"))
    args = parser.parse_args()
    if args.child:
        spec, precision, epochs, seed = args.child
        child(spec, precision, int(epochs), int(seed), args.data_dir)
        return
    from cnncompile.cpu import cpu_features

    runs: list[dict] = []
    print("CPU:", cpu_features().model_name, flush=True)
    for spec in args.specs:
        for round_ in range(args.rounds):
            for seed in args.seeds:
                order = ["float32", "mixed_bfloat16"]
                for precision in order if round_ % 2 == 0 else order[::-1]:
                    out = subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--child", spec, precision,
                                          str(args.epochs), str(seed)], cwd=ROOT, capture_output=True, text=True,
                                         env={**os.environ, "PYTHONPATH": str(ROOT)})
                    if out.returncode != 0:
                        sys.exit(out.stderr[-3000:])
                    run = json.loads(out.stdout.strip().splitlines()[-1])
                    steady = statistics.median(run["epoch_seconds"][1:] or run["epoch_seconds"])
                    steady_cpu = statistics.median(run["epoch_cpu_seconds"][1:] or run["epoch_cpu_seconds"])
                    run.update(spec=spec, seed=seed, images_per_second=run["train_images"] / steady,
                               images_per_cpu_second=run["train_images"] / steady_cpu, load=os.getloadavg()[0])
                    flops, how = peak(precision)
                    run.update(peak_fraction=6 * run["macs"] * run["images_per_second"] / flops, peak=how)
                    runs.append(run)
                    print(json.dumps({k: run[k] for k in ("spec", "precision", "seed", "images_per_second",
                                                          "images_per_cpu_second", "peak_fraction", "test_accuracy",
                                                          "load")}), flush=True)
    summary = {}
    for spec in args.specs:
        summary[spec] = {}
        for measure in ("images_per_second", "images_per_cpu_second", "test_accuracy"):
            value = {p: statistics.median(r[measure] for r in runs if r["spec"] == spec and r["precision"] == p)
                     for p in ("float32", "mixed_bfloat16")}
            summary[spec][measure] = {**value, "bfloat16/float32": value["mixed_bfloat16"] / value["float32"]}
    print(json.dumps(summary, indent=2))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "precision.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
