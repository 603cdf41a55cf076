"""Keras files (`.keras`, legacy `.h5`) -> ImportedModel.

The language uses Keras's class and argument names, so a layer maps by its class name and
its `get_config()`: arguments the language has are validated by the layer's spec class,
arguments it lacks must be at the value that means "off" (None, False), anything else is
refused, named. Weights are taken as Keras stores them; the spec's model, built by
cnncompile's builder, has the same layers in the same order, so they load by layer name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras
from pydantic import ValidationError

from cnncompile.importer.imported import (
    PAIRS, ImportedLayer, ImportedModel, ImportRefused, SourceError, Unsupported, layer_class, plain, spec_arguments)
from cnncompile.language.types import INITIALIZERS

SUFFIXES = (".keras", ".h5", ".hdf5")


def load(path: Path) -> keras.Model:
    try:
        # safe_mode: a file never runs code (Lambda layers are refused, not executed).
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, TypeError, OSError... for bad files
        raise SourceError(f"cannot load {path} as a Keras model: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read(path: Path) -> tuple[ImportedModel, keras.Model]:
    """The model in the language's terms, and the Keras model itself (for the weights check)."""
    model = load(path)
    return from_model(model), model


def from_model(model: keras.Model) -> ImportedModel:
    """Every layer mapped, or ImportRefused listing every one that cannot be."""
    functional = getattr(model, "_functional", None) or model  # a Sequential's graph
    problems: list[Unsupported] = []
    if len(functional.inputs) != 1 or len(functional.outputs) != 1:
        problems.append(Unsupported(f"model '{model.name}'", type(model).__name__,
                                    f"{len(functional.inputs)} inputs and {len(functional.outputs)} outputs; "
                                    "a spec has one image in and one tensor out"))
        raise ImportRefused(model.name, problems)
    shape = list(functional.inputs[0].shape[1:])
    if any(d is None for d in shape) or not 1 <= len(shape) <= 3:
        problems.append(Unsupported("input", "InputLayer", f"shape {tuple(functional.inputs[0].shape)}: "
                                    "a spec's input has a fixed [height, width, channels]; rebuild the "
                                    "model with input_shape given"))
    layers: list[ImportedLayer] = []
    names: dict[int, str] = {}  # id(operation) -> its name in the spec
    for operation in functional.operations:
        if isinstance(operation, keras.layers.InputLayer):
            names[id(operation)] = "input"
            continue
        nodes = [node for index, node in enumerate(operation._inbound_nodes)
                 if f"{id(operation)}_ib-{index}" in functional._nodes]
        kind = type(operation).__name__
        where = f"layer '{operation.name}'"
        if len(nodes) != 1:
            problems.append(Unsupported(where, kind, f"called {len(nodes)} times in the model (a shared "
                                        "layer); every spec layer is applied once"))
            continue
        inputs = [names.get(id(t._keras_history.operation), t._keras_history.operation.name)
                  for t in nodes[0].input_tensors]
        names[id(operation)] = operation.name
        layer = _layer(operation, kind, where, inputs, problems, nodes[0])
        if layer is not None:
            layers.append(layer)
    if problems:
        raise ImportRefused(model.name, problems)
    return ImportedModel(_spec_name(model.name), [int(d) for d in shape], layers)


def _spec_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or "imported"


SCALAR_ARITHMETIC = {"Add": lambda c: (1.0, c), "Subtract": lambda c: (1.0, -c), "Multiply": lambda c: (c, 0.0),
                     "Divide": lambda c: (1 / c, 0.0), "TrueDivide": lambda c: (1 / c, 0.0)}
"""Keras 3 operations on a tensor and a number (`x + 3.0`, `x * (1 / 6)`): x * scale + offset."""


TENSOR_ARITHMETIC = {"Add": "Add", "Subtract": "Subtract", "Multiply": "Multiply", "Maximum": "Maximum",
                     "Minimum": "Minimum"}
"""`x * gate` between two tensors: the merge layer of the same name (broadcasting alike)."""


