"""ONNX files -> ImportedModel, with the `onnx` package only (no converter in between).

ONNX's spatial operators are channels-first (NCHW); the language is channels-last. Each ONNX
tensor is therefore tracked as a view of a spec layer's output: `channels_first` when the
ONNX tensor is the NCHW transpose of the spec's NHWC tensor. Layout transposes (a Keras
export's NHWC input transposed to NCHW, and back) then only flip that flag and disappear;
kernels are transposed to Keras's layouts; a Flatten of an NCHW tensor remembers the order in
which ONNX lists the features, and the Dense that reads it permutes its kernel's rows.

Each operator maps through the OPS table; one the language cannot express exactly is
reported (node, op, why), never approximated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import ValidationError

from cnncompile.importer.imported import (
    ImportedLayer, ImportedModel, ImportRefused, SourceError, Unsupported, spec_arguments)
from cnncompile.language.layers import snake_case


@dataclass(frozen=True)
class Tensor:
    """An ONNX tensor as a view of a spec layer's output."""

    layer: str
    shape: tuple  # ONNX's, batch first
    channels_first: bool = False
    order: Any = None
    """Flattened NCHW features: order[i] is the ONNX position of the spec's feature i."""
    non_negative: bool = False  # after a ReLU: zero padding before a max-pool is then exact


class Skip(Exception):
    """The node is refused (already reported)."""


