"""What one `tune` trial costs beyond a bare Keras `model.fit` of the same model (issue 20).

  python bench/trial_overhead.py [--epochs 2] [--rounds 2] [--data-dir ../shared/data]

examples/mnist_tune.yaml's baseline candidate, trained for --epochs epochs on MNIST's 5,000
training images (the last 20% for validation), each variant in a fresh process, the
variants alternated round by round (the machine is shared):

  bare         build_model + compile + fit(x, y, validation_split=0.2), as KerasTuner runs a trial
  determinism  bare with TensorFlow's op determinism on (what every cnncompile run turns on)
  trial        cnncompile's `train` as tune calls it: run directory, run.json, op determinism,
               the seeded tf.data pipeline, a full checkpoint after every epoch, history.csv,
               curves.png, model.keras (no test set)

Each process reports the wall and CPU seconds of its trial (model built to files written;
TensorFlow's import and the data loading are outside: tune pays those once per process)
and of the epochs alone. Prints one JSON line per run and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "mnist_tune.yaml"
VARIANTS = ("bare", "determinism", "trial")


def one(variant: str, epochs: int, data_dir: str) -> dict:
    """In this process: one trial of the variant; its wall and CPU seconds."""
    import keras
    import tensorflow as tf

    import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
    from cnncompile.analysis.check import compile_file
    from cnncompile.backend import fitting
    from cnncompile.backend.builder import build_model
    from cnncompile.data.datasets import load_dataset
    from cnncompile.run.train import TrainOptions, train

    compiled = compile_file(SPEC)
    training = compiled.spec.training
    dataset = load_dataset(training.dataset, data_dir=Path(data_dir), image_shape=(28, 28, 1), seed=training.seed)
    epoch_seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.started)

    wall, cpu = time.perf_counter(), time.process_time()
    if variant == "trial":
        out = Path(tempfile.mkdtemp(prefix="bench-trial-")) / "0000"
        train(compiled, dataset, TrainOptions(out, epochs, training.batch_size, training.seed, evaluate_test=False),
              progress=Timer())
    else:
        keras.utils.set_random_seed(training.seed)
        if variant == "determinism":
            tf.config.experimental.enable_op_determinism()
        model = build_model(compiled.spec)
        model.compile(optimizer=fitting.optimizer(training, 0), loss=fitting.loss(training),
                      metrics=list(fitting.metrics(training).values()))
        y = fitting.labels(training, dataset.y_train, len(dataset.labels))
        model.fit(dataset.x_train, y, epochs=epochs, batch_size=training.batch_size, validation_split=0.2,
                  verbose=0, callbacks=[Timer()])
    return {"variant": variant, "trial_seconds": time.perf_counter() - wall,
            "trial_cpu_seconds": time.process_time() - cpu, "epoch_seconds": epoch_seconds,
            "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.epochs, args.data_dir)))
        return
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for variant in VARIANTS[r % 3:] + VARIANTS[:r % 3]:
            result = subprocess.run([sys.executable, __file__, "--one", variant, "--epochs", str(args.epochs),
                                     "--data-dir", args.data_dir], capture_output=True, text=True, check=True)
            row = json.loads(result.stdout.strip().splitlines()[-1])
            runs[variant].append(row)
            print(json.dumps(row), flush=True)
    for variant, rows in runs.items():
        print(f"{variant:12s} trial {statistics.median(r['trial_seconds'] for r in rows):6.2f} s wall, "
              f"{statistics.median(r['trial_cpu_seconds'] for r in rows):6.2f} s CPU; epochs after the first "
              f"{statistics.median(s for r in rows for s in r['epoch_seconds'][1:]):5.2f} s")


if __name__ == "__main__":
    main()
