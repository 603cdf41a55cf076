"""Build a keras.Model (functional: any graph) from a ModelSpec, and prove it matches shape inference.

The builders are a table keyed by spec class: each turns a spec into the built-in
Keras layer of the same name with the same arguments (the spec uses Keras's names, so
most entries only pass fields through). Only built-in layers are used, so a saved
model loads with `safe_mode=True` and no code is ever deserialized.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras

from cnncompile.analysis.inference import ModelInfo
from cnncompile.backend.batchnorm import FusedBatchNormalization
from cnncompile.language.shapes import fmt
from cnncompile.language import layers as spec_layers
from cnncompile.language.model import ModelSpec
from cnncompile.language.types import L1L2
from cnncompile.backend.preprocessing import PREPROCESSING, preprocess  # noqa: F401  (PREPROCESSING: the importer reads it here)


class BackendMismatch(RuntimeError):
    """Keras and shape inference disagree about a layer: a bug in cnncompile, never the user's."""


def _regularizer(value: Any) -> Any:
    if isinstance(value, L1L2):
        return keras.regularizers.L1L2(l1=value.l1, l2=value.l2)
    return value  # None or a Keras name ('l1', 'l2', 'l1_l2')


def _kwargs(layer: spec_layers.LayerSpec, name: str) -> dict[str, Any]:
    """The spec's fields as Keras arguments: same names, regularizers made objects."""
    args = layer.model_dump(exclude={"type", "name", "inputs", "trainable"})
    for key in args:
        if key.endswith("_regularizer"):
            args[key] = _regularizer(getattr(layer, key))
    return {**args, "name": name}


def _passthrough(keras_class: type) -> Callable[[Any, str], keras.layers.Layer]:
    return lambda layer, name: keras_class(**_kwargs(layer, name))


def _reshape(layer: spec_layers.Reshape, name: str) -> keras.layers.Layer:
    return keras.layers.Reshape(tuple(layer.target_shape), name=name)


def _normalization(layer: spec_layers.Normalization, name: str) -> keras.layers.Layer:
    # Without mean/variance Keras makes them weights, which `train` adapts to the data.
    return keras.layers.Normalization(axis=layer.axis, mean=layer.mean, variance=layer.variance,
                                      invert=layer.invert, name=name)


BUILDERS: dict[type[spec_layers.LayerSpec], Callable[[Any, str], keras.layers.Layer]] = {
    spec_layers.Conv2D: _passthrough(keras.layers.Conv2D),
    spec_layers.DepthwiseConv2D: _passthrough(keras.layers.DepthwiseConv2D),
    spec_layers.SeparableConv2D: _passthrough(keras.layers.SeparableConv2D),
    spec_layers.Conv2DTranspose: _passthrough(keras.layers.Conv2DTranspose),
    spec_layers.MaxPooling2D: _passthrough(keras.layers.MaxPooling2D),
    spec_layers.AveragePooling2D: _passthrough(keras.layers.AveragePooling2D),
    spec_layers.GlobalAveragePooling2D: _passthrough(keras.layers.GlobalAveragePooling2D),
    spec_layers.GlobalMaxPooling2D: _passthrough(keras.layers.GlobalMaxPooling2D),
    spec_layers.UpSampling2D: _passthrough(keras.layers.UpSampling2D),
    spec_layers.Flatten: _passthrough(keras.layers.Flatten),
    spec_layers.Dense: _passthrough(keras.layers.Dense),
    spec_layers.Dropout: _passthrough(keras.layers.Dropout),
    spec_layers.SpatialDropout2D: _passthrough(keras.layers.SpatialDropout2D),
    spec_layers.BatchNormalization: _passthrough(keras.layers.BatchNormalization),
    spec_layers.LayerNormalization: _passthrough(keras.layers.LayerNormalization),
    spec_layers.Normalization: _normalization,
    spec_layers.Activation: _passthrough(keras.layers.Activation),
    spec_layers.ReLU: _passthrough(keras.layers.ReLU),
    spec_layers.LeakyReLU: _passthrough(keras.layers.LeakyReLU),
    spec_layers.Softmax: _passthrough(keras.layers.Softmax),
    spec_layers.Identity: _passthrough(keras.layers.Identity),
    spec_layers.ZeroPadding2D: _passthrough(keras.layers.ZeroPadding2D),
    spec_layers.Cropping2D: _passthrough(keras.layers.Cropping2D),
    spec_layers.Reshape: _reshape,
    spec_layers.Rescaling: _passthrough(keras.layers.Rescaling),
    spec_layers.Resizing: _passthrough(keras.layers.Resizing),
    spec_layers.CenterCrop: _passthrough(keras.layers.CenterCrop),
    spec_layers.Add: _passthrough(keras.layers.Add),
    spec_layers.Subtract: _passthrough(keras.layers.Subtract),
    spec_layers.Multiply: _passthrough(keras.layers.Multiply),
    spec_layers.Average: _passthrough(keras.layers.Average),
    spec_layers.Maximum: _passthrough(keras.layers.Maximum),
    spec_layers.Minimum: _passthrough(keras.layers.Minimum),
    spec_layers.Concatenate: _passthrough(keras.layers.Concatenate),
}

