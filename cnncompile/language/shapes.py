"""Pure shape arithmetic over tuples, with no layer objects and no framework.

These mirror Keras's `compute_conv_output_shape` and `compute_pooling_output_shape`
(keras/src/ops/operation_utils.py) for channels-last 2D inputs. Layer specs delegate
to them in one line each, and the differential tests hold them to Keras's answers.

A shape here is a tuple without the batch axis, e.g. (H, W, C). Problems raise
ShapeError naming the argument to blame, so the caller can point at its YAML key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Shape = tuple[int, ...]
Pair = tuple[int, int]


class ShapeError(ValueError):
    """A layer cannot accept its input; `field` names the argument at fault, if any, and
    `operands` the positions of the inputs that clash (for merge layers)."""

    def __init__(self, message: str, field: str | None = None, operands: tuple[int, ...] = ()):
        super().__init__(message)
        self.field = field
        self.operands = operands


def fmt(shape: Sequence[int | None]) -> str:
    """Render a shape the way Keras's summary does: (None, 26, 26, 32)."""
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def require_rank(shape: Shape, rank: int, what: str) -> None:
    if len(shape) != rank:
        hint = {3: "(height, width, channels)", 1: "(features,)"}.get(rank, f"rank {rank}")
        raise ShapeError(
            f"expects a {what} input of shape (batch, ...) = {hint}, "
            f"received {fmt((None, *shape))}"
        )


def window_output_length(
    length: int, window: int, stride: int, padding: str, dilation: int = 1
) -> int:
    """Output length along one spatial axis of a conv or pooling window.

    valid: floor((L - d*(k-1) - 1) / s) + 1, which is <= 0 when the window does not fit.
    same:  ceil(L / s), independent of the window (Keras pads as needed).
    """
    if padding == "same":
        return (length - 1) // stride + 1
    effective = dilation * (window - 1) + 1
    return (length - effective) // stride + 1


def spatial_output(
    shape: Shape,
    window: Pair,
    strides: Pair,
    padding: str,
    dilation: Pair = (1, 1),
    window_name: str = "kernel_size",
) -> Pair:
    """(H_out, W_out) of a 2D sliding window; raises when a side would reach zero."""
    require_rank(shape, 3, "4D image")
    height, width = shape[0], shape[1]
    out = tuple(
        window_output_length(n, k, s, padding, d)
        for n, k, s, d in zip((height, width), window, strides, dilation)
    )
    if min(out) <= 0:
        effective = tuple(d * (k - 1) + 1 for k, d in zip(window, dilation))
        dilated = "" if dilation == (1, 1) else f" (dilated to {effective[0]}x{effective[1]})"
        word = "kernel" if window_name == "kernel_size" else "pool window"
        raise ShapeError(
            f"{word} {window[0]}x{window[1]}{dilated} does not fit the {height}x{width} input "
            f"(padding 'valid'): output would be {out[0]}x{out[1]}; "
            f"use padding: same or a smaller {window_name}",
            field=window_name,
        )
    return out  # type: ignore[return-value]


def conv2d_output(
    shape: Shape, filters: int, kernel: Pair, strides: Pair, padding: str, dilation: Pair
) -> Shape:
    return (*spatial_output(shape, kernel, strides, padding, dilation), filters)


def pool2d_output(shape: Shape, pool: Pair, strides: Pair, padding: str) -> Shape:
    return (*spatial_output(shape, pool, strides, padding, window_name="pool_size"), shape[2])


