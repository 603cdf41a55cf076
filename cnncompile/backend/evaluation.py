"""A model's forward pass for scoring a split batch by batch: traced once, whatever the batch sizes.

`train` scores the test set from its predictions (run/train.py `_evaluate`). Keras's
`predict_on_batch` gives the same numbers, bit for bit, but traces its function again for each
new batch size (the test set's last batch: 10,000 images in batches of 256 leave 16) and
converts the trace through AutoGraph, which Keras's layers do not need (they are written to be
traced by JAX as well, without Python control flow on tensors). On examples/mnist_bn_dropout.yaml
the two cost ~0.3 s of CPU at every run's end (docs/precision.md, the whole-process section).
"""

from __future__ import annotations

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras
import tensorflow as tf


def predictor(model: keras.Model, image_shape: tuple[int, ...]):
    """model's outputs for a batch of uint8 images (B, *image_shape), in inference mode, as
    `predict_on_batch` computes them; one trace serves every batch size (call it with NumPy
    arrays or tensors; `np.asarray` the result)."""
    dtype = model.inputs[0].dtype  # what predict_on_batch converts the images to

    def forward(images):
        return model(tf.cast(images, dtype), training=False)

    return tf.function(forward, autograph=False, input_signature=[tf.TensorSpec((None, *image_shape), tf.uint8)])
