"""What every source produces: the model in the language's terms, before any YAML is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnncompile.language.layers import LAYER_NAMES, LAYER_TYPES, LayerSpec

_CLASSES = dict(zip(LAYER_NAMES, LAYER_TYPES))


@dataclass(frozen=True)
class Unsupported:
    """One thing the language cannot express: which layer or node, its type or op, why."""

    where: str
    kind: str
    why: str

    def __str__(self) -> str:
        return f"{self.where} ({self.kind}): {self.why}"


class ImportRefused(Exception):
    """The source cannot be described exactly; every reason at once, nothing written."""

    def __init__(self, source: str, problems: list[Unsupported]):
        super().__init__(f"{source}: {len(problems)} unsupported part{'s' if len(problems) != 1 else ''}")
        self.source = source
        self.problems = problems


class SourceError(Exception):
    """The file cannot be read as a model at all (one clean line, not a list of layers)."""


@dataclass
class ImportedLayer:
    """One layer: its spec type and the arguments that differ from the language's defaults."""

    name: str
    type: str
    args: dict[str, Any]
    inputs: list[str]
    weights: list[Any] = field(default_factory=list)  # numpy arrays in Keras's order, channels last

    def entry(self, previous: str | None) -> dict[str, Any]:
        """The layer as a `layers:` item; `inputs` only when it is not the layer before."""
        item: dict[str, Any] = {"type": self.type, "name": self.name, **self.args}
        if self.inputs != [previous]:
            item["inputs"] = list(self.inputs)
        return item


@dataclass
class ImportedModel:
    name: str
    input_shape: list[int]
    layers: list[ImportedLayer]
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.layers = canonical_order(self.layers)

    def flat_layers(self) -> list[dict[str, Any]]:
        previous = "input"
        items = []
        for layer in self.layers:
            items.append(layer.entry(previous))
            previous = layer.name
        return items


PAIRS = {"kernel_size", "strides", "dilation_rate", "pool_size", "size", "padding", "cropping",
         "output_padding"}
"""Arguments whose type also reads one int as "the same for every side" (types.py's pairs)."""


def compact(value: Any) -> Any:
    """A pair as the shortest spelling the language reads the same way: (3, 3) -> 3,
    ((1, 1), (1, 1)) -> 1, ((0, 1), (0, 1)) -> [[0, 1], [0, 1]]."""
    if isinstance(value, (tuple, list)):
        items = [compact(v) for v in value]
        if items and all(v == items[0] for v in items) and not isinstance(items[0], list):
            return items[0]
        return items
    return value


def plain(value: Any) -> Any:
    """Tuples as lists, recursively (YAML and equality comparisons want one spelling)."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def spec_arguments(kind: str, values: dict[str, Any], inputs: list[str]) -> dict[str, Any]:
    """Validate `values` as a `kind` layer and keep only what differs from the defaults, in
    the class's field order (so every file reads alike). Raises ValueError (pydantic's)."""
    cls: type[LayerSpec] = _CLASSES[kind]
    layer = cls.model_validate({"type": kind, **values, "inputs": inputs})
    kept = layer.model_dump(exclude_defaults=True, exclude={"type", "name", "inputs"})
    if kept.get("activation") == "linear" and cls.model_fields["activation"].default is None:
        del kept["activation"]  # Keras writes 'linear' for "no activation", the language null
    # The width (filters, units), then the other required arguments, as one writes them by hand.
    kept = dict(sorted(kept.items(), key=lambda item: (item[0] != cls.width_field,
                                                       not cls.model_fields[item[0]].is_required())))
    return {key: compact(value) if key in PAIRS else plain(value) for key, value in kept.items()}


def layer_class(kind: str) -> type[LayerSpec] | None:
    return _CLASSES.get(kind)


def canonical_order(layers: list[ImportedLayer]) -> list[ImportedLayer]:
    """The layers in an order that depends only on the graph and its names, not on how the
    source happened to list them (Keras and tf2onnx order branches differently): each step
    continues from the layer just listed when one can, else takes the ready layer first by
    name; the output stays last. A shortcut's `0_conv` then comes before `1_conv`, as in
    Keras Applications' code."""
    if not layers:
        return layers
    output = layers[-1]
    waiting = {id(layer): layer for layer in layers}
    done = {"input"}
    ordered: list[ImportedLayer] = []
    last = "input"
    while waiting:
        ready = [layer for layer in waiting.values()
                 if all(ref in done for ref in layer.inputs) and (layer is not output or len(waiting) == 1)]
        if not ready:  # a reference to nothing listed (cannot happen for a wired graph): keep the rest
            ordered += [layer for layer in layers if id(layer) in waiting]
            break
        chosen = min(ready, key=lambda layer: (last not in layer.inputs, layer.name))
        ordered.append(chosen)
        done.add(chosen.name)
        last = chosen.name
        del waiting[id(chosen)]
    return ordered
