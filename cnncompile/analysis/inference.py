"""Shape inference: every layer's output shape, parameters and MACs, without a framework.

A walk over the model graph in execution order. Each layer's own `output_shape`/`params`/
`macs` does the arithmetic; this module threads shapes along the graph's edges, locates
problems in the YAML, and checks the model against its dataset. A layer whose input could
not be computed is skipped, so independent mistakes on other branches are all reported in
one run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

from cnncompile.language.diagnostics import (
    Diagnostic,
    SourceMap,
    SpecError,
    in_file_order,
)
from cnncompile.language.graph import Node, first_of_each
from cnncompile.language.layers import MODEL_INPUT
from cnncompile.language.model import ModelSpec
from cnncompile.language.shapes import Shape, ShapeError, fmt
from cnncompile.language.training import BUILTIN_DATASETS

_Wired = TypeVar("_Wired")  # anything with .name and .inputs: graph nodes, layer infos


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    output_shape: tuple[int | None, ...]  # batch axis first, as None
    params: int
    trainable_params: int
    macs: int
    line: int | None
    inputs: tuple[str, ...] = ()  # the layers it reads; "input" is the model input
    block: tuple[str, ...] = ()  # the block instances it was expanded from, outermost first
    dead: bool = False
    """Its output never reaches the model's output: Keras leaves it out of the model, so the
    totals do too."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_shape: tuple[int | None, ...]
    layers: tuple[LayerInfo, ...]
    warnings: tuple[Diagnostic, ...] = ()

    @property
    def total_params(self) -> int:
        """The built model's count: dead layers are not in it."""
        return sum(layer.params for layer in self.layers if not layer.dead)

    @property
    def trainable_params(self) -> int:
        return sum(layer.trainable_params for layer in self.layers if not layer.dead)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers if not layer.dead)

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        return self.layers[-1].output_shape

    def live_layers(self) -> list[LayerInfo]:
        """The output layer and every layer it depends on, in execution order."""
        return _ancestors(self.layers)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "layers": [{**asdict(layer), "output_shape": list(layer.output_shape), "inputs": list(layer.inputs),
                        "block": list(layer.block)}
                       for layer in self.layers],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_macs": self.total_macs,
        }


def infer(spec: ModelSpec, source: SourceMap | None = None, problems: Sequence[Diagnostic] = ()) -> ModelInfo:
    """Shapes, parameters and MACs of every layer; SpecError with located problems otherwise.

    `problems` are those validation and wiring found (a Partial's): the graph then holds the
    layers they did not touch, which are all still checked, and SpecError lists every problem
    in file order."""
    source = source or SourceMap()
    nodes = spec.graph(source)
    shapes: dict[str, Shape] = {MODEL_INPUT: spec.input.tensor_shape}
    infos: list[LayerInfo] = []
    errors: list[Diagnostic] = []
    by_name: dict[str, Node] | None = None
    live = {node.name for node in _ancestors(nodes)} if nodes else set()
    for node in nodes:
        if not all(name in shapes for name in node.inputs):
            continue  # an input failed: its error is reported; this layer's would only echo it
        inputs = [shapes[name] for name in node.inputs]
        try:
            out = node.layer.output_shape(*inputs)
            trainable, frozen = node.layer.params(*inputs)
            if not node.trainable:  # frozen: Keras counts all of a frozen layer's weights as non-trainable
                trainable, frozen = 0, trainable + frozen
            macs = node.layer.macs(*inputs)
        except ShapeError as exc:
            if by_name is None:  # once per graph, however many merge errors it has
                by_name = {other.name: other for other in nodes}
            errors.append(_shape_error(node, exc, inputs, by_name, source))
            continue
        shapes[node.name] = out
        mark = source.value(node.path)
        infos.append(LayerInfo(node.name, node.layer.type, (None, *out), trainable + frozen, trainable, macs,
                               mark.line if mark else None, node.inputs, node.block, node.name not in live))
    if errors or problems:  # the input against the dataset is independent of the layers: say it too
        raise SpecError(in_file_order([*problems, *first_of_each(errors), *_input_against_dataset(spec, source)]))
    model = ModelInfo(spec.name, (None, *spec.input.shape), tuple(infos))
    errors, warnings = check_against_training(spec, model, source)
    warnings = _dead_branches(nodes, live, source) + warnings
    if errors:
        raise SpecError(errors + warnings)
    return ModelInfo(model.name, model.input_shape, model.layers, tuple(warnings))


def _shape_error(node: Node, exc: ShapeError, inputs: list[Shape], by_name: dict[str, Node],
                 source: SourceMap) -> Diagnostic:
    """Located at the argument to blame; merge clashes name both operands and their lines."""
    if exc.operands:
        operands = " and ".join(_operand(node.inputs[i], inputs[i], source.value(by_name[node.inputs[i]].path)
                                         if node.inputs[i] in by_name else None)
                                for i in exc.operands)
        return Diagnostic("error", f"{node.label}: inputs {operands} {exc}",
                          source.value((*node.path, "inputs")), node.notes(source))
    path = (*node.path, exc.field) if exc.field else node.path
    shown = fmt((None, *inputs[0])) if len(inputs) == 1 else ", ".join(fmt((None, *s)) for s in inputs)
    return Diagnostic("error", f"{node.label}: {exc} (input shape{'s' if len(inputs) > 1 else ''} {shown})",
                      source.value(path), node.notes(source))