# What `train` builds instead, for speed while training only (see backend/batchnorm.py): the
# same variables and inference computation, so the saved model is rebuilt from BUILDERS.
TRAINING_BUILDERS: dict[type[spec_layers.LayerSpec], Callable[[Any, str], keras.layers.Layer]] = {
    spec_layers.BatchNormalization: _passthrough(FusedBatchNormalization),
}


def build_model(spec: ModelSpec, preprocessing: bool = True, training: bool = False) -> keras.Model:
    """The inference model: raw pixels in, the spec's layers, the last layer's output out.

    With `preprocessing`, the input's own preprocessing comes first (backend/preprocessing.py:
    channels, preprocess_input's mode or scale/offset), so the model (and its ONNX export) takes
    raw 0-255 pixels. Layers with `trainable: false` (or in a frozen block use) are frozen.
    With `training`, layers in TRAINING_BUILDERS are built their faster training way.
    """
    builders = {**BUILDERS, **TRAINING_BUILDERS} if training else BUILDERS
    inputs = keras.Input(shape=tuple(spec.input.shape), name="image")
    tensors = {"input": preprocess(spec.input, inputs) if preprocessing else inputs}
    nodes = spec.graph()
    for node in nodes:
        # Under a mixed policy the output layer still computes in float32 (Keras's mixed-precision
        # guide): the probabilities and the loss keep their precision.
        output = node is nodes[-1] and keras.config.dtype_policy().name != "float32"
        with dtype_policy("float32") if output else contextlib.nullcontext():
            keras_layer = builders[type(node.layer)](node.layer, node.name)
        keras_layer.trainable = node.trainable
        operands = [tensors[name] for name in node.inputs]
        # Merge layers take one list of tensors (Keras's Merge.call(inputs)); the rest one tensor.
        merges = node.layer.max_inputs != 1
        tensors[node.name] = keras_layer(operands if merges else operands[0])
    return keras.Model(inputs, tensors[nodes[-1].name], name=spec.name)


@contextlib.contextmanager
def dtype_policy(name: str):
    """Layers made inside take this Keras dtype policy; the global one is restored after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def cross_check(model: keras.Model, info: ModelInfo) -> None:
    """Every layer's output shape and parameter counts must equal shape inference's.

    Layers on a dead branch (check warns about them) are not in the Keras model: a
    functional model holds only what its output depends on."""
    for layer_info in info.live_layers():
        layer = model.get_layer(layer_info.name)
        shape = tuple(layer.output.shape)
        trainable = sum(int(w.numpy().size) for w in layer.trainable_weights)
        total = layer.count_params()
        if shape != layer_info.output_shape or (total, trainable) != (layer_info.params, layer_info.trainable_params):
            raise BackendMismatch(
                f"internal error: layer '{layer_info.name}' ({layer_info.type}) disagrees with shape "
                f"inference: Keras built output {fmt(shape)} with {total} params ({trainable} trainable), "
                f"inference computed {fmt(layer_info.output_shape)} with {layer_info.params} params "
                f"({layer_info.trainable_params} trainable). Please report this spec."
            )


ADAPT_LIMIT = 20_000  # images: plenty for per-channel statistics, bounded memory on big datasets


def adapt_normalization(model: keras.Model, spec: ModelSpec, images, keep: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    """Set every Normalization layer that has no mean/variance in the spec from the training
    images, as they reach it (through the layers before it, in-graph scaling included), except
    those in `keep` (loaded from `weights:`). Returns (layer name, images used) for each, so the
    caller can say what it did. `images`: an array, or a function of a count giving the first
    images (a streamed dataset decodes them only when a layer needs them)."""
    adapted = []
    for node in spec.graph():
        if not (isinstance(node.layer, spec_layers.Normalization) and node.layer.adapted) or node.name in keep:
            continue
        layer = model.get_layer(node.name)
        sample = images(ADAPT_LIMIT) if callable(images) else images[:ADAPT_LIMIT]
        features = keras.Model(model.inputs, layer.input).predict(sample, batch_size=256, verbose=0)
        layer.adapt(features)
        adapted.append((node.name, len(sample)))
    return adapted
