"""One class per layer type: its arguments (Keras's names and defaults) and its shape rule.

The class *is* the registration: the `Layer` union below discriminates on `type`,
giving validation, error paths and the JSON Schema from the same definition. Each
class delegates its arithmetic to the pure functions in cnncompile.shapes.

Config-only checks live here (like Keras's `__init__`); checks that need the input
shape raise ShapeError from `output_shape` (like Keras's `build`).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from cnncompile import shapes
from cnncompile.shapes import Shape, ShapeError
from cnncompile.spec.types import (
    ActivationName,
    Initializer,
    Padding,
    Padding2,
    PositiveInt,
    PositivePair,
    Rate,
    Regularizer,
    Strict,
)

LayerName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$", max_length=128)]


def snake_case(class_name: str) -> str:
    """Keras's default layer base name: Conv2D -> conv2d, MaxPooling2D -> max_pooling2d."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class LayerSpec(Strict):
    """Fields and shape rule every layer shares."""

    type: str
    name: LayerName | None = Field(
        None, description="Unique layer name; defaults to Keras's (conv2d, conv2d_1, ...)."
    )

    def output_shape(self, shape: Shape) -> Shape:
        """Output shape (without the batch axis) for an input of `shape`."""
        return shape

    def params(self, shape: Shape) -> tuple[int, int]:
        """(trainable, non-trainable) parameter counts for an input of `shape`."""
        return (0, 0)

    def macs(self, shape: Shape) -> int:
        """Multiply-accumulates per sample for an input of `shape`."""
        return 0

    @property
    def activation_name(self) -> str | None:
        return getattr(self, "activation", None)


class _Windowed(LayerSpec):
    """Sliding-window arguments shared by the convolutions."""

    kernel_size: PositivePair = Field(description="Window height and width; an int means both.")
    strides: PositivePair = Field((1, 1), description="Step between windows.")
    padding: Padding = Field("valid", description="'valid' (no padding) or 'same' (output = ceil(input / strides)).")
    dilation_rate: PositivePair = Field((1, 1), description="Spacing between kernel taps.")
    activation: ActivationName | None = Field(None, description="Applied to the output; none means linear.")
    use_bias: bool = True
    bias_initializer: Initializer = "zeros"
    bias_regularizer: Regularizer | None = None
    activity_regularizer: Regularizer | None = None

    def spatial(self, shape: Shape) -> tuple[int, int]:
        return shapes.spatial_output(shape, self.kernel_size, self.strides, self.padding, self.dilation_rate)


class Conv2D(_Windowed):
    """2D convolution: `filters` kernels slide over the image (keras.layers.Conv2D)."""

    type: Literal["Conv2D"] = "Conv2D"
    filters: PositiveInt = Field(description="Number of output channels.")
    groups: PositiveInt = Field(1, description="Split input channels into this many groups; must divide filters and the input channels.")
    kernel_initializer: Initializer = "glorot_uniform"
    kernel_regularizer: Regularizer | None = None

    @model_validator(mode="after")
    def _config(self) -> Conv2D:
        if self.filters % self.groups:
            raise ValueError(f"filters ({self.filters}) must be divisible by groups ({self.groups})")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"strides > 1 cannot be combined with dilation_rate > 1 (Keras rejects it); "
                f"received strides={list(self.strides)}, dilation_rate={list(self.dilation_rate)}"
            )
        return self

    def output_shape(self, shape: Shape) -> Shape:
        out = shapes.conv2d_output(shape, self.filters, self.kernel_size, self.strides, self.padding,
                                   self.dilation_rate)
        if shape[2] % self.groups:
            raise ShapeError(
                f"groups ({self.groups}) must divide the {shape[2]} input channels", field="groups"
            )
        return out

    def params(self, shape: Shape) -> tuple[int, int]:
        return (shapes.conv2d_params(shape[2], self.filters, self.kernel_size, self.groups, self.use_bias), 0)

    def macs(self, shape: Shape) -> int:
        return shapes.conv2d_macs(self.output_shape(shape), self.kernel_size, shape[2], self.groups)


class DepthwiseConv2D(_Windowed):
    """Per-channel convolution: each input channel gets `depth_multiplier` kernels of its own."""

    type: Literal["DepthwiseConv2D"] = "DepthwiseConv2D"
    depth_multiplier: PositiveInt = Field(1, description="Output channels per input channel.")
    depthwise_initializer: Initializer = "glorot_uniform"
    depthwise_regularizer: Regularizer | None = None

    def output_shape(self, shape: Shape) -> Shape:
        return (*self.spatial(shape), shape[2] * self.depth_multiplier)

    def params(self, shape: Shape) -> tuple[int, int]:
        return (shapes.depthwise_params(shape[2], self.depth_multiplier, self.kernel_size, self.use_bias), 0)

    def macs(self, shape: Shape) -> int:
        return shapes.depthwise_macs(self.output_shape(shape), self.kernel_size)