class _Reader:
    def __init__(self, model: onnx.ModelProto, name: str):
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # shape inference is a help, not a requirement
            pass
        self.graph = model.graph
        self.name = name
        self.metadata = {p.key: p.value for p in model.metadata_props}
        # Keras through tf2onnx (our own `export --onnx` among them) names nodes by the Keras
        # layer's scope, `<model>_1/<layer>_1/<op>`: the layer's name comes back from it.
        self.keras_scopes = model.producer_name in ("tf2onnx", "cnncompile") or "keras.version" in self.metadata
        self.constants: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.shapes: dict[str, tuple] = {}
        for info in (*self.graph.input, *self.graph.value_info, *self.graph.output):
            dims = info.type.tensor_type.shape.dim
            self.shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        self.tensors: dict[str, Tensor] = {}
        self.layers: list[ImportedLayer] = []
        self.by_name: dict[str, ImportedLayer] = {}
        self.consumers: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        self.problems: list[Unsupported] = []
        self.node: onnx.NodeProto | None = None

    # --- helpers the op handlers use ----------------------------------------------------

    def refuse(self, why: str) -> Skip:
        self.problems.append(Unsupported(f"node '{self.node.name or self.node.output[0]}'", self.node.op_type, why))
        return Skip()

    def tensor(self, index: int = 0) -> Tensor:
        return self.tensors[self.node.input[index]]

    def constant(self, index: int) -> np.ndarray | None:
        if index >= len(self.node.input) or not self.node.input[index]:
            return None
        return self.constants.get(self.node.input[index])

    def attr(self, name: str, default: Any = None) -> Any:
        for attribute in self.node.attribute:
            if attribute.name == name:
                value = onnx.helper.get_attribute_value(attribute)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def spatial(self, x: Tensor) -> tuple[int, int, int]:
        """(channels, height, width) of an NCHW tensor, or refuse."""
        if not x.channels_first or len(x.shape) != 4 or any(d is None for d in x.shape[1:]):
            raise self.refuse(f"expects an image tensor (NCHW with known sizes), received shape {x.shape}")
        return x.shape[1], x.shape[2], x.shape[3]

    def scope_name(self) -> str:
        """PyTorch's module path (`/layer1/layer1.0/conv1/Conv` -> layer1_0_conv1), else the
        node's name, else the op's Keras-style name (made unique by layer_name)."""
        parts = [p for p in (self.node.name or "").split("/") if p]
        if self.keras_scopes and len(parts) > 2:
            base = re.sub(r"_\d+$", "", parts[1])
        elif len(parts) > 1:
            parts = parts[:-1]
            parts = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
            base = "_".join(parts)
            if re.search(r"\.\d+$", parts[-1]):  # an op of a numbered container itself: layer1.0's Add
                base += "_" + snake_case(self.node.op_type)
        elif parts and not re.fullmatch(rf"{self.node.op_type}(_\d+)?", parts[0]):
            base = parts[0]
        else:
            base = snake_case(self.node.op_type)
        base = re.sub(r"[^A-Za-z0-9_]", "_", base).strip("_") or "layer"
        return "input_layer" if base == "input" else base

    def layer_name(self, suffix: str = "") -> str:
        base = self.scope_name() + suffix
        name, n = base, 1
        while name in self.by_name:
            name, n = f"{base}_{n}", n + 1
        return name

    def emit(self, kind: str, args: dict[str, Any], inputs: list[Tensor], weights: list[np.ndarray] = (),
             shape: tuple | None = None, suffix: str = "", **view: Any) -> Tensor:
        """Add a layer; returns the view of its output (bound to the node's output by the caller)."""
        name = self.layer_name(suffix)
        args = {k: _shortest(v) for k, v in args.items()}
        try:
            args = spec_arguments(kind, args, [t.layer for t in inputs])
        except ValidationError as exc:
            raise self.refuse("; ".join(e["msg"] for e in exc.errors())) from None
        layer = ImportedLayer(name, kind, args, [t.layer for t in inputs], [np.asarray(w, "float32") for w in weights])
        self.layers.append(layer)
        self.by_name[name] = layer
        out_shape = shape if shape is not None else self.shapes.get(self.node.output[0], ())
        return Tensor(name, out_shape, **{"channels_first": inputs[0].channels_first, **view})

    def bind(self, tensor: Tensor) -> None:
        self.tensors[self.node.output[0]] = tensor

    def padding(self, x: Tensor, kernel: list[int], strides: list[int], dilations: list[int],
                zero_padding_exact: bool) -> tuple[str, Tensor]:
        """Keras's padding for the node's pads: 'same' when they are exactly Keras's 'same'
        split, 'valid' when zero, else a ZeroPadding2D first (where zeros are exact)."""
        auto = self.attr("auto_pad", "NOTSET")
        _, height, width = self.spatial(x)
        if auto == "SAME_UPPER":
            return "same", x
        if auto == "VALID":
            return "valid", x
        if auto not in ("NOTSET", ""):
            raise self.refuse(f"auto_pad {auto} has no Keras equivalent")
        top, left, bottom, right = self.attr("pads", [0, 0, 0, 0])
        if not any((top, left, bottom, right)):
            return "valid", x
        same = [_same_pads(n, k, s, d) for n, k, s, d in zip((height, width), kernel, strides, dilations)]
        if [(top, bottom), (left, right)] == same:
            return "same", x
        if not zero_padding_exact:
            raise self.refuse(f"pads {[top, left, bottom, right]} are not Keras's 'same' {same}, and padding "
                              "with zeros would change the result here")
        shape = (x.shape[0], x.shape[1], height + top + bottom, width + left + right)
        padded = self.emit("ZeroPadding2D", {"padding": [[top, bottom], [left, right]]}, [x], shape=shape,
                           suffix="_pad", non_negative=x.non_negative)
        return "valid", padded


def _shortest(value: Any) -> Any:
    """A float ONNX stores in float32 (epsilon 1.001e-5 reads back as 1.0009999641624745e-05)
    as the shortest decimal with the same float32 value: what a person wrote."""
    if isinstance(value, (float, np.floating)):
        return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))
    return value


