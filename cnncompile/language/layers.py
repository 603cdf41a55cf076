"""One class per layer type: its arguments (Keras's names and defaults) and its shape rule.

The class *is* the registration: the `Layer` union below discriminates on `type`,
giving validation, error paths and the JSON Schema from the same definition. Each
class delegates its arithmetic to the pure functions in cnncompile.language.shapes.

Config-only checks live here (like Keras's `__init__`); checks that need the input
shape raise ShapeError from `output_shape` (like Keras's `build`).
"""

# No `from __future__ import annotations` here: with 32 classes, pydantic evaluating string
# annotations was ~25% of this module's import time, which every `check` pays.

import functools
import math
import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, PlainValidator, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from cnncompile.language import shapes
from cnncompile.language.shapes import Shape, ShapeError
from cnncompile.language.types import (
    ActivationName,
    Initializer,
    NonNegativePair,
    Padding,
    Padding2,
    PositiveInt,
    PositivePair,
    Rate,
    Regularizer,
    Strict,
    validate_by_type,
)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
MAX_NAME_LENGTH = 128
LayerName = Annotated[str, Field(pattern=NAME_PATTERN.pattern, max_length=MAX_NAME_LENGTH)]

MODEL_INPUT = "input"
"""The name by which layers read the model's input (so no layer may take it)."""


def _channels_last(value: Any) -> str:
    if value == "channels_last":
        return value
    if value == "channels_first":
        raise PydanticCustomError(
            "channels_first",
            "cnncompile models are channels_last only (images are [height, width, "
            "channels], as input.shape says); remove data_format or set it to channels_last")
    raise PydanticCustomError("data_format", "expected 'channels_last', received {received}",
                              {"received": repr(value)})


# Keras accepts data_format on image layers; only channels_last describes our tensors.
DataFormat = Annotated[str, PlainValidator(_channels_last), WithJsonSchema({"const": "channels_last"})]


@functools.cache  # one per layer type: a 50,000-layer spec asks 50,000 times
def snake_case(class_name: str) -> str:
    """Keras's default layer base name: Conv2D -> conv2d, MaxPooling2D -> max_pooling2d."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class LayerSpec(Strict):
    """Fields and shape rule every layer shares.

    Single-input layers define `output_shape(shape)`, `params(shape)` and `macs(shape)`;
    merge layers take one shape per input (`output_shape(*shapes)`), so callers always
    pass `*input_shapes`.
    """

    type: str
    name: LayerName | None = Field(
        None, description="Unique layer name; default: Keras's (conv2d, conv2d_1, ...), "
        "skipping names already taken by any layer."
    )
    inputs: Annotated[list[LayerName], Field(min_length=1)] | None = Field(
        None, description="Names of the layers it reads (`input` is the model input); "
        "default: the layer listed before it."
    )
    trainable: bool = Field(
        True, description="false freezes the layer's weights (Keras's layer.trainable): they count as "
        "non-trainable and training leaves them as loaded. A frozen BatchNormalization also runs in "
        "inference mode, normalizing with its moving statistics, as Keras's transfer-learning guide prescribes.")

    # Facts about the class that shared code asks instead of testing for types.
    example: ClassVar[str]
    """One use in flow style: shown in the reference, checked and built by the tests."""
    preserves_shape: ClassVar[bool] = False
    """Output shape = input shape. A class must say so; otherwise it defines output_shape."""
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    width_field: ClassVar[str | None] = None
    """The argument that sets the last axis's size (units, filters): what to blame when the
    model outputs the wrong number of classes."""
    last_axis_only: ClassVar[bool] = False
    """Acts on the last axis and passes the others through (Dense on an image acts per pixel)."""

    def output_shape(self, *shapes: Shape) -> Shape:
        """Output shape (without the batch axis) for inputs of `shapes`."""
        if self.preserves_shape:
            return shapes[0]
        raise NotImplementedError(f"{type(self).__name__} has no shape rule")

    def params(self, *shapes: Shape) -> tuple[int, int]:
        """(trainable, non-trainable) parameter counts."""
        return (0, 0)

    def macs(self, *shapes: Shape) -> int:
        """Not counted (0): only convolutions and Dense are, as in the usual MAC tables (pooling,
        normalization, activations, merges and reshapes cost a few operations per element)."""
        return 0

    def output_activation(self) -> str | None:
        """The activation the output carries ('linear' for an affine layer), or None when the
        layer passes its input's through (pooling, dropout, reshapes)."""
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
    data_format: DataFormat = "channels_last"

    def spatial(self, shape: Shape) -> tuple[int, int]:
        return shapes.spatial_output(shape, self.kernel_size, self.strides, self.padding, self.dilation_rate)

    def output_activation(self) -> str | None:
        return self.activation or "linear"

    def _no_strided_dilation(self) -> None:
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"strides > 1 cannot be combined with dilation_rate > 1 (Keras rejects it); "
                f"received strides={list(self.strides)}, dilation_rate={list(self.dilation_rate)}"
            )