def conv2d_params(in_channels: int, filters: int, kernel: Pair, groups: int, use_bias: bool) -> int:
    # Each filter sees only in_channels/groups channels (grouped convolution).
    return kernel[0] * kernel[1] * (in_channels // groups) * filters + (filters if use_bias else 0)


def conv2d_macs(out: Shape, kernel: Pair, in_channels: int, groups: int) -> int:
    # One multiply-accumulate per kernel tap, per input channel in the group, per output element.
    return math.prod(out) * kernel[0] * kernel[1] * (in_channels // groups)


def depthwise_params(in_channels: int, multiplier: int, kernel: Pair, use_bias: bool) -> int:
    out_channels = in_channels * multiplier
    return kernel[0] * kernel[1] * out_channels + (out_channels if use_bias else 0)


def depthwise_macs(out: Shape, kernel: Pair) -> int:
    # Every output channel reads a single input channel.
    return math.prod(out) * kernel[0] * kernel[1]


def dense_output(shape: Shape, units: int) -> Shape:
    # Like Keras, Dense acts on the last axis only; leading axes pass through.
    return (*shape[:-1], units)


def dense_params(in_features: int, units: int, use_bias: bool) -> int:
    return in_features * units + (units if use_bias else 0)


def dense_macs(shape: Shape, units: int) -> int:
    return math.prod(shape[:-1]) * shape[-1] * units


def padded(shape: Shape, pads: tuple[Pair, Pair]) -> Shape:
    (top, bottom), (left, right) = pads
    return (shape[0] + top + bottom, shape[1] + left + right, shape[2])


def cropped(shape: Shape, crops: tuple[Pair, Pair]) -> Shape:
    (top, bottom), (left, right) = crops
    out = (shape[0] - top - bottom, shape[1] - left - right, shape[2])
    if out[0] <= 0 or out[1] <= 0:
        raise ShapeError(
            f"cropping (({top}, {bottom}), ({left}, {right})) removes the whole "
            f"{shape[0]}x{shape[1]} input: output would be {out[0]}x{out[1]}",
            field="cropping",
        )
    return out


def reshaped(shape: Shape, target: Sequence[int]) -> Shape:
    """Resolve a Keras Reshape target (at most one -1) against the input size."""
    size = math.prod(shape)
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if known == 0 or size % known:
            raise ShapeError(
                f"cannot reshape {size} values {fmt((None, *shape))} into "
                f"{fmt((None, *target))}: {size} is not a multiple of {known}",
                field="target_shape",
            )
        return tuple(size // known if d == -1 else d for d in target)
    if known != size:
        raise ShapeError(
            f"cannot reshape {fmt((None, *shape))} ({size} values) into "
            f"{fmt((None, *target))} ({known} values)",
            field="target_shape",
        )
    return tuple(target)


def transposed_output_length(length: int, kernel: int, stride: int, padding: str,
                             output_padding: int | None, dilation: int = 1) -> int:
    """Output length of a transposed convolution (Keras's deconv_output_length)."""
    kernel = kernel + (kernel - 1) * (dilation - 1)
    if output_padding is None:
        # Keras picks the padding that inverts a forward conv of the same arguments.
        return length * stride + (max(kernel - stride, 0) if padding == "valid" else 0)
    pad = kernel // 2 if padding == "same" else 0
    return (length - 1) * stride + kernel - 2 * pad + output_padding


def normalize_axis(axis: int, rank: int) -> int:
    """A Keras axis (batch axis = 0, negatives from the end) as an index into a shape
    without the batch axis; raises when it names the batch or no axis at all."""
    full = axis + rank + 1 if axis < 0 else axis
    if not 1 <= full <= rank:
        raise ShapeError(f"axis {axis} does not exist for inputs of rank {rank + 1} "
                         f"(valid: 1 to {rank} or -1 to -{rank})", field="axis")
    return full - 1


def broadcast(shapes: Sequence[Shape]) -> Shape:
    """Output of an element-wise merge (Add, Multiply, ...): Keras's broadcasting rule.

    Shapes are aligned on the right; along each axis the sizes must be equal or one of
    them 1. Raises naming the first pair of inputs that clash.
    """
    out: Shape = shapes[0]
    for index, shape in enumerate(shapes[1:], start=1):
        long, short = (out, shape) if len(out) >= len(shape) else (shape, out)
        merged = list(long[: len(long) - len(short)])
        for a, b in zip(long[len(long) - len(short):], short):
            if a != b and 1 not in (a, b):
                clash = next(i for i in range(index) if _broadcasts(shapes[i], shape) is False) if index > 1 else 0
                raise ShapeError("do not broadcast: aligned from the right, each axis must be equal or 1",
                                 field="inputs", operands=(clash, index))
            merged.append(b if a == 1 else a)
        out = tuple(merged)
    return out


def _broadcasts(a: Shape, b: Shape) -> bool:
    return all(x == y or 1 in (x, y) for x, y in zip(reversed(a), reversed(b)))


def concatenated(shapes: Sequence[Shape], axis: int) -> Shape:
    """Output of Concatenate: equal ranks, equal sizes on every axis but `axis`, summed on it."""
    first = shapes[0]
    for index, shape in enumerate(shapes[1:], start=1):
        if len(shape) != len(first):
            raise ShapeError("have different ranks; Concatenate needs equal ranks", field="inputs",
                             operands=(0, index))
    at = normalize_axis(axis, len(first))
    for index, shape in enumerate(shapes[1:], start=1):
        if any(a != b for i, (a, b) in enumerate(zip(first, shape)) if i != at):
            raise ShapeError(f"differ outside the concatenation axis ({axis}); every other axis must match",
                             field="inputs", operands=(0, index))
    return (*first[:at], sum(shape[at] for shape in shapes), *first[at + 1:])