def _operand(name: str, shape: Shape, mark) -> str:
    return f"'{name}' {fmt((None, *shape))}" + (f" (line {mark.line})" if mark else "")


def _dead_branches(nodes: list[Node], live: set[str], source: SourceMap) -> list[Diagnostic]:
    """Layers whose output never reaches the model's output: almost always a wiring mistake."""
    read = {name for node in nodes for name in node.inputs}
    output = nodes[-1].name
    # One warning per dead branch: at its end, the layer nobody reads.
    return [Diagnostic("warning", f"{node.label}: its output is never used (the model's output is "
                       f"'{output}', the last layer); a dead branch is usually a wiring mistake, and "
                       "Keras leaves it out of the model (and the totals)",
                       source.value(node.path))
            for node in nodes if node.name not in live and node.name not in read]


def check_against_training(
    spec: ModelSpec, model: ModelInfo, source: SourceMap
) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """Does the model fit its dataset and loss? Only checkable when both are known."""
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    training = spec.training
    if training is None:
        return errors, warnings
    nodes = spec.graph()
    if isinstance(training.dataset, str):
        errors.extend(_input_against_dataset(spec, source))
        errors.extend(_check_output(spec, nodes, model, len(BUILTIN_DATASETS[training.dataset][1]), source))
    activation, at = _final_activation(nodes)
    last = nodes[-1]
    if training.loss.from_logits and activation == "softmax":
        warnings.append(Diagnostic(
            "warning", "the last layer applies softmax but the loss has from_logits: true; "
            "it will treat probabilities as logits. Remove the softmax or set from_logits: false",
            source.value((*at.path, "activation"))))
    elif not training.loss.from_logits and activation != "softmax":
        warnings.append(Diagnostic(
            "warning", f"the model ends in {last.layer.type} with activation "
            f"'{activation or 'linear'}', but {training.loss.type} expects probabilities; "
            "use activation: softmax or set the loss's from_logits: true", source.value(last.path)))
    return errors, warnings


def _input_against_dataset(spec: ModelSpec, source: SourceMap) -> list[Diagnostic]:
    """The input must be the built-in dataset's image shape: known whatever the layers are."""
    dataset = spec.training.dataset if spec.training else None
    if not isinstance(dataset, str):
        return []
    image_shape = BUILTIN_DATASETS[dataset][0]
    if tuple(spec.input.shape) == image_shape:
        return []
    return [Diagnostic("error", f"input.shape {list(spec.input.shape)} does not match {dataset}'s images, "
                       f"which are {list(image_shape)}", source.value(("input", "shape")))]


def _check_output(spec: ModelSpec, nodes: list[Node], model: ModelInfo, classes: int,
                  source: SourceMap) -> list[Diagnostic]:
    out = model.output_shape
    dataset = spec.training.dataset  # type: ignore[union-attr]
    info = {layer.name: layer for layer in model.layers}
    shape_of = {MODEL_INPUT: model.input_shape, **{name: i.output_shape for name, i in info.items()}}
    last = nodes[-1]
    if len(out) != 2:
        # Blame a layer that was handed an image but acts on the last axis only (Dense acts
        # per pixel, as Keras's does), on the way to the output.
        for node in _ancestors(nodes):
            before = shape_of[node.inputs[0]]
            if node.layer.last_axis_only and len(before) > 2:
                return [Diagnostic(
                    "error", f"{node.label}: receives {fmt(before)} and acts on the last axis only, so "
                    f"the model outputs {fmt(out)}; a classifier for {classes} classes must output "
                    f"(None, {classes}): add Flatten or GlobalAveragePooling2D before it",
                    source.value(node.path))]
        return [Diagnostic(
            "error", f"the model outputs {fmt(out)}; a classifier for {dataset}'s {classes} classes "
            f"must output (None, {classes}): end with Flatten (or GlobalAveragePooling2D) and "
            f"Dense(units: {classes})", source.value(last.path))]
    if out[1] != classes:
        # Walk back through layers that keep the last axis to the one that sets it.
        by_name = {node.name: node for node in nodes}
        node = last
        while node.layer.width_field is None and node.inputs[0] in by_name and \
                shape_of[node.inputs[0]][-1] == shape_of[node.name][-1]:
            node = by_name[node.inputs[0]]
        if node.layer.width_field is not None:
            field = node.layer.width_field
            return [Diagnostic(
                "error", f"{node.label}: {field}: {getattr(node.layer, field)} but {dataset} has "
                f"{classes} classes; the model must output (None, {classes})",
                source.value((*node.path, field)))]
        return [Diagnostic(
            "error", f"the model outputs {fmt(out)} but {dataset} has {classes} classes",
            source.value(last.path))]
    return []


def _ancestors(layers: Sequence[_Wired]) -> list[_Wired]:
    """The last layer (the output) and every layer it depends on, in execution order."""
    needed = {layers[-1].name}
    for layer in reversed(layers):
        if layer.name in needed:
            needed.update(layer.inputs)
    return [layer for layer in layers if layer.name in needed]


def _final_activation(nodes: list[Node]) -> tuple[str | None, Node]:
    """The activation that produces the output, looking back through layers that pass their
    input's through (pooling, dropout, reshapes), and the layer that applies it."""
    by_name = {node.name: node for node in nodes}
    node = nodes[-1]
    while True:
        activation = node.layer.output_activation()
        if activation is not None or node.inputs[0] not in by_name:
            return activation, node
        node = by_name[node.inputs[0]]
