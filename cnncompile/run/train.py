"""`cnncompile train`: build the model, fit it on the dataset, leave a complete run directory.

Run directory (atomic writes throughout, see cnncompile/files.py):
  model.keras      the trained inference model (raw 0-255 pixels in, probabilities out)
  metrics.json     test accuracy/loss, epochs, timing; its presence marks the run complete
  history.csv      one row per completed epoch
  curves.png       loss and accuracy per epoch
  run.json         spec sha256, seed, dataset source and file hashes, versions, command line
  report.html      the run report (see report.py), with confusion.png, mistakes.png and spec.yaml
  checkpoint/      state.json + the latest epoch's training state as arrays, for resuming
                   after a crash exactly where an uninterrupted run would be (checkpoint.py)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)

import keras
import numpy as np
import tensorflow as tf

from cnncompile.run import checkpoint as ckpt
from cnncompile.run import phasing
from cnncompile.backend import fitting as kt
from cnncompile.backend.builder import adapt_normalization, build_model, cross_check, dtype_policy
from cnncompile.backend.evaluation import predictor
from cnncompile.backend.precision import choose as choose_precision
from cnncompile.backend.precision import float32_inference
from cnncompile.data.datasets import Dataset, load_dataset
from cnncompile.data.sources import ArraySplit, Split
from cnncompile.data.formats import DataError
from cnncompile.analysis.check import CompiledSpec
from cnncompile.run.rundir import RunError, default_run_dir
from cnncompile.files import atomic_path, read_json, write_history, write_json
from cnncompile.language.training import Distribute, TensorBoard


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
    # A training.precision value overriding the spec's (None keeps it); `_train` resolves it
    # (auto) to the Keras dtype policy it trains under.
    precision: str | None = None


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


def train_spec(compiled: CompiledSpec, *, out: Path | None = None, epochs: int | None = None,
               seed: int | None = None, batch_size: int | None = None, data_dir: Path | None = None,
               force: bool = False, strategy: str | None = None, precision: str | None = None,
               log: Callable[[str], None] = lambda message: None,
               progress: keras.callbacks.Callback | None = None,
               data_progress: Callable[[str, int, int], None] | None = None) -> RunResult:
    """`cnncompile train`: the spec's training section with these overrides (None keeps the
    spec's value), its dataset loaded, then `train`. RunError (located by `where`) if it cannot.
    `data_progress(what, done, total)` follows the scan of an image folder."""
    training = _training(compiled)
    seed = training.seed if seed is None else seed
    try:
        dataset = load_dataset(training.dataset, data_dir=data_dir, spec_dir=compiled.path.parent,
                               image_shape=tuple(compiled.spec.input.shape), seed=seed, progress=data_progress)
    except DataError as exc:
        raise RunError(f"training.dataset: {exc}", where=("training", "dataset")) from None
    for note in dataset.notes:
        log(note)
    log(dataset.describe())
    distribute = training.distribute
    if strategy is not None:  # the command line picks the strategy; the spec's timeout still holds
        distribute = Distribute(strategy=strategy, **({"timeout_seconds": distribute.timeout_seconds}
                                                      if distribute else {}))
    if epochs is not None and training.phases:
        raise RunError("--epochs cannot override training.phases; change the phases' epochs",
                       where=("training", "phases"))
    options = TrainOptions(out or default_run_dir(compiled.spec.name), epochs or training.total_epochs,
                           batch_size or training.batch_size, seed, force, distribute, precision=precision)
    return train(compiled, dataset, options, log=log, progress=progress)


def _training(compiled: CompiledSpec):
    if compiled.spec.training is None:
        raise RunError("no training: section; `train` needs one (dataset, optimizer, ...; see spec/README.md#training)")
    return compiled.spec.training


def train(compiled: CompiledSpec, dataset: Dataset, options: TrainOptions, *,
          log: Callable[[str], None] = lambda message: None,
          progress: keras.callbacks.Callback | None = None) -> RunResult:
    _training(compiled)
    if options.distribute is None:
        return _train(compiled, dataset, options, options.out, None, log, progress)
    from cnncompile.run import distributed

    with distributed.peer_failures_as_cluster_errors():
        cluster = distributed.connect(options.distribute)
        log(cluster.describe(options.batch_size))
        if cluster.is_chief:
            return _train(compiled, dataset, options, options.out, cluster, log, progress)
        # The other workers train in lockstep but keep their files in a temporary directory,
        # removed at the end, as TensorFlow's multi-worker guide does: only the chief's run counts.
        scratch = Path(tempfile.mkdtemp(prefix=f"cnncompile-worker{cluster.index}-"))
        try:
            result = _train(compiled, dataset, options, scratch, cluster, log, None)
            return RunResult(options.out, result.metrics, result.resumed_from, result.already_complete, chief=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class _Resume:
    """Where a run directory stands: finished, resuming at `epoch` (with the checkpoint's values
    and callbacks' state), or fresh (epoch 0, state None)."""

    complete: bool
    state: dict | None
    saved: dict | None
    arrays: dict

    @property
    def epoch(self) -> int:
        return self.state["epoch"] if self.state else 0


def _train(compiled: CompiledSpec, dataset: Dataset, options: TrainOptions, out: Path, cluster,
           log: Callable[[str], None], progress: keras.callbacks.Callback | None) -> RunResult:
    """One process's part of a run: negotiate resume, build, fit, then write the artifacts."""
    if options.force and out.exists():
        _clear_run(out)
    chosen = choose_precision(options.precision or compiled.spec.training.precision)
    options = dataclasses.replace(options, precision=chosen.policy)
    resume = _resume_point(compiled, out, cluster, options.precision)
    if resume.complete:
        metrics = read_json(out / "metrics.json") if (out / "metrics.json").exists() else {}
        return RunResult(out, metrics, 0, already_complete=True)

    log(chosen.describe())
    keras.utils.set_random_seed(options.seed)
    tf.config.experimental.enable_op_determinism()  # same seed, same weights (see tests)
    fit_data = FitData.split(compiled.spec.training, dataset, options.batch_size)
    callbacks, checkpoint = _callbacks(compiled, out, resume, progress)
    # One call of Keras's train function runs a whole epoch unless a callback watches single
    # batches (backend/fitting.py); a cluster trains in its own loop, step by step.
    steps = 1 if cluster else kt.steps_per_execution(callbacks, fit_data.steps_per_epoch)
    inference, model = _build(compiled, dataset, options, fit_data, resume, cluster, log, steps)
    if resume.state is None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "run.json", _run_record(compiled, dataset, options, cluster))
    if resume.epoch:
        log(f"resuming from epoch {resume.epoch}")
        if cluster is not None:
            from cnncompile.run.distributed import restore_from_chief

            restore_from_chief(cluster, ckpt.training_variables(model), resume.saved)
        else:
            ckpt.assign(ckpt.training_variables(model), resume.saved)
    write_history(out / "history.csv", resume.state["history"] if resume.state else [])  # drops rows after the checkpoint
    _fit(compiled, inference, model, fit_data, options, resume, cluster, callbacks, checkpoint, steps, log)
    metrics = _finish(compiled, dataset, options, out, inference, model, checkpoint, fit_data, cluster)
    return RunResult(out, metrics, resume.epoch)