class Conv2D(_Windowed):
    """2D convolution: `filters` kernels slide over the image (keras.layers.Conv2D)."""

    type: Literal["Conv2D"] = "Conv2D"
    filters: PositiveInt = Field(description="Number of output channels.")
    groups: PositiveInt = Field(1, description="Split input channels into this many groups; must divide filters and the input channels.")
    kernel_initializer: Initializer = "glorot_uniform"
    kernel_regularizer: Regularizer | None = None

    example: ClassVar[str] = "{type: Conv2D, filters: 32, kernel_size: 3, activation: relu}"
    width_field: ClassVar[str] = "filters"

    @model_validator(mode="after")
    def _config(self) -> "Conv2D":
        if self.filters % self.groups:
            raise ValueError(f"filters ({self.filters}) must be divisible by groups ({self.groups})")
        self._no_strided_dilation()
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
        """Output height x width x filters x kernel height x kernel width x input channels / groups
        (bias additions not counted)."""
        return shapes.conv2d_macs(self.output_shape(shape), self.kernel_size, shape[2], self.groups)


class Conv2DTranspose(_Windowed):
    """Transposed ("de-") convolution: upsamples by `strides` (keras.layers.Conv2DTranspose)."""

    type: Literal["Conv2DTranspose"] = "Conv2DTranspose"
    filters: PositiveInt = Field(description="Number of output channels.")
    output_padding: NonNegativePair | None = Field(
        None, description="Extra rows/columns on one side of the output; each < strides. "
        "Default: inferred (Keras's rule).")
    kernel_initializer: Initializer = "glorot_uniform"
    kernel_regularizer: Regularizer | None = None

    example: ClassVar[str] = "{type: Conv2DTranspose, filters: 16, kernel_size: 3, strides: 2, padding: same}"
    width_field: ClassVar[str] = "filters"

    @model_validator(mode="after")
    def _config(self) -> "Conv2DTranspose":
        self._no_strided_dilation()
        if self.output_padding is not None and any(
                p >= s for p, s in zip(self.output_padding, self.strides)):
            raise ValueError(f"output_padding {list(self.output_padding)} must be strictly less "
                             f"than strides {list(self.strides)} (Keras rejects it)")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        shapes.require_rank(shape, 3, "4D image")
        padding = self.output_padding or (None, None)
        out = tuple(shapes.transposed_output_length(n, k, s, self.padding, p, d) for n, k, s, p, d in zip(
            shape[:2], self.kernel_size, self.strides, padding, self.dilation_rate))
        return (*out, self.filters)

    def params(self, shape: Shape) -> tuple[int, int]:
        return (shapes.conv2d_params(shape[2], self.filters, self.kernel_size, 1, self.use_bias), 0)

    def macs(self, shape: Shape) -> int:
        """Input height x width x channels x kernel height x kernel width x filters: every input
        pixel scatters a kernel-sized patch to every output channel."""
        return math.prod(shape) * self.kernel_size[0] * self.kernel_size[1] * self.filters


