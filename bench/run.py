"""Side-by-side benchmarks, whole-process wall time, alternating runs, medians.

  python bench/run.py check  [--runs 5]          cnncompile check  vs  Keras build + summary()
  python bench/run.py train  [--runs 3] [--epochs 5] [--data-dir ../shared/data]
                                                  cnncompile train  vs  the seed program
  python bench/run.py resnet [--runs 1]          train mnist_resnet vs mnist_bn_dropout (own epochs)
  python bench/run.py scale                      check time of synthetic residual specs, 1k-10k layers

Alternating the two commands spreads the shared machine's noise over both. Results are
printed and written to bench/results/<name>.json (not committed; README quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def user_environment() -> dict:
    """os.environ as a user's shell has it. A machine that sets PYTHONDONTWRITEBYTECODE (this
    workplace does) makes every `cnncompile` process compile its own ~20 modules from source again
    (~25 ms of CPU for `check`), while Keras's are byte-compiled in site-packages by pip."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process and its children, stdout). On a loaded machine
    the CPU time is the steadier of the two: waiting for a core does not count."""
    started, cpu_before = time.perf_counter(), _children_cpu()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**user_environment(), **(env or {})})
    elapsed, cpu = time.perf_counter() - started, _children_cpu() - cpu_before
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return elapsed, cpu, result.stdout


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def compare(name: str, ours, theirs, runs: int, warm_up: bool = False) -> dict:
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    cpu: dict[str, list[float]] = {"ours": [], "theirs": []}
    outputs: dict[str, list[str]] = {"ours": [], "theirs": []}
    load_before = os.getloadavg()[0]
    for make in (ours, theirs) if warm_up else ():  # untimed: byte-compiled modules, a warm file cache
        timed(make())
    for i in range(runs):
        for label, make in (("ours", ours), ("theirs", theirs)) if i % 2 == 0 else (("theirs", theirs), ("ours", ours)):
            seconds, cpu_seconds, out = timed(make())
            times[label].append(seconds)
            cpu[label].append(cpu_seconds)
            outputs[label].append(out.strip().splitlines()[-1] if out.strip() else "")
            print(f"{name} {label:6s} run {i + 1}: {seconds:.2f} s wall, {cpu_seconds:.2f} s CPU  "
                  f"{outputs[label][-1][:100]}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    report = {"benchmark": name, "runs": runs, "median_seconds": med, "all_seconds": times,
              "ratio_ours_over_theirs": med["ours"] / med["theirs"], "median_cpu_seconds": med_cpu,
              "all_cpu_seconds": cpu, "cpu_ratio_ours_over_theirs": med_cpu["ours"] / med_cpu["theirs"],
              "load_average": [load_before, os.getloadavg()[0]], "last_output": outputs}
    print(json.dumps({k: report[k] for k in ("benchmark", "median_seconds", "ratio_ours_over_theirs",
                                             "median_cpu_seconds", "cpu_ratio_ours_over_theirs", "load_average")},
                     indent=2))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / f"{name}.json").write_text(json.dumps(report, indent=2))
    return report


def residual_spec(units: int) -> str:
    """A chain of `units` residual units of 3 layers each (conv, conv, add reading 2 back)."""
    lines = ["name: scale", "input: {shape: [8, 8, 4]}", "layers:",
             "  - {type: Conv2D, name: u0, filters: 4, kernel_size: 1}"]
    for i in range(1, units + 1):
        lines += [f"  - {{type: Conv2D, name: a{i}, filters: 4, kernel_size: 3, padding: same}}",
                  f"  - {{type: Conv2D, name: b{i}, filters: 4, kernel_size: 3, padding: same}}",
                  f"  - {{type: Add, name: u{i}, inputs: [u{i - 1}, b{i}]}}"]
    return "\n".join(lines) + "\n"


def scale() -> None:
    """`check` wall time against the number of layers: it should grow linearly."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for units in (333, 1666, 3333):
            path = Path(tmp) / f"scale{units}.yaml"
            path.write_text(residual_spec(units))
            times = [timed([PY, "-m", "cnncompile", "check", str(path)])[0] for _ in range(3)]
            layers = 3 * units + 1
            results[layers] = statistics.median(times)
            print(f"{layers:6d} layers: {results[layers]:.2f} s", flush=True)
    small, large = min(results), max(results)
    per_layer = (results[large] - results[small]) / (large - small)
    print(f"marginal cost {per_layer * 1e3:.3f} ms per layer; "
          f"{large / small:.1f}x the layers took {results[large] / results[small]:.1f}x the time")
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "scale.json").write_text(json.dumps(
        {"seconds_by_layers": results, "ms_per_layer": per_layer * 1e3}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["check", "train", "resnet", "scale"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    if args.which == "check":
        compare("check", lambda: [PY, "-m", "cnncompile", "check", "examples/mnist_cnn.yaml"],
                lambda: [PY, "bench/keras_summary.py"], args.runs, warm_up=True)
    elif args.which == "resnet":
        def train(example: str):
            def command():
                out = tempfile.mkdtemp(prefix="bench-run-")
                return [PY, "-m", "cnncompile", "train", f"examples/{example}.yaml", "--data-dir", args.data_dir,
                        "--out", out, "--quiet"]
            return command
        compare("resnet", train("mnist_resnet"), train("mnist_bn_dropout"), args.runs)
    elif args.which == "scale":
        scale()
    else:
        def ours():
            out = tempfile.mkdtemp(prefix="bench-run-")
            return [PY, "-m", "cnncompile", "train", "examples/mnist_cnn.yaml", "--data-dir", args.data_dir,
                    "--out", out, "--epochs", str(args.epochs), "--quiet"]
        compare("train", ours, lambda: [PY, "bench/seed_mnist.py", args.data_dir, str(args.epochs)], args.runs)


if __name__ == "__main__":
    main()