def _resume_point(compiled: CompiledSpec, out: Path, cluster, precision: str) -> _Resume:
    """Read the run directory; under a cluster the chief's directory decides for everyone."""
    complete = run_state(out) == "complete"
    state = read_json(out / "checkpoint" / "state.json") if run_state(out) == "resumable" else None
    if state and state["spec_sha256"] != compiled.sha256:
        raise RunError(f"{out} holds an unfinished run of a different version of this spec; "
                       "use --force to start over or --out for a new run directory")
    # The optimizer's state differs (float16 adds a loss scale) and the epochs so far were
    # computed in the other precision: a resumed run would be neither one nor the other.
    started = read_json(out / "run.json").get("precision", "float32") if state and (out / "run.json").exists() else None
    if started and started != precision:
        raise RunError(f"{out} holds an unfinished run trained in {started}, not {precision}; resume it with "
                       f"--precision {started}, or use --force to start over or --out for a new run directory")
    saved, arrays = ckpt.read(out / "checkpoint" / state["checkpoint"]) if state else (None, {})
    if cluster is not None and cluster.workers > 1:
        from cnncompile.run.distributed import share_from_chief

        # Finished, resuming (and the callbacks' state), or fresh: as the chief's directory says.
        # The variables follow in restore_from_chief once the model exists.
        complete, state, arrays = share_from_chief(cluster, complete, state, arrays)
    return _Resume(complete, state, saved, arrays)