class SeparableConv2D(_Windowed):
    """Depthwise convolution followed by a 1x1 pointwise convolution to `filters` channels."""

    type: Literal["SeparableConv2D"] = "SeparableConv2D"
    filters: PositiveInt = Field(description="Number of output channels of the pointwise step.")
    depth_multiplier: PositiveInt = Field(1, description="Depthwise output channels per input channel.")
    depthwise_initializer: Initializer = "glorot_uniform"
    pointwise_initializer: Initializer = "glorot_uniform"
    depthwise_regularizer: Regularizer | None = None
    pointwise_regularizer: Regularizer | None = None

    def output_shape(self, shape: Shape) -> Shape:
        return (*self.spatial(shape), self.filters)

    def params(self, shape: Shape) -> tuple[int, int]:
        # Depthwise kernel without its own bias, then a 1x1 conv that carries the bias.
        depthwise = shapes.depthwise_params(shape[2], self.depth_multiplier, self.kernel_size, False)
        middle = shape[2] * self.depth_multiplier
        return (depthwise + shapes.conv2d_params(middle, self.filters, (1, 1), 1, self.use_bias), 0)

    def macs(self, shape: Shape) -> int:
        height, width = self.spatial(shape)
        middle = shape[2] * self.depth_multiplier
        depthwise = shapes.depthwise_macs((height, width, middle), self.kernel_size)
        return depthwise + shapes.conv2d_macs((height, width, self.filters), (1, 1), middle, 1)


class _Pooling2D(LayerSpec):
    pool_size: PositivePair = Field((2, 2), description="Window height and width; an int means both.")
    strides: PositivePair | None = Field(None, description="Step between windows; defaults to pool_size.")
    padding: Padding = "valid"

    def output_shape(self, shape: Shape) -> Shape:
        return shapes.pool2d_output(shape, self.pool_size, self.strides or self.pool_size, self.padding)


class MaxPooling2D(_Pooling2D):
    """Maximum over each pooling window (keras.layers.MaxPooling2D)."""

    type: Literal["MaxPooling2D"] = "MaxPooling2D"


class AveragePooling2D(_Pooling2D):
    """Mean over each pooling window (keras.layers.AveragePooling2D)."""

    type: Literal["AveragePooling2D"] = "AveragePooling2D"


class _GlobalPooling2D(LayerSpec):
    keepdims: bool = Field(False, description="Keep the spatial axes as 1x1.")

    def output_shape(self, shape: Shape) -> Shape:
        shapes.require_rank(shape, 3, "4D image")
        return (1, 1, shape[2]) if self.keepdims else (shape[2],)


class GlobalAveragePooling2D(_GlobalPooling2D):
    """Mean over height and width: (H, W, C) -> (C,)."""

    type: Literal["GlobalAveragePooling2D"] = "GlobalAveragePooling2D"


class GlobalMaxPooling2D(_GlobalPooling2D):
    """Maximum over height and width: (H, W, C) -> (C,)."""

    type: Literal["GlobalMaxPooling2D"] = "GlobalMaxPooling2D"


class Flatten(LayerSpec):
    """Collapse every axis but the batch into one."""

    type: Literal["Flatten"] = "Flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)


class Dense(LayerSpec):
    """Fully connected layer on the last axis; on a rank-4 input it acts per pixel, as in Keras."""

    type: Literal["Dense"] = "Dense"
    units: PositiveInt = Field(description="Output features.")
    activation: ActivationName | None = None
    use_bias: bool = True
    kernel_initializer: Initializer = "glorot_uniform"
    bias_initializer: Initializer = "zeros"
    kernel_regularizer: Regularizer | None = None
    bias_regularizer: Regularizer | None = None
    activity_regularizer: Regularizer | None = None

    def output_shape(self, shape: Shape) -> Shape:
        return shapes.dense_output(shape, self.units)

    def params(self, shape: Shape) -> tuple[int, int]:
        return (shapes.dense_params(shape[-1], self.units, self.use_bias), 0)

    def macs(self, shape: Shape) -> int:
        return shapes.dense_macs(shape, self.units)


class Dropout(LayerSpec):
    """Zero a random fraction `rate` of the inputs while training."""

    type: Literal["Dropout"] = "Dropout"
    rate: Rate = Field(description="Fraction of inputs to drop, 0 <= rate < 1.")
    seed: Annotated[int, Field(ge=0)] | None = None


