"""The transfer example's measurement (examples/transfer, issue 17): does starting from a network
trained on the digits 0-4 help learn the digits 5-9 from 50 images each?

Trains base.yaml once (seed 0), then finetune.yaml and scratch.yaml with seeds 0, 1, 2 (same
epochs, data and batch size), from 50 and from 10 images per class, through the library's `train` (what `cnncompile train` calls), and
prints every test accuracy on the 5-9 test set and the medians.

Usage: CNNCOMPILE_DATA_DIR=... python examples/transfer/make_data.py && python bench/transfer.py
(from the repository root; runs go to runs/transfer_*).
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

from cnncompile.analysis.check import compile_file
from cnncompile.run.train import train_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "transfer"
SEEDS = (0, 1, 2)
PER_CLASS = (50, 10)  # the example's 50 images per class, and 10 (make_data.py writes both)


def _spec(kind: str, per_class: int):
    """The example's spec; for another training-set size, a copy beside it reading that file."""
    path = EXAMPLE / f"{kind}.yaml"
    if per_class != 50:
        copy = EXAMPLE / f".{kind}_{per_class}.yaml"  # beside the original: relative paths still hold
        copy.write_text(path.read_text().replace("digits5to9_50.npz", f"digits5to9_{per_class}.npz"))
        path = copy
    return compile_file(path)


def main() -> None:
    started = time.perf_counter()
    base = train_spec(compile_file(EXAMPLE / "base.yaml"), out=ROOT / "runs" / "transfer_base", force=True)
    print(f"base (digits 0-4): test accuracy {base.metrics['test_accuracy']:.4f}")
    for per_class in PER_CLASS:
        scores: dict[str, list[float]] = {"finetune": [], "scratch": []}
        for seed in SEEDS:
            for kind in scores:
                result = train_spec(_spec(kind, per_class), seed=seed, force=True, log=lambda m: None,
                                    out=ROOT / "runs" / f"transfer_{kind}_{per_class}_seed{seed}")
                scores[kind].append(result.metrics["test_accuracy"])
                print(f"{per_class} per class, {kind:8s} seed {seed}: test accuracy {scores[kind][-1]:.4f}")
        medians = {kind: statistics.median(values) for kind, values in scores.items()}
        print(f"median test accuracy on digits 5-9 ({per_class} training images per class, {len(SEEDS)} seeds): "
              f"finetune {medians['finetune']:.4f}, scratch {medians['scratch']:.4f}, "
              f"gain {100 * (medians['finetune'] - medians['scratch']):+.1f} points")
    print(f"{platform.processor() or platform.machine()}, {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
