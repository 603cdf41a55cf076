"""Side-by-side benchmarks, whole-process wall time, alternating runs, medians.

  python bench/run.py check  [--runs 5] [--baseline DIR]
                                                  cnncompile check  vs  Keras build + summary()
                                                  (+ Python alone and Python importing pydantic, yaml
                                                  and click: the part of `check` that is not ours;
                                                  + `check` of the checkout in DIR, e.g. main's, when given)
  python bench/run.py instructions [--baseline DIR]
                                                  instructions executed by the same commands (valgrind):
                                                  a count no load on a shared machine changes
  python bench/run.py train  [--runs 3] [--epochs 5] [--data-dir ../shared/data]
                                                  cnncompile train  vs  the seed program
  python bench/run.py resnet [--runs 1]          train mnist_resnet vs mnist_bn_dropout (own epochs)
  python bench/run.py scale                      check time of synthetic residual specs, 1k-10k layers
  python bench/run.py stages [--runs 9]          where `check`'s CPU goes, stage by stage, in-process

Alternating the commands spreads the shared machine's noise over all of them. Results, with the
CPU they ran on (model, cores, the instruction-set features read from /proc/cpuinfo) and the
load average, are printed and written to bench/results/<name>.json (not committed; the docs
quote them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))

from cnncompile.cpu import cpu_features  # noqa: E402 (framework-free: reads /proc/cpuinfo)

# The features the docs name beside a number (those that change what TensorFlow or onnxruntime run).
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def machine() -> dict:
    """What the numbers were measured on, read from the machine, never assumed."""
    cpu = cpu_features()
    return {"cpu": cpu.model_name, "cores": len(os.sched_getaffinity(0)),
            "features": [name for name in FEATURES if name in cpu.flags], "python": sys.version.split()[0]}


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


def compare(name: str, ours, theirs, runs: int, warm_up: bool = False, extra: dict | None = None) -> dict:
    """Medians of `runs` alternating runs of ours and theirs (the order flips each round), and of
    `extra` commands (label -> command maker) timed in the same rounds for reference."""
    makers = {"ours": ours, "theirs": theirs, **(extra or {})}
    times: dict[str, list[float]] = {label: [] for label in makers}
    cpu: dict[str, list[float]] = {label: [] for label in makers}
    outputs: dict[str, list[str]] = {label: [] for label in makers}
    load_before = os.getloadavg()[0]
    for make in makers.values() if warm_up else ():  # untimed: byte-compiled modules, a warm file cache
        timed(*_command(make()))
    for i in range(runs):
        for label, make in list(makers.items())[:: 1 if i % 2 == 0 else -1]:
            seconds, cpu_seconds, out = timed(*_command(make()))
            times[label].append(seconds)
            cpu[label].append(cpu_seconds)
            outputs[label].append(out.strip().splitlines()[-1] if out.strip() else "")
            print(f"{name} {label:6s} run {i + 1}: {seconds:.3f} s wall, {cpu_seconds:.3f} s CPU  "
                  f"{outputs[label][-1][:100]}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    report = {"benchmark": name, "machine": machine(), "runs": runs, "median_seconds": med, "all_seconds": times,
              "ratio_ours_over_theirs": med["ours"] / med["theirs"], "median_cpu_seconds": med_cpu,
              "all_cpu_seconds": cpu, "cpu_ratio_ours_over_theirs": med_cpu["ours"] / med_cpu["theirs"],
              "load_average": [load_before, os.getloadavg()[0]], "last_output": outputs}
    print(json.dumps({k: report[k] for k in ("benchmark", "machine", "median_seconds", "ratio_ours_over_theirs",
                                             "median_cpu_seconds", "cpu_ratio_ours_over_theirs", "load_average")},
                     indent=2))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / f"{name}.json").write_text(json.dumps(report, indent=2))
    return report


def _command(made) -> tuple[list[str], dict | None]:
    """A command maker gives a command, or (command, extra environment)."""
    return made if isinstance(made, tuple) else (made, None)


def check_commands(baseline: str | None) -> dict:
    """`check` and the commands timed beside it: label -> command maker."""
    commands = {"ours": lambda: [PY, "-m", "cnncompile", "check", "examples/mnist_cnn.yaml"],
                "theirs": lambda: [PY, "bench/keras_summary.py"],
                "python": lambda: [PY, "-c", "pass"],
                "deps": lambda: [PY, "-c", "import click, pydantic.main, pydantic.fields, yaml"]}
    if baseline:
        # -P: the checkout on PYTHONPATH, not this one (python -m puts the current directory first).
        commands["baseline"] = lambda: ([PY, "-P", "-m", "cnncompile", "check", "examples/mnist_cnn.yaml"],
                                        {"PYTHONPATH": str(Path(baseline).resolve())})
    return commands


def instructions(baseline: str | None) -> None:
    """Instructions each command executes, counted by valgrind (cachegrind, no cache simulation):
    the same count however loaded the machine is, so two versions of `check` compare exactly.
    PYTHONHASHSEED is fixed: string hashing changes the count from run to run otherwise."""
    if not shutil.which("valgrind"):
        sys.exit("instructions: valgrind is not installed (apt-get install valgrind)")
    counts = {}
    for label, make in check_commands(baseline).items():
        if label == "theirs":
            continue  # Keras under valgrind: minutes, and its time is what the ratio needs
        command, env = _command(make())
        timed(command, env)  # byte-compiled modules first, as in the timed runs
        result = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                                 *command], cwd=ROOT, capture_output=True, text=True,
                                env={**user_environment(), "PYTHONHASHSEED": "0", **(env or {})})
        line = next(line for line in result.stderr.splitlines() if "I   refs:" in line or "I refs:" in line)
        counts[label] = int(line.rsplit(":", 1)[1].replace(",", ""))
        print(f"{label:9s} {counts[label] / 1e6:8.1f} M instructions", flush=True)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "instructions.json").write_text(json.dumps(
        {"machine": machine(), "instructions": counts}, indent=2))


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


# Runs in a fresh interpreter: each stage of `check` in the order the CLI takes them, with the
# CPU time the process has used so far read after each (the first reading is Python's start-up).
STAGES_CODE = """
import gc, resource, sys
def used():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000
marks = [("python start-up (site, .pth files)", used())]
import click
marks.append(("click", used()))
from cnncompile import cli
marks.append(("cnncompile.cli (its commands, diagnostics)", used()))
with cli._gc_paused(), cli._no_pydantic_plugins():
    import pydantic.main, pydantic.fields
    marks.append(("pydantic (main, fields, types)", used()))
    import yaml
    marks.append(("yaml", used()))
    import cnncompile.analysis.check
    marks.append(("the language's classes and the analysis modules", used()))
    import pydantic.plugin._loader
    marks.append(("pydantic's plugin loader (check's stand-in imports nothing)", used()))
    from cnncompile.language.model import ModelSpec
    ModelSpec.model_rebuild()
    marks.append(("ModelSpec's validator (built on first use)", used()))
    compiled = cnncompile.analysis.check.compile_file("examples/mnist_cnn.yaml")
    marks.append(("read, validate (+ each used layer's validator), wire, infer", used()))
