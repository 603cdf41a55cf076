"""`cnncompile train`: build the model, fit it on the dataset, leave a complete run directory.

Run directory (atomic writes throughout, see rundir.py):
  model.keras      the trained inference model (raw 0-255 pixels in, probabilities out)
  metrics.json     test accuracy/loss, epochs, timing; its presence marks the run complete
  history.csv      one row per completed epoch
  curves.png       loss and accuracy per epoch
  run.json         spec sha256, seed, dataset source and file hashes, versions, command line
  checkpoint/      state.json + the latest epoch's training model, for resuming after a crash
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)

import keras
import numpy as np

from cnncompile.backend import training as kt
from cnncompile.backend.builder import build_model, cross_check
from cnncompile.data.datasets import Dataset
from cnncompile.frontend import CompiledSpec
from cnncompile.rundir import atomic_path, read_json, write_history, write_json
from cnncompile.spec.training import Distribute


class RunError(Exception):
    """A run that cannot proceed as asked (changed spec, missing training section, ...)."""


@dataclass
class TrainOptions:
    out: Path
    epochs: int
    batch_size: int
    seed: int
    force: bool = False
    distribute: Distribute | None = None
    # `tune` ranks trials on validation data and scores only the best on the test set
    # (evaluate_test below); its trials skip the test set entirely.
    evaluate_test: bool = True


@dataclass
class RunResult:
    out: Path
    metrics: dict
    resumed_from: int  # 0 for a fresh run
    already_complete: bool = False
    chief: bool = True  # False on the other workers of a multi-worker run, which write nothing


def run_state(out: Path) -> str:
    """'complete', 'resumable' or 'new'."""
    if (out / "metrics.json").exists():
        return "complete"
    if (out / "checkpoint" / "state.json").exists():
        return "resumable"
    return "new"


def train(compiled: CompiledSpec, dataset: Dataset, options: TrainOptions, *,
          log: Callable[[str], None] = lambda message: None,
          progress: keras.callbacks.Callback | None = None, error_prefix: str = "error: ") -> RunResult:
    spec = compiled.spec
    if spec.training is None:
        raise RunError("the spec has no training: section; add one (see spec/README.md#training)")
    cluster = None
    if options.distribute is not None:
        from cnncompile import distributed

        cluster = distributed.connect(options.distribute, error_prefix)
        log(cluster.describe(options.batch_size))
    if cluster is None or cluster.is_chief:
        return _train(compiled, dataset, options, options.out, cluster, log, progress)
    # The other workers train in lockstep but keep their files in a temporary directory,
    # removed at the end, as TensorFlow's multi-worker guide does: only the chief's run counts.
    scratch = Path(tempfile.mkdtemp(prefix=f"cnncompile-worker{cluster.index}-"))
    try:
        result = _train(compiled, dataset, options, scratch, cluster, log, None)
        return RunResult(options.out, result.metrics, result.resumed_from, result.already_complete, chief=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train(compiled: CompiledSpec, dataset: Dataset, options: TrainOptions, out: Path, cluster,
           log: Callable[[str], None], progress: keras.callbacks.Callback | None) -> RunResult:
    spec, training = compiled.spec, compiled.spec.training
    if options.force and out.exists():
        _clear_run(out)
    complete = run_state(out) == "complete"
    state = read_json(out / "checkpoint" / "state.json") if run_state(out) == "resumable" else None
    if state and state["spec_sha256"] != compiled.sha256:
        raise RunError(f"{out} holds an unfinished run of a different version of this spec; "
                       "use --force to start over or --out for a new run directory")
    start_epoch = state["epoch"] if state else 0
    if cluster is not None and cluster.workers > 1:
        from cnncompile.distributed import broadcast_from_chief

        # The chief's run directory decides for everyone: finished, resuming, or fresh.
        (decided,) = broadcast_from_chief(cluster, [np.array([complete, start_epoch], np.int64)])
        complete, start_epoch = bool(decided[0]), int(decided[1])
    if complete:
        metrics = read_json(out / "metrics.json") if (out / "metrics.json").exists() else {}
        return RunResult(out, metrics, 0, already_complete=True)

    keras.utils.set_random_seed(options.seed)
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # same seed, same weights (see tests)

    y_train, y_test = _targets(dataset.y_train, training, dataset), _targets(dataset.y_test, training, dataset)
    train_count = len(dataset.x_train) - int(len(dataset.x_train) * training.validation_split)
    steps = math.ceil(train_count / options.batch_size) * options.epochs

    history: list[dict] = state["history"] if state else []
    train_seconds = state["train_seconds"] if state else 0.0
    with cluster.strategy.scope() if cluster else contextlib.nullcontext():
        # Resumed runs are rebuilt from the spec like fresh ones, then take the checkpoint's
        # values; under a multi-worker strategy every worker must create the same variables
        # in the same order anyway.
        inference = build_model(spec)
        cross_check(inference, compiled.info)
        model = keras.Sequential([keras.Input(tuple(spec.input.shape), name="image"),
                                  *kt.augmentation(training, options.seed), inference], name=f"{spec.name}_train")
        model.compile(optimizer=kt.optimizer(training, steps), loss=kt.loss(training), metrics=kt.metrics(training))
        model.optimizer.build(model.trainable_variables)  # its slots exist before a checkpoint is read
    if state is None and start_epoch == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "run.json", _run_record(compiled, dataset, options, cluster))
    if start_epoch:
        log(f"resuming from epoch {start_epoch}")
        keras.utils.set_random_seed(options.seed + start_epoch)
        saved = _read_checkpoint(out / "checkpoint" / state["checkpoint"]) if state else None
        if cluster is not None:
            from cnncompile.distributed import restore_from_chief

            restore_from_chief(cluster, _variables(model), saved)
        else:
            _assign(_variables(model), saved)
    write_history(out / "history.csv", history)  # drops any row written after the last checkpoint

    checkpoint = _Checkpoint(out, compiled.sha256, history, train_seconds)
    callbacks = [checkpoint, *kt.callbacks(training, str(out / "tensorboard"))]
    if progress is not None:
        callbacks.append(progress)
    if start_epoch < options.epochs:
        if cluster is None:
            model.fit(dataset.x_train, y_train, batch_size=options.batch_size, epochs=options.epochs,
                      initial_epoch=start_epoch, validation_split=training.validation_split,
                      shuffle=training.shuffle, callbacks=callbacks, verbose=0)
        else:
            from cnncompile import distributed

            distributed.fit(cluster, model, training, kt.loss(training, reduction=None), dataset.x_train, y_train,
                            epochs=options.epochs, initial_epoch=start_epoch, batch_size=options.batch_size,
                            seed=options.seed, callbacks=callbacks)
    # Draw curves.png while TensorFlow evaluates (it releases the GIL): saves ~0.3 s a run.
    plotter = threading.Thread(target=_plot_curves, args=(out, list(checkpoint.history), spec.name))
    plotter.start()
    test_scores = {}
    if options.evaluate_test and cluster is None:
        test_scores = _test_scores(model, dataset.x_test, y_test)
    elif options.evaluate_test:
        from cnncompile.distributed import evaluate

        sparse = training.loss.type == "sparse_categorical_crossentropy"
        test_loss, test_accuracy = evaluate(model, kt.loss(training, reduction=None), dataset.x_test, y_test, sparse)
        test_scores = {"test_accuracy": float(test_accuracy), "test_loss": float(test_loss)}
    plotter.join()
    epochs_done = len(checkpoint.history)
    metrics = {
        **test_scores,
        "epochs": epochs_done,
        "train_seconds": round(checkpoint.train_seconds, 3),
        # Throughput of this process's epochs (a resumed run's earlier epochs ran elsewhere).
        "train_images_per_second": round(train_count * checkpoint.session_epochs /
                                         max(checkpoint.session_seconds, 1e-9), 1),
        "train_images": train_count,
        "test_images": len(dataset.x_test),
        "total_params": compiled.info.total_params,
    }
    if cluster is not None:
        metrics["distribute"] = {"strategy": cluster.name, "workers": cluster.workers,
                                 "replicas": cluster.replicas, "global_batch_size": options.batch_size}
    with atomic_path(out / "model.keras") as tmp:
        inference.save(tmp)
    write_json(out / "metrics.json", metrics)  # last: its presence marks the run complete
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    return RunResult(out, metrics, start_epoch)


def evaluate_test(compiled: CompiledSpec, dataset: Dataset, out: Path) -> dict:
    """Score a finished run's model.keras on the test set; record it in metrics.json and return it."""
    training = compiled.spec.training
    model = keras.models.load_model(out / "model.keras", safe_mode=True)
    model.compile(loss=kt.loss(training), metrics=kt.metrics(training))
    metrics = {**read_json(out / "metrics.json"),
               **_test_scores(model, dataset.x_test, _targets(dataset.y_test, training, dataset))}
    write_json(out / "metrics.json", metrics)
    return metrics


