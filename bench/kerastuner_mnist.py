"""The Keras-native anchor for `cnncompile tune`: examples/mnist_tune.yaml's space written by
hand with KerasTuner, as a Keras user would.

  python bench/kerastuner_mnist.py random|bayes SEED TRIALS EPOCHS DATA_DIR OUT

Same data (MNIST 5,000 train images, the last 20% for validation, as Keras's
validation_split takes them), same model family, same ranges, same budget (150,000
params). Infeasible candidates are found the only way Keras offers: building the model
(a kernel that outgrows its input raises there), then count_params() for the budget,
raising FailedTrialError. Failed builds do not count toward the trials (as in cnncompile). Prints one JSON line: wall time, best val_accuracy, how many
models trained and failed, and the mean time a failed build cost.
"""

from __future__ import annotations

import json
import sys
import time

started = time.perf_counter()

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402
from pathlib import Path  # noqa: E402

from cnncompile.data.formats import read_idx_dir  # noqa: E402

kind, seed, trials, epochs, data_dir, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
MAX_PARAMS = 150_000
failed_build_seconds: list[float] = []


def build(hp: keras_tuner.HyperParameters) -> keras.Model:
    t0 = time.perf_counter()
    try:
        model = keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(hp.Choice("conv1_filters", [16, 32, 64]), 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, hp.Choice("conv2_kernel", [3, 5, 7]), activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(hp.Choice("conv3_filters", [32, 64, 128]), hp.Choice("conv3_kernel", [3, 5]),
                                activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(hp.Int("hidden_units", 32, 256, step=32), activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ])
        if model.count_params() > MAX_PARAMS:
            raise keras_tuner.errors.FailedTrialError(f"{model.count_params()} params over {MAX_PARAMS}")
    except Exception:
        failed_build_seconds.append(time.perf_counter() - t0)
        raise
    model.compile(optimizer=keras.optimizers.RMSprop(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


data = read_idx_dir(Path(data_dir) / "mnist")
x, y = data[0], keras.utils.to_categorical(data[1], 10)
common = dict(objective="val_accuracy", max_trials=trials, seed=seed, directory=out, project_name=kind,
              max_consecutive_failed_trials=1000)


def counting_trained(base: type) -> type:
    """KerasTuner counts failed builds toward max_trials; cnncompile's `trials` counts trained
    models. For the same number of trained models, every failure extends the budget by one."""
    class Tuner(base):
        def on_trial_end(self, trial):
            if trial.status != "COMPLETED":  # FAILED (FailedTrialError) or INVALID (any other error)
                self.oracle.max_trials += 1
            super().on_trial_end(trial)
    return Tuner


tuner = counting_trained(keras_tuner.RandomSearch if kind == "random" else keras_tuner.BayesianOptimization)(
    build, **common)
tuner.search(x, y, epochs=epochs, batch_size=64, validation_split=0.2, verbose=0)
states = [t.status for t in tuner.oracle.trials.values()]
best = tuner.oracle.get_best_trials(1)
print(json.dumps({"tool": f"kerastuner_{kind}", "seconds": time.perf_counter() - started,
                  "best_val_accuracy": best[0].score if best else None,
                  "trained": sum(s == "COMPLETED" for s in states), "failed": sum(s != "COMPLETED" for s in states),
                  "failed_build_ms": 1000 * float(np.mean(failed_build_seconds)) if failed_build_seconds else None}))
