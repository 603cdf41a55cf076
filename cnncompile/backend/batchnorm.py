"""BatchNormalization for training through TensorFlow's fused kernel.

Keras 3's BatchNormalization computes in float32 with separate operations: a cast up (under a
mixed policy), the batch moments, then scale-and-shift, each a pass over the activations, and
their gradients as many more; under mixed_bfloat16 it also casts back down. In a profile of
examples/mnist_bn_dropout.yaml on an AVX512_BF16 CPU this was a fifth of a float32 training
step and a third of a bfloat16 one (the convolutions get 2.4x faster in bfloat16, these
passes do not), which is most of why bfloat16 gained less than 1.4x (docs/precision.md).
TensorFlow's FusedBatchNormV3 (oneDNN's batch normalization on this build) does the same in
one pass forward and one backward, reads bfloat16 directly and keeps its statistics in float32.

`FusedBatchNormalization` is Keras's layer with only the training computation replaced: the
same variables, initializers, regularizers, moving-average update (with the biased batch
variance, as Keras) and inference path. `train` builds its training graph with it; the model it
saves and exports is rebuilt with Keras's own layer around the trained weights
(`precision.float32_inference`), so model.keras and the exports need nothing of ours to load.
"""

from __future__ import annotations

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras
import tensorflow as tf

# tf.nn.fused_batch_norm raises any smaller epsilon to this; Keras's layer takes it as given.
FUSED_MIN_EPSILON = 1.001e-5


class FusedBatchNormalization(keras.layers.BatchNormalization):
    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        # (batch, H, W, C) in the compute dtype; scale and offset in float32, as the kernel takes them
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones((channels,), "float32")
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros((channels,), "float32")
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(inputs, scale, offset, epsilon=self.epsilon,
                                                                   is_training=True)
        # The kernel returns the Bessel-corrected variance; Keras averages the biased one.
        count = tf.cast(tf.size(inputs) // channels, "float32")
        variance = variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs

    def _fusable(self, inputs, mask) -> bool:
        """The fused kernel normalizes the last axis of a 4D tensor, with epsilon >= its minimum."""
        return (mask is None and len(inputs.shape) == 4 and self.axis in (-1, 3) and not self.renorm
                and not self.synchronized and self.epsilon >= FUSED_MIN_EPSILON)
