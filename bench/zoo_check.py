"""How long `cnncompile check` takes on each zoo file, as a whole process (issue 9's budget:
ResNet-50 under 1 s, every file under 2 s).

  python bench/zoo_check.py [--runs 5] [--keras] [STEM ...]

Runs are interleaved (one of each file per round) so the shared machine's noise spreads over
all files; medians are reported. The seed model (examples/mnist_cnn.yaml, 8 layers) is timed in
the same rounds as a baseline: on a busy machine it shows what the start-up alone costs now. --keras also times, in the same rounds, a fresh process that
builds keras.applications.<Model>(weights=None) and prints its summary(): what `check`
replaces. Results are printed and written to bench/results/zoo_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from run import timed  # noqa: E402  (bench/run.py: one timed subprocess, exits on failure)

from cnncompile.deploy.int8 import int8_capability  # noqa: E402
from tests.zoo_support import ZOO, keras_call, zoo_path  # noqa: E402

BUDGET_SECONDS = {"resnet50": 1.0}  # the issue's; 2 s for every other file
DEFAULT_BUDGET = 2.0
BASELINE = "mnist_cnn (baseline)"
KERAS_SNIPPET = ("import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; import sys; sys.path.insert(0, {root!r}); "
                 "from tests.zoo_support import build_keras; build_keras({stem!r}).summary()")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stems", nargs="*", default=[])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keras", action="store_true", help="also time Keras build + summary() per model")
    args = parser.parse_args()
    unknown = sorted(set(args.stems) - set(ZOO))
    if unknown:
        parser.error(f"unknown zoo files {unknown}; choose from {sorted(ZOO)}")
    stems = args.stems or list(ZOO)
    commands = {("check", BASELINE): [sys.executable, "-m", "cnncompile", "check", "examples/mnist_cnn.yaml"]}
    for stem in stems:
        commands[("check", stem)] = [sys.executable, "-m", "cnncompile", "check", str(zoo_path(stem).relative_to(ROOT))]
        if args.keras:
            commands[("keras", stem)] = [sys.executable, "-c", KERAS_SNIPPET.format(root=str(ROOT), stem=stem)]
    times: dict[tuple[str, str], list[float]] = {key: [] for key in commands}
    env = {"PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    for run in range(args.runs):
        keys = list(commands) if run % 2 == 0 else list(reversed(commands))
        for key in keys:
            times[key].append(timed(commands[key], env)[0])
        print(f"round {run + 1}/{args.runs} done", file=sys.stderr, flush=True)

    cpu = f"{int8_capability().describe()}; {os.cpu_count()} cores"
    print(f"cnncompile check, whole process, median of {args.runs} interleaved runs; {cpu}")
    header = f"{'zoo file':22s} {'check':>8s} {'budget':>7s}" + (f" {'Keras build+summary':>20s} {'ratio':>6s}" if args.keras else "")
    print(header)
    baseline = statistics.median(times[("check", BASELINE)])
    print(f"{BASELINE:22s} {baseline:7.2f}s")
    report = {"cpu": cpu, "runs": args.runs, "baseline_median_seconds": baseline,
              "baseline_seconds": times[("check", BASELINE)], "files": {}}
    for stem in stems:
        check = statistics.median(times[("check", stem)])
        budget = BUDGET_SECONDS.get(stem, DEFAULT_BUDGET)
        row = f"{stem:22s} {check:7.2f}s {budget:5.1f}s{'' if check < budget else ' OVER'}"
        entry = {"check_median_seconds": check, "check_seconds": times[("check", stem)], "budget_seconds": budget,
                 "within_budget": check < budget}
        if args.keras:
            keras = statistics.median(times[("keras", stem)])
            row += f" {keras:19.2f}s {keras / check:5.1f}x"
            entry.update(keras=keras_call(stem), keras_median_seconds=keras, keras_seconds=times[("keras", stem)])
        print(row)
        report["files"][stem] = entry
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "zoo_check.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