class DepthwiseConv2D(_Windowed):
    """Per-channel convolution: each input channel gets `depth_multiplier` kernels of its own."""

    type: Literal["DepthwiseConv2D"] = "DepthwiseConv2D"
    depth_multiplier: PositiveInt = Field(1, description="Output channels per input channel.")
    depthwise_initializer: Initializer = "glorot_uniform"
    depthwise_regularizer: Regularizer | None = None

    example: ClassVar[str] = "{type: DepthwiseConv2D, kernel_size: 3, padding: same}"

    def output_shape(self, shape: Shape) -> Shape:
        return (*self.spatial(shape), shape[2] * self.depth_multiplier)

    def params(self, shape: Shape) -> tuple[int, int]:
        return (shapes.depthwise_params(shape[2], self.depth_multiplier, self.kernel_size, self.use_bias), 0)

    def macs(self, shape: Shape) -> int:
        """Output height x width x channels x kernel height x kernel width: each output channel
        reads one input channel."""
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

    example: ClassVar[str] = "{type: SeparableConv2D, filters: 64, kernel_size: 3, activation: relu}"
    width_field: ClassVar[str] = "filters"

    def output_shape(self, shape: Shape) -> Shape:
        return (*self.spatial(shape), self.filters)

    def params(self, shape: Shape) -> tuple[int, int]:
        # Depthwise kernel without its own bias, then a 1x1 conv that carries the bias.
        depthwise = shapes.depthwise_params(shape[2], self.depth_multiplier, self.kernel_size, False)
        middle = shape[2] * self.depth_multiplier
        return (depthwise + shapes.conv2d_params(middle, self.filters, (1, 1), 1, self.use_bias), 0)

    def macs(self, shape: Shape) -> int:
        """The depthwise step's (as DepthwiseConv2D, with depth_multiplier) plus the pointwise
        1x1 convolution's (as Conv2D)."""
        height, width = self.spatial(shape)
        middle = shape[2] * self.depth_multiplier
        depthwise = shapes.depthwise_macs((height, width, middle), self.kernel_size)
        return depthwise + shapes.conv2d_macs((height, width, self.filters), (1, 1), middle, 1)


class _Pooling2D(LayerSpec):
    pool_size: PositivePair = Field((2, 2), description="Window height and width; an int means both.")
    strides: PositivePair | None = Field(None, description="Step between windows; defaults to pool_size.")
    padding: Padding = "valid"
    data_format: DataFormat = "channels_last"

    def output_shape(self, shape: Shape) -> Shape:
        return shapes.pool2d_output(shape, self.pool_size, self.strides or self.pool_size, self.padding)


class MaxPooling2D(_Pooling2D):
    """Maximum over each pooling window (keras.layers.MaxPooling2D)."""

    type: Literal["MaxPooling2D"] = "MaxPooling2D"
    example: ClassVar[str] = "{type: MaxPooling2D, pool_size: 2}"


class AveragePooling2D(_Pooling2D):
    """Mean over each pooling window (keras.layers.AveragePooling2D)."""

    type: Literal["AveragePooling2D"] = "AveragePooling2D"
    example: ClassVar[str] = "{type: AveragePooling2D, pool_size: 2, strides: 2}"


class _GlobalPooling2D(LayerSpec):
    keepdims: bool = Field(False, description="Keep the spatial axes as 1x1.")
    data_format: DataFormat = "channels_last"

    def output_shape(self, shape: Shape) -> Shape:
        shapes.require_rank(shape, 3, "4D image")
        return (1, 1, shape[2]) if self.keepdims else (shape[2],)


class GlobalAveragePooling2D(_GlobalPooling2D):
    """Mean over height and width: (H, W, C) -> (C,), or (1, 1, C) with keepdims."""

    type: Literal["GlobalAveragePooling2D"] = "GlobalAveragePooling2D"
    example: ClassVar[str] = "{type: GlobalAveragePooling2D}"


class GlobalMaxPooling2D(_GlobalPooling2D):
    """Maximum over height and width: (H, W, C) -> (C,), or (1, 1, C) with keepdims."""

    type: Literal["GlobalMaxPooling2D"] = "GlobalMaxPooling2D"
    example: ClassVar[str] = "{type: GlobalMaxPooling2D, keepdims: true}"