def _same_pads(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


# --- the operators -----------------------------------------------------------------------

def _conv(r: _Reader) -> None:
    x = r.tensor()
    weight, bias = r.constant(1), r.constant(2)
    if weight is None or (len(r.node.input) > 2 and r.node.input[2] and bias is None):
        raise r.refuse("weights computed at run time; a layer's weights are constants")
    channels, _, _ = r.spatial(x)
    out, per_group, kh, kw = weight.shape
    group = r.attr("group", 1)
    strides, dilations = r.attr("strides", [1, 1]), r.attr("dilations", [1, 1])
    padding, x = r.padding(x, [kh, kw], strides, dilations, zero_padding_exact=True)
    common = {"kernel_size": [kh, kw], "strides": strides, "padding": padding, "dilation_rate": dilations,
              "use_bias": bias is not None}
    tail = [bias] if bias is not None else []
    if group > 1 and group == channels and per_group == 1:
        multiplier = out // channels
        kernel = weight.reshape(channels, multiplier, kh, kw).transpose(2, 3, 0, 1)
        r.bind(r.emit("DepthwiseConv2D", {**common, "depth_multiplier": multiplier}, [x], [kernel, *tail]))
    else:
        r.bind(r.emit("Conv2D", {"filters": out, **common, "groups": group}, [x], [weight.transpose(2, 3, 1, 0), *tail]))


def _pool(kind: str) -> Callable[[_Reader], None]:
    def handle(r: _Reader) -> None:
        x = r.tensor()
        kernel = r.attr("kernel_shape")
        strides = r.attr("strides", [1, 1])
        if r.attr("dilations", [1, 1]) != [1, 1]:
            raise r.refuse("dilated pooling has no Keras equivalent")
        _, height, width = r.spatial(x)
        top, left, bottom, right = r.attr("pads", [0, 0, 0, 0])
        if r.attr("ceil_mode", 0):
            sizes = [(n + a + b - k) / s for n, a, b, k, s in zip((height, width), (top, left), (bottom, right),
                                                                 kernel, strides)]
            if any(math.ceil(v) != math.floor(v) for v in sizes):
                raise r.refuse("ceil_mode rounds the output size up here; Keras's pooling rounds down")
        # Padding with zeros equals ONNX's padding only for a max over non-negative values, or
        # for an average that counts the padded cells.
        exact = x.non_negative if kind == "MaxPooling2D" else bool(r.attr("count_include_pad", 0))
        padding, x = r.padding(x, kernel, strides, [1, 1], zero_padding_exact=exact)
        r.bind(r.emit(kind, {"pool_size": kernel, "strides": strides, "padding": padding}, [x],
                      non_negative=x.non_negative))
    return handle


def _global_pool(kind: str) -> Callable[[_Reader], None]:
    def handle(r: _Reader) -> None:
        x = r.tensor()
        r.spatial(x)
        if r.node.op_type.startswith("Reduce"):
            axes = r.attr("axes") or (list(r.constant(1)) if r.constant(1) is not None else None)
            if sorted(a % 4 for a in axes or []) != [2, 3]:
                raise r.refuse(f"a reduction over axes {axes}; only height and width (a global pooling) map")
            keepdims = bool(r.attr("keepdims", 1))
        else:
            keepdims = True  # GlobalAveragePool keeps [N, C, 1, 1]
        shape = (x.shape[0], x.shape[1], 1, 1) if keepdims else (x.shape[0], x.shape[1])
        r.bind(r.emit(kind, {"keepdims": keepdims}, [x], shape=shape, channels_first=keepdims))
    return handle


def _flatten(r: _Reader) -> None:
    x = r.tensor()
    if r.node.op_type == "Flatten" and r.attr("axis", 1) != 1:
        raise r.refuse("Flatten keeps only the batch axis in a spec (axis 1)")
    if r.node.op_type == "Reshape" and _layout_reshape(x, r.constant(1)):
        r.bind(replace(x, shape=(x.shape[0], x.shape[3], x.shape[1], x.shape[2]), channels_first=True))
        return
    if r.node.op_type == "Reshape":
        target = r.constant(1)
        if target is None or len(target) != 2 or target[0] not in (0, -1, 1) and x.shape[0] != target[0]:
            raise r.refuse(f"a reshape to {None if target is None else list(target)}; only flattening "
                           "(batch, -1) maps")
    if len(x.shape) == 2:  # already flat: nothing to do
        r.bind(x)
        return
    order = None
    if x.channels_first:
        channels, height, width = r.spatial(x)
        if height * width > 1:
            order = np.arange(channels * height * width).reshape(channels, height, width).transpose(1, 2, 0).ravel()
    size = math.prod(x.shape[1:])
    r.bind(r.emit("Flatten", {}, [x], shape=(x.shape[0], size), channels_first=False, order=order))


def _squeeze(r: _Reader) -> None:
    """[N, C, 1, 1] -> [N, C] right after a global pooling is its keepdims=False."""
    x = r.tensor()
    axes = r.attr("axes") or (list(r.constant(1)) if r.constant(1) is not None else None)
    producer = r.by_name.get(x.layer)
    if not (x.channels_first and sorted(a % 4 for a in axes or []) == [2, 3] and producer is not None
            and producer.type.startswith("Global") and r.consumers.get(r.node.input[0], 0) == 1):
        raise r.refuse(f"a squeeze of axes {axes} that does not follow a global pooling")
    producer.args.pop("keepdims", None)
    r.bind(replace(x, shape=x.shape[:2], channels_first=False))


def _layout_reshape(x: Tensor, target: np.ndarray | None) -> bool:
    """NHWC -> NCHW written as a reshape, which tf2onnx does when there is one channel."""
    return (target is not None and len(target) == 4 and len(x.shape) == 4 and not x.channels_first
            and x.shape[3] == 1 and [int(t) for t in target[1:]] == [1, x.shape[1], x.shape[2]])


def _dense_kernel(r: _Reader, x: Tensor, kernel: np.ndarray) -> np.ndarray:
    return kernel[x.order] if x.order is not None else kernel


def _gemm(r: _Reader) -> None:
    x = r.tensor()
    weight, bias = r.constant(1), r.constant(2)
    if weight is None or r.attr("transA", 0) or r.attr("alpha", 1.0) != 1.0 or r.attr("beta", 1.0) != 1.0:
        raise r.refuse("only x @ W + b with constant W, b (alpha = beta = 1, transA = 0) is a Dense layer")
    kernel = weight.T if r.attr("transB", 0) else weight
    units = kernel.shape[1]
    tail = [np.broadcast_to(bias, (units,))] if bias is not None else []
    r.bind(r.emit("Dense", {"units": units, "use_bias": bias is not None}, [x],
                  [_dense_kernel(r, x, kernel), *tail], shape=(x.shape[0], units)))


def _matmul(r: _Reader) -> None:
    x, weight = r.tensor(), r.constant(1)
    if weight is None or weight.ndim != 2 or len(x.shape) != 2:
        raise r.refuse("only a matrix product of features with a constant matrix is a Dense layer")
    r.bind(r.emit("Dense", {"units": weight.shape[1], "use_bias": False}, [x], [_dense_kernel(r, x, weight)],
                  shape=(x.shape[0], weight.shape[1])))


FUSABLE = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "Dense")


