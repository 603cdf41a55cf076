"""FusedBatchNormalization (backend/batchnorm.py) against Keras's BatchNormalization: the same
outputs, gradients and moving statistics in training, the identical inference path, Keras's own
computation where the fused kernel does not apply, and a saved model that holds Keras's layer."""

from __future__ import annotations

import numpy as np
import pytest

import cnncompile.backend  # noqa: F401
import keras
import tensorflow as tf

from cnncompile.backend.batchnorm import FusedBatchNormalization
from cnncompile.backend.builder import dtype_policy


def twins(shape: tuple[int, ...], policy: str = "float32", **kwargs):
    """Keras's layer and ours, built on `shape` under `policy` with the same random weights."""
    rng = np.random.default_rng(0)
    with dtype_policy(policy):
        layers = keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs)
    for layer in layers:
        layer.build(shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in layers[0].get_weights()]
    weights[-1] = np.abs(weights[-1]) + 0.5  # moving variance: positive
    for layer in layers:
        layer.set_weights(weights)
    return layers


def step(layer, x):
    """One training call: outputs and the gradients of a randomly weighted sum (a plain sum of
    normalized values is 0 whatever gamma is) by the input and the weights."""
    weights = tf.constant(np.random.default_rng(9).normal(size=x.shape).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, "float32") * weights)
    grads = tape.gradient(loss, [x, *layer.trainable_variables])
    return [np.asarray(tf.cast(t, "float32")) for t in (y, *grads)]


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9, "epsilon": 1e-3}, {"center": False}, {"scale": False},
                                    {"axis": 3, "center": False, "scale": False}])
def test_training_matches_keras_outputs_gradients_and_moving_statistics(kwargs):
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (8, 5, 5, 4)).astype("float32"))
    keras_bn, fused = twins(x.shape, **kwargs)
    for theirs, ours in zip(step(keras_bn, x), step(fused, x)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean, keras_bn.moving_mean, rtol=1e-6, atol=1e-6)
    # Keras averages the biased batch variance; the kernel returns the unbiased one (corrected)
    np.testing.assert_allclose(fused.moving_variance, keras_bn.moving_variance, rtol=1e-5)


def test_inference_and_unfusable_inputs_take_keras_path_exactly():
    x = tf.constant(np.random.default_rng(2).normal(size=(8, 5, 5, 4)).astype("float32"))
    keras_bn, fused = twins(x.shape)
    np.testing.assert_array_equal(fused(x, training=False), keras_bn(x, training=False))
    flat = tf.reshape(x, (8, -1))  # BatchNormalization after a Dense layer: not 4D, Keras's computation
    keras_bn, fused = twins(flat.shape)
    for theirs, ours in zip(step(keras_bn, flat), step(fused, flat)):
        np.testing.assert_array_equal(ours, theirs)
    keras_bn, fused = twins(x.shape, epsilon=1e-6)  # under the kernel's minimum epsilon
    for theirs, ours in zip(step(keras_bn, x), step(fused, x)):
        np.testing.assert_array_equal(ours, theirs)


def test_frozen_layer_uses_moving_statistics_and_leaves_them():
    x = tf.constant(np.random.default_rng(3).normal(size=(8, 5, 5, 4)).astype("float32"))
    keras_bn, fused = twins(x.shape)
    fused.trainable = keras_bn.trainable = False
    before = fused.get_weights()
    np.testing.assert_array_equal(fused(x, training=True), keras_bn(x, training=True))
    for now, then in zip(fused.get_weights(), before):
        np.testing.assert_array_equal(now, then)


def test_bfloat16_inputs_are_normalized_in_float32_statistics():
    x = tf.constant(np.random.default_rng(4).normal(2.0, 3.0, (16, 6, 6, 8)).astype("float32"))
    keras_bn, fused = twins(x.shape, policy="mixed_bfloat16")
    xb = tf.cast(x, "bfloat16")
    ours, theirs = step(fused, xb), step(keras_bn, xb)
    # bfloat16 keeps 8 significant bits: about 2 decimal digits
    np.testing.assert_allclose(ours[0], theirs[0], rtol=0.02, atol=0.05)
    np.testing.assert_allclose(fused.moving_mean, keras_bn.moving_mean, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(fused.moving_variance, keras_bn.moving_variance, rtol=2e-2)
    assert fused(xb, training=True).dtype == "bfloat16" and fused.moving_mean.dtype == "float32"


def test_train_trains_fused_and_saves_keras_own_layer(tmp_path):
    """train's graph uses the fused layer; model.keras holds keras.layers.BatchNormalization."""
    from cnncompile.analysis.check import compile_file
    from cnncompile.backend.builder import build_model
    from cnncompile.backend.precision import float32_inference
    from tests.conftest import TINY

    (tmp_path / "tiny.yaml").write_text(TINY)
    spec = compile_file(tmp_path / "tiny.yaml").spec
    trained = build_model(spec, training=True)
    assert any(isinstance(layer, FusedBatchNormalization) for layer in trained.layers)
    saved = float32_inference(trained, spec)
    kinds = {type(layer) for layer in saved.layers}
    assert keras.layers.BatchNormalization in kinds and FusedBatchNormalization not in kinds
    for a, b in zip(saved.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(5).integers(0, 255, (4, *spec.input.shape)).astype("float32")
    np.testing.assert_array_equal(saved(x, training=False), trained(x, training=False))
