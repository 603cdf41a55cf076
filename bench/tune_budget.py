"""`cnncompile tune` with a multi-fidelity pruner against KerasTuner's Hyperband and RandomSearch
at equal wall-clock budgets, on examples/mnist_tune.yaml's space.

  python bench/tune_budget.py [--minutes 10] [--seeds 0 1 2] [--epochs 9] [--pruner hyperband]

Every study gets the same budget: no trial starts after it (the one running finishes, so
each tool overruns by at most one trial; the seconds are reported). Trials train up to
--epochs epochs (the multi-fidelity tools stop most earlier). Per seed the tools run one
after another, the order rotated per seed, each as a fresh process. Reported per run: best
validation accuracy, the picked model's test accuracy, models trained. Medians and every
run go to bench/results/tune_budget.json (not committed; docs/tuning.md quotes them).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune import PY, ROOT, SPEC, cpu, run  # bench/tune.py: the same helpers


def ours(seed: int, minutes: float, epochs: int, pruner: str, data_dir: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-tune-budget-"))
    tree = yaml.safe_load(SPEC.read_text())
    tree["search"].update(seed=seed, pruner=pruner)
    spec = work / "mnist_tune.yaml"
    spec.write_text(yaml.safe_dump(tree, sort_keys=False))
    seconds, _ = run([PY, "-m", "cnncompile", "tune", str(spec), "--trials", "1000", "--epochs", str(epochs),
                      "--timeout", str(minutes), "--out", str(work / "tune"), "--data-dir", data_dir])
    best = json.loads((work / "tune" / "best.json").read_text())
    rows = list(csv.DictReader((work / "tune" / "trials.csv").open()))
    done = [r for r in rows if r["run"] and r["state"] in ("COMPLETE", "PRUNED")]
    # KerasTuner's best val_accuracy is the highest single epoch of any trial (its pick's); ours
    # picks by the score around the best epoch (search.smoothing), so both are reported: the
    # highest single epoch (like for like) and the pick's own.
    highest = max(float(r["best_value"]) for r in done if r["best_value"])
    return {"tool": f"cnncompile_{pruner}", "seconds": seconds, "best_val_accuracy": highest,
            "pick_val_accuracy": best["val_accuracy"], "pick_score": best.get("score"),
            "test_accuracy": best["test_accuracy"], "best_epoch": best.get("epoch"), "trained": len(done),
            "stopped_early": sum(r["state"] == "PRUNED" for r in done),
            "rejected": sum(1 for r in rows if r["reason"].startswith(("shape", "budget", "invalid"))),
            "directory": str(work)}  # kept: every trial's history.csv, for reading the pruner's decisions


def kerastuner(kind: str, seed: int, minutes: float, epochs: int, data_dir: str) -> dict:
    work = tempfile.mkdtemp(prefix=f"bench-kt-{kind}-")
    seconds, out = run([PY, "bench/kerastuner_mnist.py", kind, str(seed), "1000", str(epochs), data_dir, work,
                        str(minutes)])
    result = json.loads(out.strip().splitlines()[-1])
    result["seconds_in_process"], result["seconds"] = result["seconds"], seconds
    result["directory"] = work
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--pruner", default="hyperband", choices=["hyperband", "successive_halving", "median", "none"])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    tools = [(f"cnncompile_{args.pruner}", lambda s: ours(s, args.minutes, args.epochs, args.pruner, args.data_dir)),
             ("kerastuner_hyperband", lambda s: kerastuner("hyperband", s, args.minutes, args.epochs, args.data_dir)),
             ("kerastuner_random", lambda s: kerastuner("random", s, args.minutes, args.epochs, args.data_dir))]
    results: dict[str, list[dict]] = {name: [] for name, _ in tools}
    print("CPU:", cpu(), flush=True)
    print(f"pruner {args.pruner}, {args.minutes} minutes a study, seeds {args.seeds}, up to {args.epochs} epochs a model",
          flush=True)
    for i, seed in enumerate(args.seeds):
        for name, call in tools[i % 3:] + tools[:i % 3]:
            # The machine is shared: the load at each study's start goes with its numbers.
            load, started = os.getloadavg()[0], time.strftime("%H:%M:%S", time.gmtime())
            result = {**call(seed), "seed": seed, "load_at_start": round(load, 2), "started_utc": started,
                      "load_at_end": round(os.getloadavg()[0], 2)}
            results[name].append(result)
            print(f"seed {seed} {name}: {json.dumps(result)}", flush=True)
    summary = {name: {key: statistics.median(r[key] for r in rows if r.get(key) is not None)
                      for key in ("seconds", "best_val_accuracy", "test_accuracy", "trained")}
               for name, rows in results.items()}
    report = {"cpu": cpu(), "minutes": args.minutes, "seeds": args.seeds, "epochs": args.epochs,
              "median": summary, "runs": results}
    print(json.dumps({"median": summary}, indent=2))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "tune_budget.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