def _fused(r: _Reader, x: Tensor, activation: str) -> bool:
    """A Keras export computes a layer's own `activation` as a node of the layer's scope right
    after it: give it back to the layer (only then: a separate Activation layer stays one)."""
    producer = r.by_name.get(x.layer)
    if not (r.keras_scopes and producer is not None and producer.type in FUSABLE and "activation" not in producer.args
            and r.consumers.get(r.node.input[0], 0) == 1 and r.scope_name() == producer.name):
        return False
    producer.args = spec_arguments(producer.type, {**producer.args, "activation": activation}, producer.inputs)
    r.bind(replace(x, non_negative=activation in ("relu", "relu6", "sigmoid", "hard_sigmoid", "softmax")))
    return True


def _activation(name: str) -> Callable[[_Reader], None]:
    def handle(r: _Reader) -> None:
        x = r.tensor()
        if _fused(r, x, name):
            return
        r.bind(r.emit("Activation", {"activation": name}, [x], shape=x.shape, order=x.order,
                      non_negative=name in ("relu", "relu6", "sigmoid", "hard_sigmoid")))
    return handle


def _hard_sigmoid(r: _Reader) -> None:
    if not (abs(r.attr("alpha", 0.2) - 1 / 6) < 1e-6 and abs(r.attr("beta", 0.5) - 0.5) < 1e-6):
        raise r.refuse("HardSigmoid with alpha != 1/6 or beta != 0.5 is not Keras's hard_sigmoid")
    _activation("hard_sigmoid")(r)


def _leaky_relu(r: _Reader) -> None:
    x = r.tensor()
    r.bind(r.emit("LeakyReLU", {"negative_slope": r.attr("alpha", 0.01)}, [x], shape=x.shape, order=x.order))


def _clip(r: _Reader) -> None:
    x = r.tensor()
    low = r.constant(1) if len(r.node.input) > 1 else r.attr("min")
    high = r.constant(2) if len(r.node.input) > 2 else r.attr("max")
    low = None if low is None else float(low)
    high = None if high is None else float(high)
    if low != 0.0:
        raise r.refuse(f"Clip to [{low}, {high}]; only [0, max] is a ReLU")
    r.bind(r.emit("ReLU", {"max_value": high}, [x], shape=x.shape, order=x.order, non_negative=True))