@dataclass
class FitData:
    """The training split cut as model.fit's validation_split does: the validation images are
    the last ones, before any shuffling. `one_hot`: the loss takes one-hot labels."""

    fit: Split
    validation: Split | None
    one_hot: bool
    steps_per_epoch: int

    @property
    def count(self) -> int:
        return self.fit.count

    @classmethod
    def split(cls, training, dataset: Dataset, batch_size: int) -> FitData:
        total = dataset.train.count
        count = total - int(total * training.validation_split)
        validation = dataset.train.slice(count, total) if count < total else None
        return cls(dataset.train.slice(0, count), validation, not training.loss.sparse_labels,
                   math.ceil(count / batch_size))

    def batches(self, batch_size: int, **epochs):
        """The training images for model.fit: epochs of batches, shuffled by (seed, epoch)."""
        return self.fit.batches(batch_size, one_hot=self.one_hot, **epochs)

    def validation_data(self):
        """model.fit's validation_data: arrays as they always were, else a stream in batches of 256."""
        if self.validation is None:
            return None
        if isinstance(self.validation, ArraySplit):
            return self.validation.arrays(self.one_hot)
        return self.validation.one_pass(EVALUATION_BATCH, one_hot=self.one_hot)


EVALUATION_BATCH = 256
SCORED_TOGETHER = 32  # batches the test scores are computed over at once (memory: 32 x 256 images' outputs)
# A streamed split adapts Normalization on a sample of at most this many bytes of pixels (an
# array in memory on up to ADAPT_LIMIT images, as always): per-channel statistics need few.
STREAMED_ADAPT_BYTES = 256 << 20


def _build(compiled: CompiledSpec, dataset: Dataset, options: TrainOptions, fit_data: FitData, resume: _Resume,
           cluster, log: Callable[[str], None], steps_per_execution: int = 1) -> tuple[keras.Model, keras.Model]:
    """The inference model (what is saved and exported) inside the training model
    (augmentation in front), compiled, with its optimizer's slots built."""
    spec, training = compiled.spec, compiled.spec.training
    with cluster.strategy.scope() if cluster else contextlib.nullcontext():
        # Resumed runs are rebuilt from the spec like fresh ones, then take the checkpoint's
        # values; under a multi-worker strategy every worker must create the same variables
        # in the same order anyway.
        with dtype_policy(options.precision):
            inference = build_model(spec, training=True)
        cross_check(inference, compiled.info)
        loaded = _load_weights(compiled, inference, log) if resume.epoch == 0 else ()
        if resume.epoch == 0:  # a resumed run takes the statistics from its checkpoint
            for name, count in adapt_normalization(inference, spec, _adapt_sample(dataset.train), keep=loaded):
                log(f"{name}: Normalization mean and variance adapted from {count:,} training images")
        model = keras.Sequential([keras.Input(tuple(spec.input.shape), name="image"),
                                  *kt.augmentation(training, options.seed), inference], name=f"{spec.name}_train")
        # Compiled as the phase that wrote the checkpoint (the first, for a fresh run).
        phase = phasing.phase_of(phasing.phase_runs(spec, options.epochs), resume.epoch)
        phasing.enter(phase, spec, inference, model, fit_data.steps_per_epoch, options.precision, steps_per_execution)
    return inference, model


