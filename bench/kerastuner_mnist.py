"""The Keras-native anchor for `cnncompile tune`: examples/mnist_tune.yaml's space written by
hand with KerasTuner, as a Keras user would.

  python bench/kerastuner_mnist.py random|bayes|hyperband SEED TRIALS EPOCHS DATA_DIR OUT [MINUTES]

With MINUTES, a wall-clock budget: no trial starts after it (the one running finishes), as
`cnncompile tune --timeout`; TRIALS is then only an upper bound. hyperband is KerasTuner's
Hyperband with EPOCHS as max_epochs (factor 3), iterated until the budget ends. The model
each tool picks is scored on the test set (test_accuracy).

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
budget = float(sys.argv[7]) * 60 if len(sys.argv) > 7 else None
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
common = dict(objective="val_accuracy", seed=seed, directory=out, project_name=kind, max_consecutive_failed_trials=1000)


def counting_trained(base: type) -> type:
    """KerasTuner counts failed builds toward max_trials; cnncompile's `trials` counts trained
    models. For the same number of trained models, every failure extends the budget by one."""
    class Tuner(base):
        def on_trial_end(self, trial):
            if trial.status != "COMPLETED" and self.oracle.max_trials:  # FAILED (FailedTrialError) or INVALID
                self.oracle.max_trials += 1
            if budget is not None and time.perf_counter() - started > budget:
                self.oracle.max_trials = len(self.oracle.trials)  # the oracle starts no further trial
            super().on_trial_end(trial)
    return Tuner


if kind == "hyperband":  # max_trials is not Hyperband's; the budget (or its iterations) ends it
    tuner = counting_trained(keras_tuner.Hyperband)(build, max_epochs=epochs, factor=3,
                                                   hyperband_iterations=1 if budget is None else 100, **common)
else:
    tuner = counting_trained(keras_tuner.RandomSearch if kind == "random" else keras_tuner.BayesianOptimization)(
        build, max_trials=trials, **common)
tuner.search(x, y, epochs=epochs, batch_size=64, validation_split=0.2, verbose=0)
search_seconds = time.perf_counter() - started
states = [t.status for t in tuner.oracle.trials.values()]
best = tuner.oracle.get_best_trials(1)
test_accuracy = None
if best:
    picked = tuner.get_best_models(1)[0]
    test_accuracy = float(picked.evaluate(data[2], keras.utils.to_categorical(data[3], 10), batch_size=256,
                                          verbose=0, return_dict=True)["accuracy"])
print(json.dumps({"tool": f"kerastuner_{kind}", "seconds": time.perf_counter() - started,
                  "search_seconds": search_seconds, "test_accuracy": test_accuracy,
                  "best_val_accuracy": best[0].score if best else None,
                  "trained": sum(s == "COMPLETED" for s in states), "failed": sum(s != "COMPLETED" for s in states),
                  "failed_build_ms": 1000 * float(np.mean(failed_build_seconds)) if failed_build_seconds else None}))