def _softmax(r: _Reader) -> None:
    x = r.tensor()
    axis = r.attr("axis", -1) % len(x.shape)
    if x.channels_first and axis != 1 or not x.channels_first and axis != len(x.shape) - 1:
        raise r.refuse("softmax over an axis other than the channels")
    if _fused(r, x, "softmax"):
        return
    r.bind(r.emit("Softmax", {}, [x], shape=x.shape))


def _batch_norm(r: _Reader) -> None:
    x = r.tensor()
    stats = [r.constant(i) for i in range(1, 5)]
    if any(s is None for s in stats) or len(r.node.output) > 1 and any(r.node.output[1:]):
        raise r.refuse("only inference-mode batch normalization with constant statistics maps")
    if not (x.channels_first or len(x.shape) == 2):
        raise r.refuse("normalizes axis 1, which is not the channels here")
    r.bind(r.emit("BatchNormalization", {"epsilon": r.attr("epsilon", 1e-5), "momentum": r.attr("momentum", 0.9)},
                  [x], stats, shape=x.shape))


def _dropout(r: _Reader) -> None:
    x = r.tensor()
    ratio = r.constant(1)
    rate = float(ratio) if ratio is not None else float(r.attr("ratio", 0.5))
    r.bind(r.emit("Dropout", {"rate": rate}, [x], shape=x.shape, order=x.order))


def _identity(r: _Reader) -> None:
    if r.node.input[0] in r.constants:
        r.constants[r.node.output[0]] = r.constants[r.node.input[0]]
    else:
        r.bind(r.tensor())


def _constant(r: _Reader) -> None:
    r.constants[r.node.output[0]] = numpy_helper.to_array(r.attr("value"))


def _transpose(r: _Reader) -> None:
    x = r.tensor()
    perm = list(r.attr("perm", []))
    if len(x.shape) == 4 and not x.channels_first and perm == [0, 3, 1, 2]:
        shape = tuple(x.shape[i] for i in perm)
        r.bind(replace(x, shape=shape, channels_first=True))
    elif x.channels_first and perm == [0, 2, 3, 1]:
        r.bind(replace(x, shape=tuple(x.shape[i] for i in perm), channels_first=False))
    else:
        raise r.refuse(f"a transpose {perm} that is not a change of layout (NHWC <-> NCHW)")


MERGES = {"Add": "Add", "Sub": "Subtract", "Mul": "Multiply", "Max": "Maximum", "Min": "Minimum", "Sum": "Add",
          "Mean": "Average"}


def _elementwise(r: _Reader) -> None:
    constants = [r.constant(i) for i in range(len(r.node.input))]
    if not any(c is not None for c in constants):
        if r.node.op_type not in MERGES:
            raise r.refuse(f"{r.node.op_type} of two tensors has no layer in the language")
        inputs = [r.tensor(i) for i in range(len(r.node.input))]
        if len({t.channels_first for t in inputs}) != 1 or any(t.order is not None for t in inputs):
            raise r.refuse("operands in different layouts")
        shape = r.shapes.get(r.node.output[0]) or max((t.shape for t in inputs), key=lambda s: math.prod(d or 1 for d in s))
        r.bind(r.emit(MERGES[r.node.op_type], {}, inputs, shape=shape))
        return
    _with_constant(r, constants)


