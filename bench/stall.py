"""The stall after the last epoch (issue 20): how long a training iterator takes to tear down,
and where the time of a whole `cnncompile train` process goes.

  python bench/stall.py teardown [--seconds 100]      # tf.data iterator destructor, autotune on/off
  python bench/stall.py process [--epochs 1 3 10] [--rounds 1] [--spec examples/mnist_bn_dropout.yaml]
                               [--against CHECKOUT]

teardown: the batches `train` feeds model.fit (backend/fitting.py), read slowly for SECONDS
(long enough for tf.data's autotuner to reach its 60 s optimization period), then the
iterator deleted; once with the autotuner on (as before the fix), once as `batches` makes it.

process: `cnncompile train SPEC --epochs N --quiet` in a fresh process (the CLI's own `main`,
with timestamps taken around Keras's fit/evaluate/predict and at each epoch's begin and end),
timed from spawn to exit by this process. The issue's measure is the whole process minus the
training time (first epoch's begin to last epoch's end); it is split into
  start_up       spawn -> first epoch begins (Python, TensorFlow import, data, model build)
  stall          last epoch ends -> model.fit returns (what issue 20 saw: 49-55 s)
  finish         model.fit returns -> the command returns (test evaluation, report, saving),
                 of which test_pass: train's pass over the test set (`_evaluate`)
  exit           the command returns -> the process has exited (interpreter and TF teardown)
each in wall-clock seconds and, as cpu_*, in CPU seconds of the child (all its threads): on a
shared machine the wall clock follows the load, the CPU time much less.
Several epoch counts show whether anything after the last epoch grows with the run's length.
--against CHECKOUT alternates every run with the same run of another checkout's cnncompile (a
copy of main: `git archive main | tar -x -C DIR`), marked "code": "against" in the results.
Results go to bench/results/stall.json (not committed; docs/precision.md quotes them).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_env(checkout: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(checkout)}  # that checkout's cnncompile, not an installed one


CHILD_ENV = child_env(ROOT)


def teardown(seconds: float, autotune: bool) -> float:
    import cnncompile.backend  # noqa: F401

    import numpy as np
    import tensorflow as tf

    from cnncompile.data.sources import array_batches as batches

    x, y = np.zeros((5000, 28, 28, 1), np.uint8), np.zeros((5000, 10), np.float32)
    data = batches(x, y, batch_size=64, shuffle=True, seed=0, first_epoch=0, epochs=100)
    if autotune:
        options = tf.data.Options()
        options.autotune.enabled = True
        data = data.with_options(options)
    iterator, started = iter(data), time.perf_counter()
    while time.perf_counter() - started < seconds:
        next(iterator)
        time.sleep(0.05)  # slow reads, as a training step would make them
    started = time.perf_counter()
    del iterator
    gc.collect()
    return time.perf_counter() - started


def process_child(spec: str, epochs: int, out: str, data_dir: str, marks_file: str) -> None:
    """Run the CLI's `train` in this process, writing (wall, CPU) timestamps to MARKS_FILE when it returns."""
    from cnncompile import cli as commands

    # What `train` does before TensorFlow loads (the language imported, the spec compiled), then
    # TensorFlow imported as `train` imports it (an older checkout: plainly), for the patches below.
    commands._compile(spec)
    with getattr(commands, "_framework_import", contextlib.nullcontext)():
        from cnncompile.run import train  # first: cnncompile.backend sets TensorFlow's environment

        import keras

    marks: dict[str, list[tuple[float, float]]] = {"epoch_begin": [], "epoch_end": []}

    def mark(name: str) -> None:
        marks.setdefault(name, []).append((time.time(), time.process_time()))

    class Marks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            mark("epoch_begin")

        def on_epoch_end(self, epoch, logs=None):
            mark("epoch_end")

    def timed(name: str, function, add_marks: bool = False):
        def wrapper(*args, **kwargs):
            if add_marks:  # last, after train's checkpoint callback
                kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), Marks()]
            mark(f"{name}_called")
            try:
                return function(*args, **kwargs)
            finally:
                mark(f"{name}_returned")
        return wrapper

    keras.Model.fit = timed("fit", keras.Model.fit, add_marks=True)
    train._evaluate = timed("test_pass", train._evaluate)  # _finish calls it through the module
    try:
        commands.main(["train", spec, "--epochs", str(epochs), "--out", out, "--data-dir", data_dir, "--quiet", "--force"],
            prog_name="cnncompile", standalone_mode=False)
    finally:
        mark("returned")
        Path(marks_file).write_text(json.dumps(marks))


