"""The spec's `training:` section as Keras objects: optimizer, loss, metrics, callbacks, augmentation."""

from __future__ import annotations

import keras

from cnncompile.language import training as t

# Each spec class maps to the Keras class of the same name in this module, its fields passed
# as Keras's arguments of the same names. A class whose arguments differ says how here.
KERAS_MODULES = {t.OPTIMIZER_TYPES: keras.optimizers, t.SCHEDULE_TYPES: keras.optimizers.schedules,
                 t.LOSS_TYPES: keras.losses, t.CALLBACK_TYPES: keras.callbacks,
                 t.AUGMENTATION_TYPES: keras.layers}
# Fields Keras does not take (set from elsewhere, or validated to Keras's fixed value).
NOT_KERAS_ARGUMENTS = {
    **{cls: {"learning_rate"} for cls in t.OPTIMIZER_TYPES},  # a float or a schedule, built first
    t.SparseCategoricalCrossentropy: {"label_smoothing"},  # validated to be 0: Keras's has none
}


def keras_class(cls: type) -> type:
    """The Keras class a spec class stands for; KeyError naming it when there is none."""
    for types, module in KERAS_MODULES.items():
        if cls in types and hasattr(module, cls.__name__):
            return getattr(module, cls.__name__)
    raise KeyError(f"{cls.__name__} has no Keras class: add it to a section of cnncompile/backend/fitting.py")


# Arguments whose value comes from the run, not the spec.
FROM_THE_RUN = {
    # decay_steps defaults to the whole run, so the rate reaches alpha at the last step.
    t.CosineDecay: lambda spec, run: {"decay_steps": spec.decay_steps or run["total_steps"]},
    t.TensorBoard: lambda spec, run: {"log_dir": run["tensorboard_dir"]},
}


def keras_arguments(spec, run: dict | None = None) -> dict:
    """The spec object's fields as Keras arguments (Keras's defaults stand for unset, None,
    ones), with those that come from the run."""
    arguments = spec.model_dump(exclude={"type", *NOT_KERAS_ARGUMENTS.get(type(spec), ())}, exclude_none=True)
    if type(spec) in FROM_THE_RUN:
        arguments |= FROM_THE_RUN[type(spec)](spec, run or {})
    return arguments


def _make(spec, run: dict | None = None, **extra):
    return keras_class(type(spec))(**keras_arguments(spec, run), **extra)


def learning_rate(value: float | t.CosineDecay | t.ExponentialDecay, total_steps: int):
    """A constant rate as it is; a schedule as its Keras schedule over a run of total_steps."""
    return value if isinstance(value, (int, float)) else _make(value, {"total_steps": total_steps})


def optimizer(spec: t.Training, total_steps: int) -> keras.optimizers.Optimizer:
    return _make(spec.optimizer, learning_rate=learning_rate(spec.optimizer.learning_rate, total_steps))


def loss(spec: t.Training, reduction: str | None = "sum_over_batch_size") -> keras.losses.Loss:
    """The spec's loss; reduction=None gives per-image values (distributed training averages
    them over the global batch itself)."""
    return _make(spec.loss, reduction=reduction)


# A metric is Keras's function of the metric's name (its sparse_ twin for integer labels),
# logged under that name; 'accuracy' is Keras's alias, which resolves to the functions below.
METRIC_FUNCTIONS = {t.Accuracy: ("categorical_accuracy", "accuracy")}


def metric_function(cls: type, sparse: bool):
    """(name training logs it under, Keras's per-image function) for a metric class."""
    function, logged = METRIC_FUNCTIONS.get(cls, (t.tag(cls), t.tag(cls)))
    if sparse:
        function, logged = f"sparse_{function}", (logged if cls in METRIC_FUNCTIONS else f"sparse_{logged}")
    if not hasattr(keras.metrics, function):
        raise KeyError(f"{cls.__name__} has no Keras metric function {function}: add it to METRIC_FUNCTIONS "
                       "in cnncompile/backend/fitting.py")
    return logged, getattr(keras.metrics, function)


def metrics(spec: t.Training) -> dict:
    """The spec's metrics by the name training logs them under, as per-image functions
    (y_true, y_pred) -> values; accuracy always first: every run reports test_accuracy.

    model.compile takes the names (Keras resolves them to the same functions); distributed
    training averages the functions itself over the global batch.
    """
    kinds = dict.fromkeys([t.Accuracy, *(type(m) for m in spec.metrics)])
    return dict(metric_function(cls, spec.loss.sparse_labels) for cls in kinds)


def callbacks(spec: t.Training, tensorboard_dir: str) -> list[keras.callbacks.Callback]:
    return [_make(cb, {"tensorboard_dir": tensorboard_dir}) for cb in spec.callbacks]


# Hooks Keras calls once per call of the train function: with several steps per call, a
# callback defining one would see only every n-th batch.
BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end")


def steps_per_execution(callbacks: list[keras.callbacks.Callback], steps_per_epoch: int) -> int:
    """Training steps per call of Keras's train function: the whole epoch, unless a callback
    watches single batches (a progress bar, TensorBoard), then one as always.

    Each call costs about 2 ms besides the step's arithmetic (the function's dispatch, a fresh
    executor run over its graph, Keras's loop around it); with the epoch in one tf.while_loop,
    mnist_resnet trains 4-5% faster in either precision (docs/precision.md). The steps are the
    same operations in the same order: the same weights. A whole epoch because the training
    pipeline runs on across epochs (data/sources.py): a call may not cross an epoch's end, and
    a divisor of steps_per_epoch would do too, but some have none (79 is prime).
    """
    watched = any(getattr(type(callback), hook) is not getattr(keras.callbacks.Callback, hook)
                  for callback in callbacks for hook in BATCH_HOOKS)
    return 1 if watched else steps_per_epoch


def augmentation(spec: t.Training, seed: int) -> list[keras.layers.Layer]:
    """Random transforms, active only in training (Keras's random layers are identity at inference)."""
    return [_make(aug, seed=seed + i, name=f"augment_{i}") for i, aug in enumerate(spec.augmentation)]