class UpSampling2D(LayerSpec):
    """Repeat rows and columns `size` times (keras.layers.UpSampling2D)."""

    type: Literal["UpSampling2D"] = "UpSampling2D"
    size: PositivePair = Field((2, 2), description="Upsampling factors for height and width.")
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos3", "lanczos5", "area"] = "nearest"
    data_format: DataFormat = "channels_last"

    example: ClassVar[str] = "{type: UpSampling2D, size: 2, interpolation: bilinear}"

    def output_shape(self, shape: Shape) -> Shape:
        shapes.require_rank(shape, 3, "4D image")
        return (shape[0] * self.size[0], shape[1] * self.size[1], shape[2])


class Flatten(LayerSpec):
    """Collapse every axis but the batch into one."""

    type: Literal["Flatten"] = "Flatten"
    example: ClassVar[str] = "{type: Flatten}"

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

    example: ClassVar[str] = "{type: Dense, units: 10, activation: softmax}"
    width_field: ClassVar[str] = "units"
    last_axis_only: ClassVar[bool] = True

    def output_shape(self, shape: Shape) -> Shape:
        return shapes.dense_output(shape, self.units)

    def params(self, shape: Shape) -> tuple[int, int]:
        return (shapes.dense_params(shape[-1], self.units, self.use_bias), 0)

    def macs(self, shape: Shape) -> int:
        """Input size x units (per position when the input has more than one axis)."""
        return shapes.dense_macs(shape, self.units)

    def output_activation(self) -> str | None:
        return self.activation or "linear"


class Dropout(LayerSpec):
    """Zero a random fraction `rate` of the inputs while training."""

    type: Literal["Dropout"] = "Dropout"
    rate: Rate = Field(description="Fraction of inputs to drop, 0 <= rate < 1.")
    seed: Annotated[int, Field(ge=0)] | None = None

    example: ClassVar[str] = "{type: Dropout, rate: 0.5}"
    preserves_shape: ClassVar[bool] = True


class SpatialDropout2D(LayerSpec):
    """Drop whole feature maps (channels) at random while training."""

    type: Literal["SpatialDropout2D"] = "SpatialDropout2D"
    rate: Rate = Field(description="Fraction of channels to drop, 0 <= rate < 1.")
    seed: Annotated[int, Field(ge=0)] | None = None
    data_format: DataFormat = "channels_last"

    example: ClassVar[str] = "{type: SpatialDropout2D, rate: 0.2}"

    def output_shape(self, shape: Shape) -> Shape:
        shapes.require_rank(shape, 3, "4D image")
        return shape


class BatchNormalization(LayerSpec):
    """Normalize the last axis with batch statistics; keeps moving averages for inference."""

    type: Literal["BatchNormalization"] = "BatchNormalization"
    axis: Literal[-1, 3] = Field(-1, description="The channels axis (channels last: -1 or 3).")
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

    example: ClassVar[str] = "{type: BatchNormalization}"

    def output_shape(self, shape: Shape) -> Shape:
        if self.axis == 3:
            shapes.require_rank(shape, 3, "4D image (axis: 3)")
        return shape

    def params(self, shape: Shape) -> tuple[int, int]:
        channels = shape[-1]
        # gamma and beta are learned; the moving mean and variance are updated, not trained.
        return (channels * (int(self.center) + int(self.scale)), 2 * channels)


class LayerNormalization(LayerSpec):
    """Normalize each sample over its last axis (keras.layers.LayerNormalization)."""

    type: Literal["LayerNormalization"] = "LayerNormalization"
    axis: Literal[-1] = Field(-1, description="The normalized axis (the last).")
    epsilon: Annotated[float, Field(gt=0.0)] = 0.001
    center: bool = Field(True, description="Learn an offset (beta).")
    scale: bool = Field(True, description="Learn a scale (gamma).")
    beta_initializer: Initializer = "zeros"
    gamma_initializer: Initializer = "ones"
    beta_regularizer: Regularizer | None = None
    gamma_regularizer: Regularizer | None = None

    example: ClassVar[str] = "{type: LayerNormalization, epsilon: 1.0e-6}"
    preserves_shape: ClassVar[bool] = True

    def params(self, shape: Shape) -> tuple[int, int]:
        return (shape[-1] * (int(self.center) + int(self.scale)), 0)