def process(spec: str, epochs: int, data_dir: str, checkout: Path = ROOT) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-stall-"))
    marks_file = out.with_suffix(".marks.json")
    load, cpu_before = os.getloadavg()[0], _children_cpu()
    spawned = time.time()
    subprocess.run([sys.executable, __file__, "process-child", "--spec", spec, "--epochs", str(epochs), "--out", str(out),
                    "--data-dir", data_dir, "--marks", str(marks_file)], cwd=ROOT, check=True, capture_output=True,
                   env=child_env(checkout))
    exited, cpu_total = time.time(), _children_cpu() - cpu_before
    marks = {name: list(zip(*pairs)) for name, pairs in json.loads(marks_file.read_text()).items()}  # name: (walls, cpus)
    segments = {}
    for kind, (spawn, exit_) in {"wall": (spawned, exited), "cpu": (0.0, cpu_total)}.items():
        at = {name: values[0 if kind == "wall" else 1] for name, values in marks.items()}  # name: times of this kind
        prefix = "" if kind == "wall" else "cpu_"
        segments |= {
            f"{prefix}whole": exit_ - spawn,
            f"{prefix}training": at["epoch_end"][-1] - at["epoch_begin"][0],
            f"{prefix}start_up": at["epoch_begin"][0] - spawn,
            f"{prefix}stall": at["fit_returned"][-1] - at["epoch_end"][-1],
            f"{prefix}finish": at["returned"][0] - at["fit_returned"][-1],
            f"{prefix}test_pass": sum(r - c for c, r in zip(at.get("test_pass_called", ()), at.get("test_pass_returned", ()))),
            f"{prefix}exit": exit_ - at["returned"][0],
        }
        segments[f"{prefix}not_training"] = segments[f"{prefix}whole"] - segments[f"{prefix}training"]
    segments["train_seconds"] = json.loads((out / "metrics.json").read_text())["train_seconds"]
    return {"spec": spec, "epochs": epochs, "code": "this" if checkout == ROOT else "against", "load": round(load, 1),
            **{name: round(value, 2) for name, value in segments.items()}}


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["teardown", "process", "teardown-child", "process-child"])
    parser.add_argument("--seconds", type=float, default=100)
    parser.add_argument("--autotune", action="store_true")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--marks")
    parser.add_argument("--spec", default="examples/mnist_bn_dropout.yaml")
    parser.add_argument("--against", type=Path, help="another checkout, run alternately with this one")
    parser.add_argument("--data-dir", default=os.environ.get("CNNCOMPILE_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    args = parser.parse_args()
    if args.what == "teardown-child":
        print(json.dumps({"autotune": args.autotune, "read_seconds": args.seconds,
                          "teardown_seconds": round(teardown(args.seconds, args.autotune), 2)}))
    elif args.what == "teardown":
        for autotune in (True, False):  # each in a fresh process
            flag = ["--autotune"] if autotune else []
            result = subprocess.run([sys.executable, __file__, "teardown-child", "--seconds", str(args.seconds), *flag],
                                    cwd=ROOT, check=True, capture_output=True, text=True, env=CHILD_ENV)
            print(result.stdout.strip().splitlines()[-1], flush=True)
    elif args.what == "process-child":
        process_child(args.spec, args.epochs[0], args.out, args.data_dir, args.marks)
    else:
        runs = []
        for round_ in range(args.rounds):
            for epochs in args.epochs:
                checkouts = [ROOT, args.against] if args.against else [ROOT]
                for checkout in checkouts if round_ % 2 == 0 else checkouts[::-1]:  # neither always first
                    runs.append(process(args.spec, epochs, args.data_dir, checkout))
                    print(json.dumps(runs[-1]), flush=True)
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        (ROOT / "bench" / "results" / "stall.json").write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
