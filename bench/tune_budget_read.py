"""Reads the studies bench/tune_budget.py kept, for why one tool beat another (issue 20).

  python bench/tune_budget_read.py [bench/results/tune_budget.json | the race's printed log] [--evaluate DATA_DIR]

Per cnncompile study (every trial's history.csv is kept in its directory):
- how each tool scores a trial: cnncompile before issue 20's change by the validation
  accuracy of the trial's last epoch (the weights it kept), since then and KerasTuner by its
  best epoch (keeping that epoch's weights: best_epoch.py, SaveBestEpoch). "best, scored by
  best epoch" reads an older study KerasTuner's way;
- how well an early epoch ranks the models that ran all epochs: Spearman's rank correlation
  of the validation accuracy after epoch 1 (and 3) with that after the last epoch, the
  evidence for or against stopping at rung 1.
Per KerasTuner study (trial.json files): how many trials had their best epoch before their
last one, i.e. how often its score and its kept weights come from an earlier epoch.
With --evaluate, every full-length model and every complete trial's kept model of our
studies is scored on the test set too: how well the validation ranks them, where the pick
stands among them, and which the pick would be if the ones told PRUNED after their last
epoch (before tune's fix) had been eligible.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def spearman(a: list[float], b: list[float]) -> float | None:
    """Rank correlation (ties ranked by order: accuracies of 1,000 images tie rarely)."""
    if len(a) < 3:
        return None
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def ours(directory: Path, test: tuple | None = None) -> dict:
    tune = directory / "tune"
    rows = {r["run"]: r for r in csv.DictReader((tune / "trials.csv").open()) if r["run"]}
    histories = {run: [float(h["val_accuracy"]) for h in csv.DictReader((tune / "trials" / run / "history.csv").open())]
                 for run in rows}
    complete = {run: h for run, h in histories.items() if rows[run]["state"] == "COMPLETE"}
    longest = max((len(h) for h in histories.values()), default=0)
    # Before the fix in tune's _Reporter, rung 9 could prune a trial after its last epoch.
    finished = {run: h for run, h in histories.items() if len(h) == longest}
    full = list(finished.values())
    best = json.loads((tune / "best.json").read_text())
    best_history = histories[Path(best["run"]).name]
    found = {}
    if test is not None:  # every full-length model on the test set; the pick had all been eligible
        tests = {run: _test_accuracy(tune / "trials" / run / "model.keras", test) for run in finished}
        pick = max(finished, key=lambda run: finished[run][-1])
        found = {"pick_if_full_length_eligible": {"run": pick, "val_accuracy": finished[pick][-1],
                                                  "test_accuracy": tests[pick]},
                 "spearman_val_test_full_length": spearman([finished[r][-1] for r in finished], list(tests.values())),
                 "full_length_val_test": [(round(finished[r][-1], 4), round(tests[r], 4)) for r in finished]}
        # Every trial that could be picked, by its score and the model it keeps (since issue 20's
        # change both are its best epoch's): does the validation score rank the test score?
        scored = {run: (float(rows[run]["value"]), _test_accuracy(tune / "trials" / run / "model.keras", test))
                  for run in complete}
        ranked = sorted(scored.values(), reverse=True)
        found |= {"complete_val_test": [(round(v, 4), round(t, 4)) for v, t in ranked],
                  "spearman_val_test_complete": spearman([v for v, _ in ranked], [t for _, t in ranked]),
                  "best_test_of_complete": max(t for _, t in ranked),
                  "pick_test_rank": 1 + sum(t > ranked[0][1] for _, t in ranked)}
    return {"complete": len(complete), "full_length": len(full),
            "full_length_told_pruned": sum(rows[run]["state"] == "PRUNED" for run in finished), **found,
            "best_last_epoch": best_history[-1], "best_its_best_epoch": max(best_history),
            "best_scored_by_best_epoch": max((max(h) for h in complete.values()), default=None),
            "trials_best_before_last": sum(h.index(max(h)) < len(h) - 1 for h in full),
            "spearman_epoch1_last": spearman([h[0] for h in full], [h[-1] for h in full]),
            "spearman_epoch3_last": spearman([h[2] for h in full], [h[-1] for h in full]) if longest > 3 else None}


def _test_accuracy(model_file: Path, test: tuple) -> float:
    import keras

    x, y = test
    return float(np.mean(np.argmax(keras.models.load_model(model_file).predict(x, batch_size=256, verbose=0), 1) == y))


def kerastuner(directory: Path, test: tuple | None = None) -> dict:
    trials = [json.loads(p.read_text()) for p in directory.glob("*/trial_*/trial.json")]
    done = [t for t in trials if t.get("status") == "COMPLETED"]
    # hyperband's trials train to tuner/epochs; the others to the study's epochs (the last step seen)
    last = max((t["best_step"] for t in done), default=0)
    before = sum(t["best_step"] < t["hyperparameters"]["values"].get("tuner/epochs", last + 1) - 1 for t in done)
    values = [t["hyperparameters"]["values"] for t in done]
    lengths = sorted({v["tuner/epochs"] for v in values if "tuner/epochs" in v})
    return {"complete": len(done), "trials_best_before_last": before,
            # Hyperband: models by how many epochs they trained, and how many continued an earlier one
            **({"models_by_epochs": {e: sum(v["tuner/epochs"] == e for v in values) for e in lengths},
                "continued": sum(v.get("tuner/trial_id") is not None for v in values)} if lengths else {})}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="?", default=str(ROOT / "bench" / "results" / "tune_budget.json"))
    parser.add_argument("--evaluate", metavar="DATA_DIR", help="score our full-length models on MNIST's test set")
    args = parser.parse_args()
    path = Path(args.results)
    test = None
    if args.evaluate:
        import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
        from cnncompile.data.formats import read_idx_dir

        data = read_idx_dir(Path(args.evaluate) / "mnist")
        test = (data[2], data[3])
    text = path.read_text()
    if text.lstrip().startswith("{"):
        runs_by_tool = json.loads(text)["runs"]
    else:  # the log of a race still running: its "seed S tool: {...}" lines
        runs_by_tool = {}
        for line in text.splitlines():
            if line.startswith("seed ") and ": {" in line:
                run = json.loads(line.split(": ", 1)[1])
                runs_by_tool.setdefault(run["tool"], []).append(run)
    table = []
    for tool, runs in runs_by_tool.items():
        read = []
        for run in runs:
            found = (ours if tool.startswith("cnncompile") else kerastuner)(Path(run["directory"]), test)
            read.append(found)
            table.append((run["started_utc"], run, found))
            print(f"seed {run['seed']} {tool}: {json.dumps(found)}")
        for key in ("spearman_epoch1_last", "spearman_epoch3_last"):
            values = [r[key] for r in read if r.get(key) is not None]
            if values:
                print(f"  {tool} median {key}: {statistics.median(values):.2f}")
    print("\n| seed | tool | started (UTC) | load at start | wall s | models trained | stopped early "
          "| best val_accuracy | test accuracy of the pick | trials best before their last epoch |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for started, run, found in sorted(table, key=lambda row: row[0]):
        print(f"| {run['seed']} | {run['tool']} | {started} | {run['load_at_start']:.1f} | {run['seconds']:.0f} "
              f"| {run['trained']} | {run.get('stopped_early', '–')} | {run['best_val_accuracy']:.4f} "
              f"| {run['test_accuracy']:.4f} | {found['trials_best_before_last']} of {found.get('full_length', found['complete'])} |")


if __name__ == "__main__":
    main()