def _operation(operation: Any, kind: str, node: Any, inputs: list[str],
               problems: list[Unsupported]) -> ImportedLayer | None:
    """A Keras 3 operation that is not a layer (MobileNetV3's hard-sigmoid is
    `ReLU(6)(x + 3.0) * (1 / 6)`): tensor-and-number arithmetic is a Rescaling, which computes
    it exactly in float32 (x * 1 + 3, x * (1/6) + 0)."""
    args = list(node.arguments.args)
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    where = f"operation '{operation.name}'"
    if kind in SCALAR_ARITHMETIC and len(args) == 2 and len(numbers) == 1 and not node.arguments.kwargs             and (kind in ("Add", "Multiply") or isinstance(args[1], (int, float))):
        scale, offset = SCALAR_ARITHMETIC[kind](float(numbers[0]))
        return ImportedLayer(operation.name, "Rescaling", spec_arguments("Rescaling", {"scale": scale, "offset": offset},
                                                                         inputs), inputs)
    if kind in TENSOR_ARITHMETIC and not numbers and len(args) == 2 and not node.arguments.kwargs:
        return ImportedLayer(operation.name, TENSOR_ARITHMETIC[kind], spec_arguments(TENSOR_ARITHMETIC[kind], {}, inputs),
                             inputs)
    problems.append(Unsupported(where, kind, "an operation on tensors, not a layer; of these the language "
                                "has only arithmetic of a tensor and a number (as Rescaling) and of two "
                                "tensors (as the merge layers)"))
    return None


def _layer(operation: Any, kind: str, where: str, inputs: list[str],
           problems: list[Unsupported], node: Any) -> ImportedLayer | None:
    if isinstance(operation, keras.Model):
        problems.append(Unsupported(where, kind, "a model inside the model; the language has no "
                                    "nested models (save the inner layers into the outer model)"))
        return None
    if not isinstance(operation, keras.layers.Layer):
        return _operation(operation, kind, node, inputs, problems)
    cls = layer_class(kind)
    if cls is None:
        problems.append(Unsupported(where, kind, "no layer of this type in the language"))
        return None
    config = operation.get_config()
    values: dict[str, Any] = {}
    before = len(problems)
    for key, value in config.items():
        if key in cls.model_fields and key not in ("type", "name", "inputs"):
            values[key] = _argument(key, value, kind, where, problems)
        elif not _off(key, value) and config.get(ONLY_WITH.get(key, key)) is not False:
            problems.append(Unsupported(where, kind, f"argument {key}={value!r} has no equivalent in the language"))
    if kind == "BatchNormalization" and values.get("axis") in (3, [3], (3,)):
        values["axis"] = -1  # channels last: axis 3 of a 4D tensor is its last axis
    for key in ("axis",):  # Normalization and LayerNormalization store a tuple of one axis
        if isinstance(values.get(key), (list, tuple)) and len(values[key]) == 1:
            values[key] = values[key][0]
    if len(problems) > before:
        return None
    values = {k: v for k, v in values.items() if v is not _DROP}
    try:
        args = spec_arguments(kind, values, inputs)
    except ValidationError as exc:
        problems.extend(Unsupported(where, kind, f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"])
                        for e in exc.errors())
        return None
    return ImportedLayer(operation.name, kind, args, inputs, [w for w in operation.get_weights()])


_DROP = object()  # an argument the spec leaves at its default (an initializer it cannot name)


ONLY_WITH = {"renorm_clipping": "renorm", "renorm_momentum": "renorm"}
"""Keras arguments that mean nothing while another is False (BatchNormalization's renorm)."""


def _off(key: str, value: Any) -> bool:
    """Arguments the language lacks but which are harmless at this value."""
    if key == "dtype":
        name = value.get("config", {}).get("name") if isinstance(value, dict) else value
        return name in (None, "float32")
    if key == "data_format":  # Flatten's: channels_last is the only layout a spec has
        return value == "channels_last"
    if key == "trainable":
        return True  # freezing is training's business, not the architecture's
    return value is None or value is False or key == "name"


def _argument(key: str, value: Any, kind: str, where: str, problems: list[Unsupported]) -> Any:
    if key.endswith("_initializer"):
        return _initializer(value)
    if key.endswith("_regularizer") and isinstance(value, dict):
        config = value.get("config", {})
        if value.get("class_name") in ("L1", "L2", "L1L2"):
            return {k: float(v) for k, v in config.items() if k in ("l1", "l2")}
        problems.append(Unsupported(where, kind, f"{key}: regularizer {value.get('class_name')} has no equivalent"))
        return None
    return plain(value) if key not in PAIRS else value  # Reshape's target_shape tuple: a list


def _initializer(value: Any) -> Any:
    """Keras's serialized initializer as the language's name. One with settings the language
    cannot write (a VarianceScaling's scale) is left at the default: an initializer only
    draws the weights before training, and an import with --weights replaces them."""
    if isinstance(value, str):
        return value if value in INITIALIZERS else _DROP
    if isinstance(value, dict):
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", value.get("class_name", "")).lower()
        settings = {k: v for k, v in value.get("config", {}).items() if v is not None}
        if name in INITIALIZERS and not settings:
            return name
    return _DROP