from cnncompile.analysis import summary
summary.plain(compiled.info)
marks.append(("the summary table", used()))
previous = 0.0
for name, at in marks:
    print(f"{at - previous:.2f}\t{name}")
    previous = at
"""


def stages(runs: int) -> None:
    """The median CPU milliseconds of each stage of `check` over `runs` fresh processes."""
    by_stage: dict[str, list[float]] = {}
    for _ in range(runs):
        out = timed([PY, "-c", STAGES_CODE])[2]
        for line in out.strip().splitlines():
            ms, name = line.split("\t")
            by_stage.setdefault(name, []).append(float(ms))
    medians = {name: statistics.median(values) for name, values in by_stage.items()}
    for name, ms in medians.items():
        print(f"{ms:7.1f} ms  {name}")
    print(f"{sum(medians.values()):7.1f} ms  (sum of the medians)")
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "stages.json").write_text(json.dumps(
        {"machine": machine(), "runs": runs, "median_ms": medians, "all_ms": by_stage,
         "load_average": os.getloadavg()[0]}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["check", "instructions", "train", "resnet", "scale", "stages"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--baseline", help="check: also time `check` of the checkout in this directory (e.g. main's)")
    args = parser.parse_args()
    if args.which == "check":
        commands = check_commands(args.baseline)
        compare("check", commands.pop("ours"), commands.pop("theirs"), args.runs, warm_up=True, extra=commands)
    elif args.which == "instructions":
        instructions(args.baseline)
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
    elif args.which == "stages":
        stages(args.runs)
    else:
        def ours():
            out = tempfile.mkdtemp(prefix="bench-run-")
            return [PY, "-m", "cnncompile", "train", "examples/mnist_cnn.yaml", "--data-dir", args.data_dir,
                    "--out", out, "--epochs", str(args.epochs), "--quiet"]
        compare("train", ours, lambda: [PY, "bench/seed_mnist.py", args.data_dir, str(args.epochs)], args.runs)


if __name__ == "__main__":
    main()
