"""What `cnncompile check` costs on hostile and very large specs (issue 21): CPU seconds and peak
resident memory of the whole process, each spec's answer (exit code, first error line).

  python bench/hostile.py [--runs 3]

CPU time (user + system of the child), not wall time: on a shared machine the wall clock
measures the neighbours. The seed model and one zoo file are timed in the same rounds as the
baseline. Results are printed and written to bench/results/hostile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def nested_doublings(depth: int) -> str:
    blocks = "\n".join(f"  b{i}: {{layers: [{{block: b{i + 1}}}, {{block: b{i + 1}}}]}}" for i in range(depth))
    return (f"name: h\ninput: {{shape: [4, 4, 1]}}\nblocks:\n{blocks}\n"
            f"  b{depth}: {{layers: [{{type: ReLU}}]}}\nlayers:\n  - {{block: b0}}\n")


def expression(text: str) -> str:
    return ("name: h\ninput: {shape: [4, 4, 1]}\nblocks:\n  unit:\n"
            f"    layers: [{{type: Dense, units: \"${{{text}}}\"}}]\nlayers:\n  - {{block: unit}}\n")


def many_layers(count: int, typos: int = 0) -> str:
    lines = [f"  - {{type: ReLU, name: layer_{i:05d}}}" for i in range(count)]
    for i in range(1, count, max(1, count // max(typos, 1)))[:typos]:
        lines[i] = f"  - {{type: ReLU, name: layer_{i:05d}, inputs: [layer_{i - 1:05d}x]}}"
    return "name: h\ninput: {shape: [4, 4, 1]}\nlayers:\n" + "\n".join(lines) + "\n"


SPECS = {
    "2**40 nested uses": nested_doublings(40),
    "repeat: 10**9": ("name: h\ninput: {shape: [4, 4, 1]}\nblocks:\n  unit: {layers: [{type: ReLU}]}\n"
                      "layers:\n  - {block: unit, repeat: 1000000000}\n"),
    "'x' * 10**10": expression("'x' * 10**10"),
    "[0] * 10**10": expression("[0] * 10**10"),
    "%-format, width 10**9": expression("'%999999999d' % 1"),
    "400 unary minus": expression("-" * 400 + "1"),
    "50,000 layers": many_layers(50_000),
    "20,000 layers, 300 typos": many_layers(20_000, 300),
}


def run(path: Path) -> tuple[float, float, int, str]:
    """(CPU seconds, peak RSS in MB, exit code, first error line) of one `check` process;
    os.wait4 gives that child's own resource usage."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-m", "cnncompile", "check", str(path)], cwd=ROOT,
                                 env={**os.environ, "NO_COLOR": "1"}, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        first = next((line for line in err.read().splitlines() if "error:" in line), "")
    return (usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, child.returncode,
            first.split(": error: ", 1)[-1][:110])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"mnist_cnn (baseline)": ROOT / "examples" / "mnist_cnn.yaml",
                 "zoo resnet50": ROOT / "examples" / "zoo" / "resnet50.yaml"}
        for i, (label, text) in enumerate(SPECS.items()):
            paths[label] = Path(tmp) / f"h{i}.yaml"
            paths[label].write_text(text)
        samples: dict[str, list] = {label: [] for label in paths}
        for _ in range(args.runs):  # interleaved rounds: the machine's noise spreads over all
            for label, path in paths.items():
                samples[label].append(run(path))
    rows = {}
    for label, runs in samples.items():
        cpu = statistics.median(r[0] for r in runs)
        peak = max(r[1] for r in runs)
        rows[label] = {"cpu_seconds": round(cpu, 2), "peak_rss_mb": round(peak), "exit": runs[0][2],
                       "answer": runs[0][3]}
        print(f"{label:28} {cpu:6.2f} s CPU {peak:5.0f} MB  exit {runs[0][2]}  {runs[0][3]}")
    out = ROOT / "bench" / "results" / "hostile.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cpu": platform.processor() or platform.machine(), "load": os.getloadavg(),
                               "runs": args.runs, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
