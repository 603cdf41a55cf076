"""The model's own input preprocessing: raw 0-255 pixels in, what the first layer expects out.

All of it is in the graph (built-in layers and one Keras op), so a saved model, an ONNX or a
TFLite export takes raw pixels and `predict` needs no preprocessing of its own.
"""

from __future__ import annotations

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras

from cnncompile.language.model import Input

PREPROCESSING = "preprocessing"  # name of the in-graph input scaling layer
TO_RGB = "grayscale_to_rgb"

# keras/src/applications/imagenet_utils.py's constants, in RGB order.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)  # caffe: subtracted after flipping to BGR
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torch: of pixels scaled to [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)


def _scale_and_offset(mode: str) -> tuple[float | list[float], float | list[float]]:
    """preprocess_input's arithmetic as one per-channel x * scale + offset (after the BGR flip)."""
    if mode == "tf":
        return 1 / 127.5, -1.0
    if mode == "torch":  # (x / 255 - mean) / std
        return ([1 / (255 * s) for s in IMAGENET_STD], [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    return 1.0, [-m for m in IMAGENET_MEAN_BGR]  # caffe


def preprocess(spec_input: Input, image: keras.KerasTensor) -> keras.KerasTensor:
    """The tensor the spec's `input` names: channels repeated, then preprocess_input's mode or
    input.scale/offset applied."""
    tensor = image
    if spec_input.channels:
        tensor = keras.layers.Concatenate(name=TO_RGB)([tensor] * spec_input.channels)  # (batch, H, W, 3)
    if spec_input.preprocessing:
        if spec_input.preprocessing == "caffe" and tensor.shape[-1] == 3:
            # RGB -> BGR as a gather (Keras records the op in the functional graph; ONNX: Gather).
            tensor = keras.ops.take(tensor, [2, 1, 0], axis=-1)
        scale, offset = _scale_and_offset(spec_input.preprocessing)
        return keras.layers.Rescaling(scale, offset, name=PREPROCESSING)(tensor)
    if spec_input.scaled:
        return keras.layers.Rescaling(spec_input.scale, spec_input.offset, name=PREPROCESSING)(tensor)
    return tensor