FloatOrList = float | Annotated[list[float], Field(min_length=1)]


class Normalization(LayerSpec):
    """(x - mean) / sqrt(variance) per channel; mean and variance given here, or adapted from the
    training images by `cnncompile train` when both are omitted (keras.layers.Normalization)."""

    type: Literal["Normalization"] = "Normalization"
    axis: Literal[-1, 3] | None = Field(-1, description="Channels axis with its own statistics; null: one mean and variance for all values.")
    mean: FloatOrList | None = Field(None, description="Per-channel (or one) mean; omit with variance to adapt both from the training data.")
    variance: FloatOrList | None = Field(None, description="Per-channel (or one) variance.")
    invert: bool = Field(False, description="Apply the inverse: x * sqrt(variance) + mean.")

    example: ClassVar[str] = "{type: Normalization, mean: 33.3, variance: 6172.9}"

    @model_validator(mode="after")
    def _config(self) -> "Normalization":
        if (self.mean is None) != (self.variance is None):
            raise ValueError("give both mean and variance, or neither (then `train` adapts them "
                             "from the training images)")
        return self

    @property
    def adapted(self) -> bool:
        return self.mean is None

    def output_shape(self, shape: Shape) -> Shape:
        if self.axis == 3:
            shapes.require_rank(shape, 3, "4D image (axis: 3)")
        channels = 1 if self.axis is None else shape[-1]
        for field in ("mean", "variance"):
            value = getattr(self, field)
            if isinstance(value, list) and len(value) not in (1, channels):
                raise ShapeError(f"{field} has {len(value)} values but the input has {channels} "
                                 "channels; give one per channel, or one for all", field=field)
        return shape

    def params(self, shape: Shape) -> tuple[int, int]:
        # Adapted statistics are weights (mean, variance and the sample count), never trained;
        # given ones are constants in the graph.
        if not self.adapted:
            return (0, 0)
        channels = 1 if self.axis is None else shape[-1]
        return (0, 2 * channels + 1)


class Activation(LayerSpec):
    """Apply an activation function on its own."""

    type: Literal["Activation"] = "Activation"
    activation: ActivationName

    example: ClassVar[str] = "{type: Activation, activation: relu}"
    preserves_shape: ClassVar[bool] = True


class ReLU(LayerSpec):
    """max(x, 0) with options: a cap (ReLU6: max_value 6), a slope below `threshold`."""

    type: Literal["ReLU"] = "ReLU"
    max_value: Annotated[float, Field(ge=0.0)] | None = Field(None, description="Cap on the output; none: no cap.")
    negative_slope: Annotated[float, Field(ge=0.0)] = Field(0.0, description="Slope below the threshold.")
    threshold: float = Field(0.0, description="Values below it are zeroed (or scaled by negative_slope).")

    example: ClassVar[str] = "{type: ReLU, max_value: 6}"
    preserves_shape: ClassVar[bool] = True

    def output_activation(self) -> str | None:
        return "relu"


class LeakyReLU(LayerSpec):
    """x for x >= 0, negative_slope * x below (Keras 3's default slope is 0.3)."""

    type: Literal["LeakyReLU"] = "LeakyReLU"
    negative_slope: Annotated[float, Field(ge=0.0)] = 0.3

    example: ClassVar[str] = "{type: LeakyReLU, negative_slope: 0.1}"
    preserves_shape: ClassVar[bool] = True

    def output_activation(self) -> str | None:
        return "leaky_relu"


