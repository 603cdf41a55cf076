"""`cnncompile tune` against KerasTuner's RandomSearch and BayesianOptimization, same space.

  python bench/tune.py [--seeds 0 1 2] [--trials 6] [--epochs 2] [--data-dir ../shared/data]

For each seed, the three run one after another (order rotated per seed, to spread the
shared machine's noise), each as a fresh process: wall time, best validation accuracy,
models trained. Also the spec's own defaults trained once (the baseline to beat), and the
cost of a static rejection against a trained trial. Medians over seeds are printed and
written to bench/results/tune.json (not committed; README quotes them).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SPEC = ROOT / "examples" / "mnist_tune.yaml"


def run(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - started, result.stdout


def cpu() -> str:
    """The CPU's name and the vector/matrix features TensorFlow's kernels use, read from Linux."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags]
    cores = sum(line.startswith("processor") for line in info.splitlines())
    return f"{name}, {cores} logical cores, {' '.join(wanted) or 'no AVX2'}"


def ours(seed: int, trials: int, epochs: int, data_dir: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    tree = yaml.safe_load(SPEC.read_text())
    tree["search"]["seed"] = seed
    spec = work / "mnist_tune.yaml"
    spec.write_text(yaml.safe_dump(tree, sort_keys=False))
    seconds, out = run([PY, "-m", "cnncompile", "tune", str(spec), "--trials", str(trials), "--epochs", str(epochs),
                        "--out", str(work / "tune"), "--data-dir", data_dir])
    best = json.loads((work / "tune" / "best.json").read_text())
    rows = list(csv.DictReader((work / "tune" / "trials.csv").open()))
    check = re.search(r"static check: ([\d.]+) ms per candidate against ([\d.]+) s", out)
    return {"tool": "cnncompile", "seconds": seconds, "best_val_accuracy": best["val_accuracy"],
            "trained": sum(1 for r in rows if r["run"] and r["state"] in ("COMPLETE", "PRUNED")),
            "failed": sum(1 for r in rows if r["reason"].startswith(("shape", "budget", "invalid"))),
            "failed_build_ms": float(check.group(1)), "trial_seconds": float(check.group(2)),
            "test_accuracy": best["test_accuracy"]}


def kerastuner(kind: str, seed: int, trials: int, epochs: int, data_dir: str) -> dict:
    work = tempfile.mkdtemp(prefix=f"bench-kt-{kind}-")
    seconds, out = run([PY, "bench/kerastuner_mnist.py", kind, str(seed), str(trials), str(epochs), data_dir, work])
    result = json.loads(out.strip().splitlines()[-1])
    result["seconds_in_process"], result["seconds"] = result["seconds"], seconds
    return result


def baseline(epochs: int, data_dir: str) -> dict:
    work = tempfile.mkdtemp(prefix="bench-base-")
    seconds, _ = run([PY, "-m", "cnncompile", "train", str(SPEC), "--epochs", str(epochs), "--out", work,
                      "--data-dir", data_dir, "--quiet"])
    rows = list(csv.DictReader(open(Path(work) / "history.csv")))
    return {"seconds": seconds, "val_accuracy": float(rows[-1]["val_accuracy"]),
            "test_accuracy": json.loads((Path(work) / "metrics.json").read_text())["test_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    tools = [("cnncompile", lambda s: ours(s, args.trials, args.epochs, args.data_dir)),
             ("kerastuner_random", lambda s: kerastuner("random", s, args.trials, args.epochs, args.data_dir)),
             ("kerastuner_bayes", lambda s: kerastuner("bayes", s, args.trials, args.epochs, args.data_dir))]
    results: dict[str, list[dict]] = {name: [] for name, _ in tools}
    print("CPU:", cpu(), flush=True)
    base = baseline(args.epochs, args.data_dir)
    print("baseline (the spec's defaults):", json.dumps(base), flush=True)
    for i, seed in enumerate(args.seeds):
        for name, call in tools[i % 3:] + tools[:i % 3]:
            result = call(seed)
            results[name].append(result)
            print(f"seed {seed} {name}: {json.dumps(result)}", flush=True)
    summary = {name: {key: statistics.median(r[key] for r in rows) for key in
                      ("seconds", "best_val_accuracy", "trained", "failed")}
               for name, rows in results.items()}
    for name in summary:
        ms = [r["failed_build_ms"] for r in results[name] if r.get("failed_build_ms") is not None]
        summary[name]["failed_candidate_ms"] = statistics.median(ms) if ms else None
    trial = statistics.median(r["trial_seconds"] for r in results["cnncompile"])
    summary["cnncompile"]["trial_seconds"] = trial
    summary["cnncompile"]["rejection_fraction_of_trial"] = summary["cnncompile"]["failed_candidate_ms"] / 1000 / trial
    report = {"cpu": cpu(), "seeds": args.seeds, "trials": args.trials, "epochs": args.epochs, "baseline": base,
              "median": summary, "runs": results}
    print(json.dumps({"baseline": base, "median": summary}, indent=2))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "tune.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
