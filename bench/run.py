"""Side-by-side benchmarks, whole-process wall time, alternating runs, medians.

  python bench/run.py check  [--runs 5]          cnncompile check  vs  Keras build + summary()
  python bench/run.py train  [--runs 3] [--epochs 5] [--data-dir ../shared/data]
                                                  cnncompile train  vs  the seed program

Alternating the two commands spreads the shared machine's noise over both. Results are
printed and written to bench/results/<name>.json (not committed; README quotes them).
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
PY = sys.executable


def timed(command: list[str], env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return elapsed, result.stdout


def compare(name: str, ours, theirs, runs: int) -> dict:
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    outputs: dict[str, list[str]] = {"ours": [], "theirs": []}
    for i in range(runs):
        for label, make in (("ours", ours), ("theirs", theirs)) if i % 2 == 0 else (("theirs", theirs), ("ours", ours)):
            seconds, out = timed(make())
            times[label].append(seconds)
            outputs[label].append(out.strip().splitlines()[-1] if out.strip() else "")
            print(f"{name} {label:6s} run {i + 1}: {seconds:.2f} s  {outputs[label][-1][:100]}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    report = {"benchmark": name, "runs": runs, "median_seconds": med, "all_seconds": times,
              "ratio_ours_over_theirs": med["ours"] / med["theirs"], "last_output": outputs}
    print(json.dumps({k: report[k] for k in ("benchmark", "median_seconds", "ratio_ours_over_theirs")}, indent=2))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / f"{name}.json").write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["check", "train"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    if args.which == "check":
        compare("check", lambda: [PY, "-m", "cnncompile", "check", "examples/mnist_cnn.yaml"],
                lambda: [PY, "bench/keras_summary.py"], args.runs)
    else:
        def ours():
            out = tempfile.mkdtemp(prefix="bench-run-")
            return [PY, "-m", "cnncompile", "train", "examples/mnist_cnn.yaml", "--data-dir", args.data_dir,
                    "--out", out, "--epochs", str(args.epochs), "--quiet"]
        compare("train", ours, lambda: [PY, "bench/seed_mnist.py", args.data_dir, str(args.epochs)], args.runs)


if __name__ == "__main__":
    main()