def _adapt_sample(train: Split) -> Callable[[int], np.ndarray]:
    """The first training images Normalization layers adapt on, decoded only if one needs them."""
    if train.in_memory:
        return train.take
    return lambda limit: train.take(max(1, min(limit, STREAMED_ADAPT_BYTES // math.prod(train.image_shape))))


def _load_weights(compiled: CompiledSpec, inference: keras.Model, log: Callable[[str], None]) -> tuple[str, ...]:
    """The spec's `weights:` into a fresh run's model (a resumed run's come from its checkpoint)."""
    if compiled.spec.weights is None:
        return ()
    from cnncompile.backend.weights import WeightsProblem, load_weights

    try:
        plan = load_weights(inference, compiled.spec, base_dir=compiled.path.parent)
    except WeightsProblem as exc:
        raise RunError("weights: " + "; ".join(exc.problems), where=("weights",)) from None
    log(plan.describe())
    return plan.loaded


def _require_tensorboard(training) -> None:
    """A TensorBoard callback writes through the tensorboard package, which tensorflow-cpu does
    not install (the train extra does): without it Keras fails at the first summary, after an
    epoch of work, with a traceback. Refuse before training, at the callback's line."""
    import importlib.util

    for i, callback in enumerate(training.callbacks):
        if isinstance(callback, TensorBoard) and importlib.util.find_spec("tensorboard") is None:
            raise RunError("the TensorBoard callback needs the tensorboard package, which is not installed: "
                           "pip install 'cnncompile[train]' (or pip install tensorboard)", where=("training", "callbacks", i))


def _callbacks(compiled: CompiledSpec, out: Path, resume: _Resume,
               progress: keras.callbacks.Callback | None) -> tuple[list[keras.callbacks.Callback], ckpt.Checkpoint]:
    """Every callback `fit` gets: the spec's, the checkpoint, the caller's progress."""
    _require_tensorboard(compiled.spec.training)
    callbacks = kt.callbacks(compiled.spec.training, str(out / "tensorboard"))
    # After the callbacks whose state it saves and restores (see checkpoint.Checkpoint).
    checkpoint = ckpt.Checkpoint(out, compiled.sha256, callbacks, resume.state, resume.arrays)
    return [*callbacks, checkpoint, *([progress] if progress is not None else [])], checkpoint


def _fit(compiled: CompiledSpec, inference: keras.Model, model: keras.Model, fit_data: FitData, options: TrainOptions,
         resume: _Resume, cluster, callbacks: list[keras.callbacks.Callback], checkpoint: ckpt.Checkpoint,
         steps_per_execution: int, log: Callable[[str], None]) -> None:
    """Train from the resume point to the last epoch, checkpointing each one, phase by phase."""
    training = compiled.spec.training
    # A run that early stopping ended (or that finished its epochs) before the kill trains no
    # further; its callbacks still end the run as they would have (restoring best weights).
    last_epoch = resume.epoch if checkpoint.stopped else options.epochs
    if resume.epoch >= last_epoch:
        callback_list = keras.callbacks.CallbackList(callbacks, model=model)
        callback_list.on_train_begin()
        callback_list.on_train_end()
    elif cluster is None:
        runs = phasing.phase_runs(compiled.spec, options.epochs)
        current = phasing.phase_of(runs, resume.epoch)  # what _build compiled
        for phase in runs:
            first = max(resume.epoch, phase.first_epoch)
            if first >= phase.last_epoch:
                continue
            if phase is not current:
                phasing.enter(phase, compiled.spec, inference, model, fit_data.steps_per_epoch, options.precision,
                              steps_per_execution)
            if len(runs) > 1:
                log(phase.describe(len(runs)))
            data = fit_data.batches(options.batch_size, shuffle=training.shuffle, seed=options.seed,
                                    first_epoch=first, epochs=phase.last_epoch)
            with _streaming_errors():
                model.fit(data, epochs=phase.last_epoch, initial_epoch=first, steps_per_epoch=fit_data.steps_per_epoch,
                          shuffle=False, validation_data=fit_data.validation_data(),
                          validation_batch_size=EVALUATION_BATCH, callbacks=callbacks, verbose=0)
    else:
        from cnncompile.run import distributed

        # Arrays in memory are split by data across the workers; TFRecord shards by file, each
        # worker reading only its own (distributed.by_file); a streamed folder is neither.
        arrays = isinstance(fit_data.fit, ArraySplit)
        if not arrays and not fit_data.fit.reads_by_file:
            raise RunError("distributed training reads arrays in memory or TFRecord shards; this image folder "
                           "streams (set `cache: memory` in the dataset section, or pack it into shards: "
                           "cnncompile data pack)", where=("training", "dataset"))
        x, y = fit_data.fit.arrays(fit_data.one_hot) if arrays else (None, None)
        distributed.fit(cluster, model, training, x, y, fit_data.validation_data(), epochs=last_epoch,
                        initial_epoch=resume.epoch, batch_size=options.batch_size, seed=options.seed,
                        callbacks=callbacks, split=None if arrays else fit_data.fit)


def _finish(compiled: CompiledSpec, dataset: Dataset, options: TrainOptions, out: Path, inference: keras.Model,
            model: keras.Model, checkpoint: ckpt.Checkpoint, fit_data: FitData, cluster) -> dict:
    """Test scores, curves, model.keras, the report, then metrics.json (last: it marks the run complete)."""
    from cnncompile.run import report

    inference = float32_inference(inference, compiled.spec)  # what is saved and exported
    report.draw_curves(out / "curves.png", checkpoint.history, compiled.spec.name, phasing.phase_starts(compiled.spec))
    training = compiled.spec.training
    # One pass over the test set: its predictions give both the test scores and the report.
    tally = None
    if options.evaluate_test:
        # The report is the chief's; its confusion matrix and mistakes follow the same pass.
        tally = report.Tally(len(dataset.labels)) if cluster is None or cluster.is_chief else None
        test_scores = _evaluate(inference, model, training, dataset.test, cluster, tally)
    else:
        test_scores = {}
    metrics = {
        **test_scores,
        "epochs": len(checkpoint.history),
        "train_seconds": round(checkpoint.train_seconds, 3),
        # Throughput of this process's epochs (a resumed run's earlier epochs ran elsewhere).
        "train_images_per_second": round(fit_data.count * checkpoint.session_epochs /
                                         max(checkpoint.session_seconds, 1e-9), 1),
        "train_images": fit_data.count,
        "test_images": dataset.test.count,
        "total_params": compiled.info.total_params,
        "precision": options.precision,
    }
    if compiled.spec.training.phases:
        metrics["phase_starts"] = [1, *phasing.phase_starts(compiled.spec)]
    if cluster is not None:
        metrics["distribute"] = {"strategy": cluster.name, "workers": cluster.workers,
                                 "replicas": cluster.replicas, "global_batch_size": options.batch_size}
    with atomic_path(out / "model.keras") as tmp:
        inference.save(tmp)
    # The report, like the run directory, is the chief's; tune's trials never see the test set.
    if tally is not None:
        metrics.update(_report(out, compiled, tally, dataset, metrics))
    write_json(out / "metrics.json", metrics)  # last: its presence marks the run complete
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    return metrics


def evaluate_test(compiled: CompiledSpec, dataset: Dataset, out: Path) -> dict:
    """Score a finished run's model.keras on the test set; record it in metrics.json and return it."""
    training = compiled.spec.training
    model = keras.models.load_model(out / "model.keras", safe_mode=True)
    model.compile(loss=kt.loss(training), metrics=list(kt.metrics(training)))
    scores = _evaluate(model, model, training, dataset.test)
    metrics = {**read_json(out / "metrics.json"), **scores}
    write_json(out / "metrics.json", metrics)
    return metrics


def _evaluate(inference: keras.Model, model: keras.Model, training, test: Split, cluster=None, tally=None) -> dict:
    """evaluate()'s test_loss and test_accuracy from one streamed pass of predictions over the
    test split, in batches of 256: the mean loss plus the weights' regularisation (which
    evaluate adds to every batch's loss). Each batch also goes to `tally` (the report's)."""
    one_hot = not training.loss.sparse_labels
    loss, accuracy = kt.loss(training, reduction=None), kt.metrics(training)["accuracy"]
    if cluster is None:
        predict = predictor(inference, test.image_shape)
    else:  # plain calls, local to each worker: predict under a multi-worker strategy would run collectives
        def predict(images):
            return inference(tf.cast(images, tf.float32), training=False)
    per_image, correct, pending = [], [], []

    def score():
        # Per-image values do not depend on how the images are grouped: scored SCORED_TOGETHER
        # batches at a time, the loss and accuracy are one eager call each, not one per batch.
        probabilities, labels = (np.concatenate(part) for part in zip(*pending))
        y = tf.one_hot(labels, len(test.classes), dtype=tf.float64) if one_hot else labels
        per_image.append(np.asarray(loss(y, probabilities), dtype=np.float64))
        correct.append(np.asarray(accuracy(y, probabilities)))
        pending.clear()

    with _streaming_errors():
        for images, labels in test.batches(EVALUATION_BATCH).as_numpy_iterator():
            probabilities = np.asarray(predict(images))
            pending.append((probabilities, labels))
            if tally is not None:
                tally.add(probabilities, labels, images)
            if len(pending) == SCORED_TOGETHER:
                score()
    if pending:
        score()
    if any(getattr(layer, "activity_regularizer", None) is not None for layer in _layers(model)):
        # their penalty depends on each layer's outputs, which the predictions do not keep
        with _streaming_errors():
            scores = model.evaluate(test.one_pass(EVALUATION_BATCH, one_hot=one_hot), verbose=0, return_dict=True)
        return {"test_accuracy": float(scores["accuracy"]), "test_loss": float(scores["loss"])}
    regularisation = sum(float(variable.regularizer(variable)) for variable in model.trainable_weights
                         if variable.regularizer is not None)
    return {"test_accuracy": float(np.mean(np.concatenate(correct))),
            "test_loss": float(np.mean(np.concatenate(per_image))) + regularisation}


@contextlib.contextmanager
def _streaming_errors():
    """An image that fails to decode while a pipeline streams (its header was fine at the scan)
    stops the run with the file's name and reason, not TensorFlow's traceback."""
    try:
        yield
    except tf.errors.DataLossError as exc:  # a TFRecord's CRC: the shard's bytes changed after packing
        raise RunError(f"training.dataset: a shard is corrupt ({str(exc).splitlines()[0].split('}')[-1].strip()}); "
                       "`cnncompile data verify` names the file", where=("training", "dataset")) from None
    except tf.errors.OpError as exc:
        reason = next((line.split("DataError: ", 1)[1] for line in str(exc).splitlines() if "DataError: " in line), None)
        if reason is None:
            raise
        raise RunError(f"training.dataset: {reason}", where=("training", "dataset")) from None


def _layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def _report(out: Path, compiled: CompiledSpec, tally, dataset: Dataset, metrics: dict) -> dict:
    """report.html and its pictures; returns the per-class numbers metrics.json gains."""
    from cnncompile.run import report

    per_class = tally.finish(out, dataset.labels)
    report.save_spec(out, compiled.path, compiled.sha256)
    report.write_report(out, {**metrics, **per_class})
    return per_class


def _clear_run(out: Path) -> None:
    from cnncompile.run.report import REPORT_FILES

    for name in ("metrics.json", "model.keras", "history.csv", "curves.png", "run.json", *REPORT_FILES):
        (out / name).unlink(missing_ok=True)
    for folder in ("checkpoint", "tensorboard"):
        shutil.rmtree(out / folder, ignore_errors=True)


def _run_record(compiled: CompiledSpec, dataset: Dataset, options: TrainOptions, cluster=None) -> dict:
    versions = {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                "numpy": np.__version__}
    from cnncompile import __version__

    return {
        "spec": str(compiled.path), "spec_sha256": compiled.sha256, "seed": options.seed,
        "precision": options.precision,
        "epochs": options.epochs, "batch_size": options.batch_size,
        "dataset": dataset.record(),
        "versions": {"cnncompile": __version__, **versions}, "platform": platform.platform(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "cwd": os.getcwd(),
        "distribute": None if cluster is None else {
            "strategy": cluster.name, "workers": cluster.workers, "replicas": cluster.replicas,
            "batch_size_semantics": "global (split across all replicas)", "tf_config": os.environ.get("TF_CONFIG")},
    }