class Softmax(LayerSpec):
    """Softmax over `axis`, as a layer of its own."""

    type: Literal["Softmax"] = "Softmax"
    axis: int = Field(-1, description="The axis that sums to 1.")

    example: ClassVar[str] = "{type: Softmax}"

    def output_shape(self, shape: Shape) -> Shape:
        shapes.normalize_axis(self.axis, len(shape))
        return shape

    def output_activation(self) -> str | None:
        return "softmax"


class Identity(LayerSpec):
    """Passes its input through unchanged: a named point in the graph to read from."""

    type: Literal["Identity"] = "Identity"
    example: ClassVar[str] = "{type: Identity, name: stem_out}"
    preserves_shape: ClassVar[bool] = True


class ZeroPadding2D(LayerSpec):
    """Add rows and columns of zeros around the image."""

    type: Literal["ZeroPadding2D"] = "ZeroPadding2D"
    padding: Padding2 = Field(((1, 1), (1, 1)), description="n, [height, width] or [[top, bottom], [left, right]].")
    data_format: DataFormat = "channels_last"

    example: ClassVar[str] = "{type: ZeroPadding2D, padding: [[1, 2], [1, 2]]}"

    def output_shape(self, shape: Shape) -> Shape:
        shapes.require_rank(shape, 3, "4D image")
        return shapes.padded(shape, self.padding)


class Cropping2D(LayerSpec):
    """Remove rows and columns from the image borders."""

    type: Literal["Cropping2D"] = "Cropping2D"
    cropping: Padding2 = Field(((0, 0), (0, 0)), description="n, [height, width] or [[top, bottom], [left, right]].")
    data_format: DataFormat = "channels_last"

    example: ClassVar[str] = "{type: Cropping2D, cropping: 2}"

    def output_shape(self, shape: Shape) -> Shape:
        shapes.require_rank(shape, 3, "4D image")
        return shapes.cropped(shape, self.cropping)


TargetDim = Annotated[int, Field(ge=-1)]


class Reshape(LayerSpec):
    """Reshape to `target_shape` (batch axis excluded); one entry may be -1 to infer it."""

    type: Literal["Reshape"] = "Reshape"
    target_shape: Annotated[list[TargetDim], Field(min_length=1)]

    example: ClassVar[str] = "{type: Reshape, target_shape: [-1, 32]}"

    @model_validator(mode="after")
    def _config(self) -> "Reshape":
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

    example: ClassVar[str] = "{type: Rescaling, scale: 2.0, offset: -1.0}"
    preserves_shape: ClassVar[bool] = True


class Resizing(LayerSpec):
    """Resize the image to height x width (keras.layers.Resizing): e.g. 28x28 digits to the 224x224
    a pretrained network expects. In-graph, so exports carry it."""

    type: Literal["Resizing"] = "Resizing"
    height: PositiveInt
    width: PositiveInt
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos3", "lanczos5", "area"] = "bilinear"
    crop_to_aspect_ratio: bool = Field(False, description="Crop the largest centred window of the target aspect ratio first.")
    pad_to_aspect_ratio: bool = Field(False, description="Pad to the target aspect ratio first instead.")
    data_format: DataFormat = "channels_last"

    example: ClassVar[str] = "{type: Resizing, height: 224, width: 224}"

    @model_validator(mode="after")
    def _config(self) -> "Resizing":
        if self.crop_to_aspect_ratio and self.pad_to_aspect_ratio:
            raise ValueError("crop_to_aspect_ratio and pad_to_aspect_ratio cannot both be true (Keras rejects it)")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        shapes.require_rank(shape, 3, "4D image")
        return (self.height, self.width, shape[2])


class CenterCrop(LayerSpec):
    """Crop the central height x width window (keras.layers.CenterCrop); a smaller image is
    resized up to it first, as Keras does."""

    type: Literal["CenterCrop"] = "CenterCrop"
    height: PositiveInt
    width: PositiveInt
    data_format: DataFormat = "channels_last"

    example: ClassVar[str] = "{type: CenterCrop, height: 224, width: 224}"

    def output_shape(self, shape: Shape) -> Shape:
        shapes.require_rank(shape, 3, "4D image")
        return (self.height, self.width, shape[2])


# Merge layers: Keras's merging layers, which take a list of tensors (base_merge.py).