class SpatialDropout2D(LayerSpec):
    """Drop whole feature maps (channels) at random while training."""

    type: Literal["SpatialDropout2D"] = "SpatialDropout2D"
    rate: Rate = Field(description="Fraction of channels to drop, 0 <= rate < 1.")
    seed: Annotated[int, Field(ge=0)] | None = None

    def output_shape(self, shape: Shape) -> Shape:
        shapes.require_rank(shape, 3, "4D image")
        return shape


class BatchNormalization(LayerSpec):
    """Normalize the last axis with batch statistics; keeps moving averages for inference."""

    type: Literal["BatchNormalization"] = "BatchNormalization"
    momentum: Annotated[float, Field(ge=0.0, le=1.0)] = 0.99
    epsilon: Annotated[float, Field(gt=0.0)] = 0.001
    center: bool = Field(True, description="Learn an offset (beta).")
    scale: bool = Field(True, description="Learn a scale (gamma).")
    beta_initializer: Initializer = "zeros"
    gamma_initializer: Initializer = "ones"
    moving_mean_initializer: Initializer = "zeros"
    moving_variance_initializer: Initializer = "ones"
    beta_regularizer: Regularizer | None = None
    gamma_regularizer: Regularizer | None = None

    def params(self, shape: Shape) -> tuple[int, int]:
        channels = shape[-1]
        # gamma and beta are learned; the moving mean and variance are updated, not trained.
        return (channels * (int(self.center) + int(self.scale)), 2 * channels)


class Activation(LayerSpec):
    """Apply an activation function on its own."""

    type: Literal["Activation"] = "Activation"
    activation: ActivationName


class ZeroPadding2D(LayerSpec):
    """Add rows and columns of zeros around the image."""

    type: Literal["ZeroPadding2D"] = "ZeroPadding2D"
    padding: Padding2 = Field(((1, 1), (1, 1)), description="n, [height, width] or [[top, bottom], [left, right]].")

    def output_shape(self, shape: Shape) -> Shape:
        shapes.require_rank(shape, 3, "4D image")
        return shapes.padded(shape, self.padding)


class Cropping2D(LayerSpec):
    """Remove rows and columns from the image borders."""

    type: Literal["Cropping2D"] = "Cropping2D"
    cropping: Padding2 = Field(((0, 0), (0, 0)), description="n, [height, width] or [[top, bottom], [left, right]].")

    def output_shape(self, shape: Shape) -> Shape:
        shapes.require_rank(shape, 3, "4D image")
        return shapes.cropped(shape, self.cropping)


TargetDim = Annotated[int, Field(ge=-1)]


class Reshape(LayerSpec):
    """Reshape to `target_shape` (batch axis excluded); one entry may be -1 to infer it."""

    type: Literal["Reshape"] = "Reshape"
    target_shape: Annotated[list[TargetDim], Field(min_length=1)]

    @model_validator(mode="after")
    def _config(self) -> Reshape:
        if self.target_shape.count(-1) > 1:
            raise ValueError(f"target_shape may contain at most one -1, received {self.target_shape}")
        if 0 in self.target_shape:
            raise ValueError(f"target_shape entries must be positive (or one -1), received {self.target_shape}")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        return shapes.reshaped(shape, self.target_shape)


class Rescaling(LayerSpec):
    """Multiply by `scale` and add `offset`, e.g. scale: 0.00392156862745098 maps 0-255 to 0-1."""

    type: Literal["Rescaling"] = "Rescaling"
    scale: float
    offset: float = 0.0


LAYER_TYPES: tuple[type[LayerSpec], ...] = (
    Conv2D, DepthwiseConv2D, SeparableConv2D, MaxPooling2D, AveragePooling2D,
    GlobalAveragePooling2D, GlobalMaxPooling2D, Flatten, Dense, Dropout, SpatialDropout2D,
    BatchNormalization, Activation, ZeroPadding2D, Cropping2D, Reshape, Rescaling,
)

Layer = Annotated[
    Conv2D | DepthwiseConv2D | SeparableConv2D | MaxPooling2D | AveragePooling2D
    | GlobalAveragePooling2D | GlobalMaxPooling2D | Flatten | Dense | Dropout
    | SpatialDropout2D | BatchNormalization | Activation | ZeroPadding2D | Cropping2D
    | Reshape | Rescaling,
    Field(discriminator="type"),
]

LAYER_NAMES = tuple(cls.__name__ for cls in LAYER_TYPES)
