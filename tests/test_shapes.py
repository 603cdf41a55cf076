"""Golden table: layer spec, input shape -> output shape, params, MACs; errors pinned by message."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from cnncompile.language.shapes import ShapeError
from cnncompile.language.layers import Layer

LAYER = TypeAdapter(Layer)

GOLDEN = [
    # (layer, input (H, W, C) or other, output, (trainable, non-trainable), MACs)
    ({"type": "Conv2D", "filters": 32, "kernel_size": 3}, (28, 28, 1), (26, 26, 32), (320, 0), 26 * 26 * 32 * 9),
    ({"type": "Conv2D", "filters": 8, "kernel_size": [3, 5], "padding": "same", "strides": 2},
     (7, 9, 4), (4, 5, 8), (3 * 5 * 4 * 8 + 8, 0), 4 * 5 * 8 * 15 * 4),
    ({"type": "Conv2D", "filters": 6, "kernel_size": 3, "groups": 3, "use_bias": False},
     (10, 10, 6), (8, 8, 6), (3 * 3 * 2 * 6, 0), 8 * 8 * 6 * 9 * 2),
    ({"type": "Conv2D", "filters": 4, "kernel_size": 3, "dilation_rate": 2}, (9, 9, 1), (5, 5, 4), (40, 0), 5 * 5 * 4 * 9),
    ({"type": "DepthwiseConv2D", "kernel_size": 3, "depth_multiplier": 2}, (8, 8, 3), (6, 6, 6), (9 * 6 + 6, 0), 6 * 6 * 6 * 9),
    ({"type": "SeparableConv2D", "filters": 16, "kernel_size": 3, "padding": "same"},
     (8, 8, 4), (8, 8, 16), (9 * 4 + 4 * 16 + 16, 0), 8 * 8 * 4 * 9 + 8 * 8 * 16 * 4),
    ({"type": "MaxPooling2D"}, (13, 13, 32), (6, 6, 32), (0, 0), 0),
    ({"type": "MaxPooling2D", "pool_size": 3, "strides": 1, "padding": "same"}, (5, 5, 2), (5, 5, 2), (0, 0), 0),
    ({"type": "AveragePooling2D", "pool_size": [2, 3], "strides": [1, 2]}, (6, 7, 3), (5, 3, 3), (0, 0), 0),
    ({"type": "GlobalAveragePooling2D"}, (7, 7, 64), (64,), (0, 0), 0),
    ({"type": "GlobalMaxPooling2D", "keepdims": True}, (7, 7, 64), (1, 1, 64), (0, 0), 0),
    ({"type": "Flatten"}, (3, 3, 64), (576,), (0, 0), 0),
    ({"type": "Dense", "units": 64}, (576,), (64,), (576 * 64 + 64, 0), 576 * 64),
    ({"type": "Dense", "units": 5, "use_bias": False}, (6, 6, 3), (6, 6, 5), (15, 0), 36 * 3 * 5),
    ({"type": "Dropout", "rate": 0.5}, (128,), (128,), (0, 0), 0),
    ({"type": "SpatialDropout2D", "rate": 0.1}, (7, 7, 8), (7, 7, 8), (0, 0), 0),
    ({"type": "BatchNormalization"}, (7, 7, 8), (7, 7, 8), (16, 16), 0),
    ({"type": "BatchNormalization", "center": False}, (10,), (10,), (10, 20), 0),
    ({"type": "Activation", "activation": "relu"}, (4, 4, 2), (4, 4, 2), (0, 0), 0),
    ({"type": "ZeroPadding2D"}, (6, 6, 3), (8, 8, 3), (0, 0), 0),
    ({"type": "ZeroPadding2D", "padding": [[1, 2], [3, 4]]}, (6, 6, 3), (9, 13, 3), (0, 0), 0),
    ({"type": "Cropping2D", "cropping": [1, 2]}, (6, 6, 3), (4, 2, 3), (0, 0), 0),
    ({"type": "Reshape", "target_shape": [-1, 3]}, (6, 6, 3), (36, 3), (0, 0), 0),
    ({"type": "Rescaling", "scale": 0.5}, (6, 6, 3), (6, 6, 3), (0, 0), 0),
]


@pytest.mark.parametrize("spec, shape, out, params, macs", GOLDEN, ids=lambda v: str(v)[:40] if isinstance(v, dict) else None)
def test_golden(spec, shape, out, params, macs):
    layer = LAYER.validate_python(spec)
    assert layer.output_shape(shape) == out
    assert layer.params(shape) == params
    assert layer.macs(shape) == macs


SHAPE_ERRORS = [
    ({"type": "Conv2D", "filters": 8, "kernel_size": 7}, (6, 6, 1), "kernel 7x7 does not fit the 6x6 input (padding 'valid')", "kernel_size"),
    ({"type": "Conv2D", "filters": 8, "kernel_size": 3, "dilation_rate": 3}, (6, 6, 1), "dilated to 7x7", "kernel_size"),
    ({"type": "MaxPooling2D", "pool_size": 4}, (3, 3, 1), "pool window 4x4 does not fit the 3x3 input", "pool_size"),
    ({"type": "Conv2D", "filters": 4, "kernel_size": 1, "groups": 2}, (5, 5, 3), "groups (2) must divide the 3 input channels", "groups"),
    ({"type": "Conv2D", "filters": 4, "kernel_size": 1}, (75,), "expects a 4D image input", None),
    ({"type": "GlobalAveragePooling2D"}, (10,), "expects a 4D image input", None),
    ({"type": "Reshape", "target_shape": [7, 7]}, (6, 6, 3), "cannot reshape (None, 6, 6, 3) (108 values) into (None, 7, 7) (49 values)", "target_shape"),
    ({"type": "Reshape", "target_shape": [-1, 5]}, (6, 6, 3), "108 is not a multiple of 5", "target_shape"),
    ({"type": "Cropping2D", "cropping": [3, 0]}, (6, 6, 3), "removes the whole 6x6 input", "cropping"),
]


@pytest.mark.parametrize("spec, shape, message, field", SHAPE_ERRORS)
def test_shape_errors(spec, shape, message, field):
    layer = LAYER.validate_python(spec)
    with pytest.raises(ShapeError) as exc:
        layer.output_shape(shape)
    assert message in str(exc.value)
    assert exc.value.field == field


CONFIG_ERRORS = [
    ({"type": "Conv2D", "filters": 6, "kernel_size": 3, "groups": 4}, "filters (6) must be divisible by groups (4)"),
    ({"type": "Conv2D", "filters": 6, "kernel_size": 3, "strides": 2, "dilation_rate": 2}, "strides > 1 cannot be combined with dilation_rate > 1"),
    ({"type": "Reshape", "target_shape": [-1, -1]}, "at most one -1"),
    ({"type": "Conv2D", "filters": 0, "kernel_size": 3}, "greater than or equal to 1"),
    ({"type": "Conv2D", "filters": 3, "kernel_size": [3, 0]}, "expected a positive integer, or a list of two, received [3, 0]"),
    ({"type": "Conv2D", "filters": 3, "kernel_size": [3, 3, 3]}, "received [3, 3, 3]"),
    ({"type": "Conv2D", "filters": 3.0, "kernel_size": 3}, "valid integer"),
    ({"type": "Dropout", "rate": 1.0}, "less than 1"),
    ({"type": "ZeroPadding2D", "padding": -1}, "expected an integer >= 0"),
]


@pytest.mark.parametrize("spec, message", CONFIG_ERRORS)
def test_config_errors(spec, message):
    with pytest.raises(ValidationError) as exc:
        LAYER.validate_python(spec)
    (error,) = exc.value.errors()  # exactly one complaint, and it is this one
    assert message in error["msg"]