def _with_constant(r: _Reader, constants: list) -> None:
    """x op c with one scalar constant: Rescaling (a bias after a Dense without one is its bias)."""
    op = r.node.op_type
    if len(constants) != 2 or (constants[0] is not None and op in ("Sub", "Div")):
        raise r.refuse("arithmetic with a constant on the left; the language has Rescaling (x * scale + offset)")
    position = 0 if constants[0] is None else 1
    x, value = r.tensor(position), constants[1 - position]
    producer = r.by_name.get(x.layer)
    single = r.consumers.get(r.node.input[position], 0) == 1
    if op == "Add" and producer is not None and producer.type == "Dense" and not producer.args.get("use_bias", True) \
            and single and value.size == producer.args["units"]:
        producer.args.pop("use_bias")
        producer.weights.append(value.reshape(-1).astype("float32"))
        r.bind(x)
        return
    if value.size != 1:
        raise r.refuse(f"{op} with a constant of shape {list(value.shape)}; the language has only scalar "
                       "constants (Rescaling)")
    c = float(value.reshape(()))
    if op in ("Add", "Sub") and producer is not None and producer.type == "Rescaling" and single \
            and "offset" not in producer.args:
        producer.args["offset"] = c if op == "Add" else -c  # x * scale, then + offset: one Rescaling
        r.bind(x)
        return
    scale, offset = {"Add": (1.0, c), "Sub": (1.0, -c), "Mul": (c, 0.0), "Div": (1 / c, 0.0)}.get(op, (None, None))
    if scale is None:
        raise r.refuse(f"{op} with a constant has no layer in the language")
    r.bind(r.emit("Rescaling", {"scale": scale, "offset": offset}, [x], shape=x.shape, order=x.order))


def _concat(r: _Reader) -> None:
    inputs = [r.tensor(i) for i in range(len(r.node.input))]
    if len({t.channels_first for t in inputs}) != 1 or any(t.order is not None for t in inputs):
        raise r.refuse("operands in different layouts")
    axis = r.attr("axis") % len(inputs[0].shape)
    if inputs[0].channels_first:
        axis = {1: -1, 2: 1, 3: 2}[axis]
    elif axis == len(inputs[0].shape) - 1:
        axis = -1
    if axis == 0:
        raise r.refuse("concatenation along the batch axis")
    r.bind(r.emit("Concatenate", {"axis": axis}, inputs))


def _pad(r: _Reader) -> None:
    x = r.tensor()
    pads = r.constant(1) if len(r.node.input) > 1 else r.attr("pads")
    value = r.constant(2)
    if r.attr("mode", "constant") != "constant" or (value is not None and float(value) != 0.0) or pads is None:
        raise r.refuse("only zero padding maps (ZeroPadding2D)")
    r.spatial(x)
    pads = [int(p) for p in pads]
    if any(pads[i] for i in (0, 1, 4, 5)) or any(p < 0 for p in pads):
        raise r.refuse("padding of the batch or channel axis")
    r.bind(r.emit("ZeroPadding2D", {"padding": [[pads[2], pads[6]], [pads[3], pads[7]]]}, [x],
                  non_negative=x.non_negative))


OPS: dict[str, Callable[[_Reader], None]] = {
    "Conv": _conv,
    "MaxPool": _pool("MaxPooling2D"),
    "AveragePool": _pool("AveragePooling2D"),
    "GlobalAveragePool": _global_pool("GlobalAveragePooling2D"),
    "GlobalMaxPool": _global_pool("GlobalMaxPooling2D"),
    "ReduceMean": _global_pool("GlobalAveragePooling2D"),
    "ReduceMax": _global_pool("GlobalMaxPooling2D"),
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "Reshape": _flatten,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Relu": _activation("relu"),
    "Sigmoid": _activation("sigmoid"),
    "Tanh": _activation("tanh"),
    "Elu": _activation("elu"),
    "Selu": _activation("selu"),
    "Softplus": _activation("softplus"),
    "Softsign": _activation("softsign"),
    "HardSwish": _activation("hard_swish"),
    "HardSigmoid": _hard_sigmoid,
    "LeakyRelu": _leaky_relu,
    "Clip": _clip,
    "Softmax": _softmax,
    "BatchNormalization": _batch_norm,
    "Dropout": _dropout,
    "Identity": _identity,
    "Constant": _constant,
    "Transpose": _transpose,
    "Concat": _concat,
    "Pad": _pad,
    "Div": _elementwise,
    **{op: _elementwise for op in MERGES},
}


