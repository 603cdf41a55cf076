"""The stall after the last epoch (issue 20): how long a training iterator takes to tear down,
and where the time of a whole `cnncompile train` process goes.

  python bench/stall.py teardown [--seconds 100]      # tf.data iterator destructor, autotune on/off
  python bench/stall.py process [--epochs 1 3 10] [--rounds 1] [--spec examples/mnist_bn_dropout.yaml]

teardown: the batches `train` feeds model.fit (backend/fitting.py), read slowly for SECONDS
(long enough for tf.data's autotuner to reach its 60 s optimization period), then the
iterator deleted; once with the autotuner on (as before the fix), once as `batches` makes it.

process: `cnncompile train SPEC --epochs N --quiet` in a fresh process (the CLI's own `main`,
with timestamps taken around Keras's fit/evaluate/predict and at each epoch's begin and end),
timed from spawn to exit by this process. The issue's measure is the whole process minus the
training time (first epoch's begin to last epoch's end); it is split into
  start_up       spawn -> first epoch begins (Python, TensorFlow import, data, model build)
  stall          last epoch ends -> model.fit returns (what issue 20 saw: 49-55 s)
  finish         model.fit returns -> the command returns (test evaluation, report, saving)
  exit           the command returns -> the process has exited (interpreter and TF teardown)
Several epoch counts show whether anything after the last epoch grows with the run's length.
Results go to bench/results/stall.json (not committed; docs/precision.md quotes them).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's cnncompile, not an installed one


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
    """Run the CLI's `train` in this process, writing timestamps to MARKS_FILE when it returns."""
    import cnncompile.backend  # noqa: F401  (TensorFlow's quiet import, as the CLI has it)

    import keras

    from cnncompile.cli import main as cli

    marks: dict[str, list[float]] = {"epoch_begin": [], "epoch_end": []}

    class Marks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            marks["epoch_begin"].append(time.time())

        def on_epoch_end(self, epoch, logs=None):
            marks["epoch_end"].append(time.time())

    def timed(name: str, method):
        def wrapper(self, *args, **kwargs):
            if name == "fit":  # last, after train's checkpoint callback
                kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), Marks()]
            marks.setdefault(f"{name}_called", []).append(time.time())
            try:
                return method(self, *args, **kwargs)
            finally:
                marks.setdefault(f"{name}_returned", []).append(time.time())
        return wrapper

    for name in ("fit", "evaluate", "predict"):
        setattr(keras.Model, name, timed(name, getattr(keras.Model, name)))
    try:
        cli(["train", spec, "--epochs", str(epochs), "--out", out, "--data-dir", data_dir, "--quiet", "--force"],
            prog_name="cnncompile", standalone_mode=False)
    finally:
        marks["returned"] = [time.time()]
        Path(marks_file).write_text(json.dumps(marks))


def process(spec: str, epochs: int, data_dir: str) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-stall-"))
    marks_file = out.with_suffix(".marks.json")
    spawned = time.time()
    subprocess.run([sys.executable, __file__, "process-child", "--spec", spec, "--epochs", str(epochs), "--out", str(out),
                    "--data-dir", data_dir, "--marks", str(marks_file)], cwd=ROOT, check=True, capture_output=True,
                   env=CHILD_ENV)
    exited = time.time()
    marks = json.loads(marks_file.read_text())
    began, ended = marks["epoch_begin"][0], marks["epoch_end"][-1]

    def between(name: str) -> float:  # seconds inside Keras's `name` calls
        return sum(r - c for c, r in zip(marks.get(f"{name}_called", []), marks.get(f"{name}_returned", [])))

    segments = {
        "wall": exited - spawned,
        "training": ended - began,
        "start_up": began - spawned,
        "stall": marks["fit_returned"][-1] - ended,
        "finish": marks["returned"][0] - marks["fit_returned"][-1],
        "of_which_evaluate": between("evaluate"),
        "of_which_predict": between("predict"),
        "exit": exited - marks["returned"][0],
        "train_seconds": json.loads((out / "metrics.json").read_text())["train_seconds"],
    }
    segments["not_training"] = segments["wall"] - segments["training"]
    return {"spec": spec, "epochs": epochs, "load": round(os.getloadavg()[0], 1),
            **{name: round(value, 2) for name, value in segments.items()}}


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
        for _ in range(args.rounds):
            for epochs in args.epochs:
                runs.append(process(args.spec, epochs, args.data_dir))
                print(json.dumps(runs[-1]), flush=True)
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        (ROOT / "bench" / "results" / "stall.json").write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