class _Merge(LayerSpec):
    inputs: Annotated[list[LayerName], Field(min_length=2)] = Field(
        description="Names of the layers to merge (`input` is the model input), at least two.")

    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int | None] = None

    def output_shape(self, *shapes_in: Shape) -> Shape:
        return shapes.broadcast(shapes_in)

    def output_activation(self) -> str | None:
        return "linear"


class Add(_Merge):
    """Element-wise sum of its inputs (shapes broadcast as in Keras)."""

    type: Literal["Add"] = "Add"
    example: ClassVar[str] = "{type: Add, inputs: [stem, conv2d_1]}"


class Subtract(_Merge):
    """First input minus the second (exactly two inputs)."""

    type: Literal["Subtract"] = "Subtract"
    inputs: Annotated[list[LayerName], Field(min_length=2, max_length=2)] = Field(
        description="The two layers: first minus second.")

    example: ClassVar[str] = "{type: Subtract, inputs: [a, b]}"
    max_inputs: ClassVar[int | None] = 2


class Multiply(_Merge):
    """Element-wise product; a (1, 1, C) input scales every pixel (squeeze-and-excitation)."""

    type: Literal["Multiply"] = "Multiply"
    example: ClassVar[str] = "{type: Multiply, inputs: [features, se_gate]}"


class Average(_Merge):
    """Element-wise mean of its inputs."""

    type: Literal["Average"] = "Average"
    example: ClassVar[str] = "{type: Average, inputs: [a, b]}"


class Maximum(_Merge):
    """Element-wise maximum of its inputs."""

    type: Literal["Maximum"] = "Maximum"
    example: ClassVar[str] = "{type: Maximum, inputs: [a, b]}"


class Minimum(_Merge):
    """Element-wise minimum of its inputs."""

    type: Literal["Minimum"] = "Minimum"
    example: ClassVar[str] = "{type: Minimum, inputs: [a, b]}"


class Concatenate(_Merge):
    """Join inputs along `axis` (default the channels); every other axis must match."""

    type: Literal["Concatenate"] = "Concatenate"
    axis: int = Field(-1, description="Axis to join along, counting the batch axis as 0; -1 is the channels.")

    example: ClassVar[str] = "{type: Concatenate, inputs: [branch_a, branch_b]}"

    @model_validator(mode="after")
    def _config(self) -> "Concatenate":
        if self.axis == 0:
            raise ValueError("axis 0 is the batch axis; concatenate along the channels (-1) or a spatial axis")
        return self

    def output_shape(self, *shapes_in: Shape) -> Shape:
        return shapes.concatenated(shapes_in, self.axis)


LAYER_TYPES: tuple[type[LayerSpec], ...] = (
    Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, MaxPooling2D, AveragePooling2D,
    GlobalAveragePooling2D, GlobalMaxPooling2D, UpSampling2D, Flatten, Dense, Dropout,
    SpatialDropout2D, BatchNormalization, LayerNormalization, Normalization, Activation, ReLU,
    LeakyReLU, Softmax, Identity, ZeroPadding2D, Cropping2D, Reshape, Rescaling, Resizing, CenterCrop,
    Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate,
)
"""Every layer type, in reference order. The union, the names, the reference and the
completeness tests are all derived from this one tuple."""

LAYER_NAMES = tuple(cls.__name__ for cls in LAYER_TYPES)
_BY_NAME = dict(zip(LAYER_NAMES, LAYER_TYPES))


def validate_layer(value: Any) -> LayerSpec:
    """Validate one layer by its `type`, building only that class's validator: a spec using 4
    of the 34 types never builds the other 30 (validate_by_type)."""
    return validate_by_type(value, _BY_NAME, LayerSpec, untagged=True)


LayerUnion = Annotated[Union[LAYER_TYPES], Field(discriminator="type")]  # noqa: UP007 (a tuple of classes)
"""The same as `Layer`, built eagerly: for the JSON Schema, where every type is described."""

Layer = Annotated[LayerSpec, PlainValidator(validate_layer)]