def _input(r: _Reader) -> list[int]:
    feeds = [i for i in r.graph.input if i.name not in r.constants]
    if len(feeds) != 1 or len(r.graph.output) != 1:
        raise ImportRefused(r.name, [Unsupported("graph", "inputs/outputs", f"{len(feeds)} inputs and "
                                                 f"{len(r.graph.output)} outputs; a spec has one image in and one tensor out")])
    feed = feeds[0]
    shape = r.shapes[feed.name]
    if any(d is None for d in shape[1:]) or not 2 <= len(shape) <= 4:
        raise ImportRefused(r.name, [Unsupported(f"input '{feed.name}'", "input", f"shape {list(shape)}: a spec's input "
                                                 "has fixed sizes (export with a fixed image size)")])
    nhwc = len(shape) == 4 and _reads_nhwc(r, feed.name, shape)
    channels_first = len(shape) == 4 and not nhwc
    r.tensors[feed.name] = Tensor("input", shape, channels_first)
    spec_shape = [shape[2], shape[3], shape[1]] if channels_first else list(shape[1:])
    return [int(d) for d in spec_shape]


def _reads_nhwc(r: _Reader, name: str, shape: tuple) -> bool:
    """An NHWC input is first made NCHW: by a transpose, or by a reshape when it has one channel.
    (A Keras export may scale it first: look through a leading Mul and Add.)"""
    readers = [n for n in r.graph.node if name in n.input]
    if len(readers) == 1 and readers[0].op_type in ("Mul", "Add"):
        return _reads_nhwc(r, readers[0].output[0], shape)
    view = Tensor("input", shape)
    return bool(readers) and all(
        n.op_type == "Transpose" and list(onnx.helper.get_attribute_value(n.attribute[0])) == [0, 3, 1, 2]
        or n.op_type == "Reshape" and _layout_reshape(view, r.constants.get(n.input[1]))
        for n in readers)


def from_model(model: onnx.ModelProto, name: str) -> tuple[ImportedModel, Tensor, Tensor]:
    """The model in the language's terms, and the views of its input and output (to feed and
    read the ONNX model in the spec's layout)."""
    r = _Reader(model, name)
    shape = _input(r)
    feed = next(iter(r.tensors.values()))
    for node in r.graph.node:
        r.node = node
        handler = OPS.get(node.op_type)
        if handler is None:
            r.problems.append(Unsupported(f"node '{node.name or node.output[0]}'", node.op_type,
                                          "no layer of the language computes this op"))
            continue
        if any(i and i not in r.tensors and i not in r.constants for i in node.input):
            continue  # an input was refused: its node is reported already
        try:
            handler(r)
        except Skip:
            pass
    output = r.tensors.get(r.graph.output[0].name)
    if not r.problems and (output is None or not r.layers or output.layer != r.layers[-1].name):
        r.problems.append(Unsupported(f"output '{r.graph.output[0].name}'", "output",
                                      "the output is not the last layer computed"))
    if r.problems:
        raise ImportRefused(name, r.problems)
    if output.order is not None:
        raise ImportRefused(name, [Unsupported("output", "Flatten", "a flattened NCHW output lists features "
                                               "in another order than the spec's")])
    return ImportedModel(_model_name(model, name), shape, r.layers), feed, output


def _model_name(model: onnx.ModelProto, fallback: str) -> str:
    name = model.graph.name
    metadata = {p.key: p.value for p in model.metadata_props}
    if "cnncompile.spec_name" in metadata:
        name = metadata["cnncompile.spec_name"]
    elif not name or name in ("main_graph", "torch_jit", "tf2onnx"):
        name = fallback
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def read(path: Path) -> tuple[ImportedModel, Callable[[np.ndarray], np.ndarray]]:
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # DecodeError, OSError
        raise SourceError(f"cannot load {path} as ONNX: {exc}") from None
    if not model.graph.node:  # protobuf reads an empty (or foreign) file as an empty model
        raise SourceError(f"cannot load {path} as ONNX: it holds no graph")
    imported, image, output = from_model(model, path.stem)
    feed = next(i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})

    def run(images: np.ndarray) -> np.ndarray:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = images.transpose(0, 3, 1, 2) if image.channels_first else images
        batch = feed.type.tensor_type.shape.dim[0].dim_value  # a fixed batch (often 1): feed that many
        step = batch or len(x)
        result = np.concatenate([session.run(None, {feed.name: x[i:i + step].astype("float32")})[0]
                                 for i in range(0, len(x), step)])
        return result.transpose(0, 2, 3, 1) if output.channels_first and result.ndim == 4 else result

    return imported, run
