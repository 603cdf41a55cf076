"""The stall after the last epoch (issue 20): how long a training iterator takes to tear down,
and how much of a whole `cnncompile train` process is not training.

  python bench/stall.py teardown [--seconds 100]      # tf.data iterator destructor, autotune on/off
  python bench/stall.py process [--epochs 20] [--spec examples/mnist_bn_dropout.yaml]

teardown: the batches `train` feeds model.fit (backend/fitting.py), read slowly for SECONDS
(long enough for tf.data's autotuner to reach its 60 s optimization period), then the
iterator deleted; once with the autotuner on (as before the fix), once as `batches` makes it.
process: wall time of `cnncompile train` in a fresh process minus metrics.json's
train_seconds (the epochs' own time): start-up, data, test evaluation, report, and any stall.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def teardown(seconds: float, autotune: bool) -> float:
    import cnncompile.backend  # noqa: F401

    import numpy as np
    import tensorflow as tf

    from cnncompile.backend.fitting import batches

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


def process(spec: str, epochs: int, data_dir: str) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-stall-"))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnncompile", "train", spec, "--epochs", str(epochs), "--out", str(out),
                    "--data-dir", data_dir, "--quiet"], cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - started
    train = json.loads((out / "metrics.json").read_text())["train_seconds"]
    return {"spec": spec, "epochs": epochs, "wall_seconds": round(wall, 1), "train_seconds": round(train, 1),
            "not_training_seconds": round(wall - train, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["teardown", "process", "teardown-child"])
    parser.add_argument("--seconds", type=float, default=100)
    parser.add_argument("--autotune", action="store_true")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--spec", default="examples/mnist_bn_dropout.yaml")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    if args.what == "teardown-child":
        print(json.dumps({"autotune": args.autotune, "read_seconds": args.seconds,
                          "teardown_seconds": round(teardown(args.seconds, args.autotune), 2)}))
    elif args.what == "teardown":
        for autotune in (True, False):  # each in a fresh process
            flag = ["--autotune"] if autotune else []
            result = subprocess.run([sys.executable, __file__, "teardown-child", "--seconds", str(args.seconds), *flag],
                                    cwd=ROOT, check=True, capture_output=True, text=True)
            print(result.stdout.strip().splitlines()[-1], flush=True)
    else:
        print(json.dumps(process(args.spec, args.epochs, args.data_dir)), flush=True)


if __name__ == "__main__":
    main()