def _targets(labels: np.ndarray, training, dataset: Dataset) -> np.ndarray:
    """Integer labels for the sparse loss, one-hot rows for the categorical one."""
    if training.loss.type == "sparse_categorical_crossentropy":
        return labels
    return keras.utils.to_categorical(labels, len(dataset.labels))


def _test_scores(model: keras.Model, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    scores = model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)
    return {"test_accuracy": float(scores["accuracy"]), "test_loss": float(scores["loss"])}


def _variables(model: keras.Model) -> list:
    """Everything training state is made of, in a stable order: the model's variables (weights,
    BatchNormalization statistics, random-layer seeds) then the optimizer's (step, slots)."""
    return list(model.variables) + list(model.optimizer.variables)


def _read_checkpoint(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def _assign(variables: list, values: list[np.ndarray]) -> None:
    if [tuple(v.shape) for v in variables] != [value.shape for value in values]:
        raise RunError("the checkpoint does not match the model this spec builds; use --force to start over")
    for variable, value in zip(variables, values):
        variable.assign(value)


class _Checkpoint(keras.callbacks.Callback):
    """After every epoch: save the training state (weights + optimizer), then the state naming it.

    state.json is written after the checkpoint it points to, so a kill between the two
    leaves the previous, consistent pair. history.csv is rewritten from the state.
    """

    def __init__(self, out: Path, spec_sha256: str, history: list[dict], train_seconds: float):
        super().__init__()
        self.dir = out / "checkpoint"
        self.out, self.spec_sha256 = out, spec_sha256
        self.history, self.train_seconds = list(history), train_seconds
        self.session_seconds, self.session_epochs = 0.0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        self.train_seconds += seconds
        self.session_seconds += seconds
        self.session_epochs += 1
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        if "learning_rate" in row:
            row["learning_rate"] = float(row["learning_rate"])
        self.history.append(row)
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1}.npz"
        with atomic_path(self.dir / name) as tmp:
            # Plain arrays (weights, optimizer slots and step, RNG states): cheaper than a .keras
            # archive each epoch, and loading them never deserializes code.
            np.savez(tmp, *[np.asarray(v.numpy()) for v in _variables(self.model)])
        write_json(self.dir / "state.json", {"epoch": epoch + 1, "checkpoint": name, "spec_sha256": self.spec_sha256,
                                             "history": self.history, "train_seconds": self.train_seconds})
        for old in self.dir.glob("epoch-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)
        write_history(self.out / "history.csv", self.history)


def _clear_run(out: Path) -> None:
    for name in ("metrics.json", "model.keras", "history.csv", "curves.png", "run.json"):
        (out / name).unlink(missing_ok=True)
    for folder in ("checkpoint", "tensorboard"):
        shutil.rmtree(out / folder, ignore_errors=True)


def _run_record(compiled: CompiledSpec, dataset: Dataset, options: TrainOptions, cluster=None) -> dict:
    import tensorflow as tf

    versions = {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                "numpy": np.__version__}
    from cnncompile import __version__

    return {
        "spec": str(compiled.path), "spec_sha256": compiled.sha256, "seed": options.seed,
        "epochs": options.epochs, "batch_size": options.batch_size,
        "dataset": {"name": dataset.name, "source": dataset.source, "train_images": len(dataset.x_train),
                    "test_images": len(dataset.x_test), "files": dataset.files, "labels": list(dataset.labels)},
        "versions": {"cnncompile": __version__, **versions}, "platform": platform.platform(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "cwd": os.getcwd(),
        "distribute": None if cluster is None else {
            "strategy": cluster.name, "workers": cluster.workers, "replicas": cluster.replicas,
            "batch_size_semantics": "global (split across all replicas)", "tf_config": os.environ.get("TF_CONFIG")},
    }


def _plot_curves(out: Path, history: list[dict], title: str) -> None:
    # matplotlib's object API, not pyplot: no global state, safe off the main thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
            values = [row.get(key) for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out / "curves.png") as tmp:
        fig.savefig(tmp, dpi=100)
