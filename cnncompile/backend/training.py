"""The spec's `training:` section as Keras objects: optimizer, loss, metrics, callbacks, augmentation."""

from __future__ import annotations

import keras

from cnncompile.spec import training as t

_OPTIMIZERS = {t.SGD: keras.optimizers.SGD, t.RMSprop: keras.optimizers.RMSprop, t.Adam: keras.optimizers.Adam,
               t.AdamW: keras.optimizers.AdamW, t.Nadam: keras.optimizers.Nadam}


def learning_rate(value: float | t.CosineDecay | t.ExponentialDecay, total_steps: int):
    if isinstance(value, t.CosineDecay):
        # decay_steps defaults to the whole run, so the rate reaches alpha at the last step.
        return keras.optimizers.schedules.CosineDecay(value.initial_learning_rate,
                                                      value.decay_steps or total_steps, alpha=value.alpha)
    if isinstance(value, t.ExponentialDecay):
        return keras.optimizers.schedules.ExponentialDecay(value.initial_learning_rate, value.decay_steps,
                                                           value.decay_rate, staircase=value.staircase)
    return value


def optimizer(spec: t.Training, total_steps: int) -> keras.optimizers.Optimizer:
    args = spec.optimizer.model_dump(exclude={"type", "learning_rate"})
    if args.get("weight_decay", 0) is None:
        del args["weight_decay"]
    lr = learning_rate(spec.optimizer.learning_rate, total_steps)
    return _OPTIMIZERS[type(spec.optimizer)](learning_rate=lr, **args)


def loss(spec: t.Training, reduction: str | None = "sum_over_batch_size") -> keras.losses.Loss:
    """The spec's loss; reduction=None gives per-image values (distributed training averages
    them over the global batch itself)."""
    if spec.loss.type == "sparse_categorical_crossentropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=spec.loss.from_logits, reduction=reduction)
    return keras.losses.CategoricalCrossentropy(from_logits=spec.loss.from_logits,
                                                label_smoothing=spec.loss.label_smoothing, reduction=reduction)


def metrics(spec: t.Training) -> list:
    """The spec's metrics, accuracy always among them: every run reports test_accuracy."""
    sparse = spec.loss.type == "sparse_categorical_crossentropy"
    table = {"accuracy": "accuracy",
             "top_k_categorical_accuracy": "sparse_top_k_categorical_accuracy" if sparse else "top_k_categorical_accuracy"}
    return list(dict.fromkeys(["accuracy", *(table[m] for m in spec.metrics)]))


def callbacks(spec: t.Training, tensorboard_dir: str) -> list[keras.callbacks.Callback]:
    made = []
    for cb in spec.callbacks:
        if isinstance(cb, t.EarlyStopping):
            made.append(keras.callbacks.EarlyStopping(monitor=cb.monitor, patience=cb.patience, min_delta=cb.min_delta,
                                                      restore_best_weights=cb.restore_best_weights))
        elif isinstance(cb, t.ReduceLROnPlateau):
            made.append(keras.callbacks.ReduceLROnPlateau(monitor=cb.monitor, factor=cb.factor, patience=cb.patience,
                                                          min_delta=cb.min_delta, min_lr=cb.min_lr))
        elif isinstance(cb, t.TensorBoard):
            made.append(keras.callbacks.TensorBoard(log_dir=tensorboard_dir, histogram_freq=cb.histogram_freq))
    return made


def augmentation(spec: t.Training, seed: int) -> list[keras.layers.Layer]:
    """Random transforms, active only in training (Keras's random layers are identity at inference)."""
    layers = []
    for i, aug in enumerate(spec.augmentation):
        args = aug.model_dump(exclude={"type"})
        layers.append(getattr(keras.layers, aug.type)(**args, seed=seed + i, name=f"augment_{i}"))
    return layers
