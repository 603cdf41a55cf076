"""The spec's `training:` section as Keras objects: optimizer, loss, metrics, callbacks, augmentation."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cnncompile.language import training as t

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
    if spec.loss.sparse_labels:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=spec.loss.from_logits, reduction=reduction)
    return keras.losses.CategoricalCrossentropy(from_logits=spec.loss.from_logits,
                                                label_smoothing=spec.loss.label_smoothing, reduction=reduction)


def metrics(spec: t.Training) -> dict:
    """The spec's metrics by the name training logs them under, as per-image functions
    (y_true, y_pred) -> values; accuracy always first: every run reports test_accuracy.

    model.compile takes the names (Keras resolves them to the same functions); distributed
    training averages the functions itself over the global batch.
    """
    sparse = spec.loss.sparse_labels
    table = {
        "accuracy": ("accuracy", keras.metrics.sparse_categorical_accuracy if sparse
                     else keras.metrics.categorical_accuracy),
        "top_k_categorical_accuracy": ("sparse_top_k_categorical_accuracy", keras.metrics.sparse_top_k_categorical_accuracy)
        if sparse else ("top_k_categorical_accuracy", keras.metrics.top_k_categorical_accuracy),
    }
    return dict(table[m] for m in dict.fromkeys(["accuracy", *spec.metrics]))


def labels(spec: t.Training, y: np.ndarray, classes: int) -> np.ndarray:
    """Integer class labels in the form the spec's loss takes: as they are, or one-hot."""
    return y if spec.loss.sparse_labels else keras.utils.to_categorical(y, classes)


def batches(x: np.ndarray, y: np.ndarray, *, batch_size: int, shuffle: bool, seed: int, first_epoch: int,
            epochs: int) -> tf.data.Dataset:
    """Epochs first_epoch .. epochs-1 back to back, in batches; the last of each epoch smaller.

    Epoch e is shuffled by (seed, e) alone, so a run resumed at epoch e sees the same images
    in the same order as one that never stopped (and every worker of a cluster the same
    global order, which auto-sharding then splits).
    """
    images, labels = tf.constant(x), tf.constant(y)

    def epoch(e):
        order = tf.range(len(x), dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.constant(seed, tf.int64), e]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(indices):
        return tf.gather(images, indices), tf.gather(labels, indices)

    # tf.data's autotuner off: this pipeline has nothing for it to tune (a sequential map, a
    # fixed prefetch), and its model thread sleeps up to 60 s between optimizations without
    # waking for cancellation, so the iterator's destructor waited that long after the last
    # epoch (issue 20: 49-55 s; bench/stall.py measures it).
    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch).map(gather).prefetch(2).with_options(options)


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
