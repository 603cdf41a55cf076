"""Shape inference: every layer's output shape, parameters and MACs, without a framework.

A walk over the model graph in execution order (a chain today). Each layer's own
`output_shape`/`params`/`macs` does the arithmetic; this module threads shapes through,
locates problems in the YAML, and checks the model against its dataset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cnncompile.diagnostics import Diagnostic, SourceMap, SpecError
from cnncompile.shapes import Shape, ShapeError, fmt
from cnncompile.spec.layers import Dense, LayerSpec
from cnncompile.spec.model import ModelSpec
from cnncompile.spec.training import BUILTIN_DATASETS


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    output_shape: tuple[int | None, ...]  # batch axis first, as None
    params: int
    trainable_params: int
    macs: int
    line: int | None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_shape: tuple[int | None, ...]
    layers: tuple[LayerInfo, ...]
    warnings: tuple[Diagnostic, ...] = ()

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def trainable_params(self) -> int:
        return sum(layer.trainable_params for layer in self.layers)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        return self.layers[-1].output_shape

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "layers": [{**asdict(layer), "output_shape": list(layer.output_shape)} for layer in self.layers],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_macs": self.total_macs,
        }


def infer(spec: ModelSpec, source: SourceMap | None = None) -> ModelInfo:
    """Shapes, parameters and MACs of every layer; SpecError with located problems otherwise."""
    source = source or SourceMap()
    shapes: dict[str, Shape] = {"input": tuple(spec.input.shape)}
    infos: list[LayerInfo] = []
    for index, (name, layer, inputs) in enumerate(spec.graph()):
        shape = shapes[inputs[0]]
        try:
            out = layer.output_shape(shape)
            trainable, frozen = layer.params(shape)
            macs = layer.macs(shape)
        except ShapeError as exc:
            path = ("layers", index, exc.field) if exc.field else ("layers", index)
            raise SpecError([Diagnostic(
                "error", f"{_label(index, layer, name)}: {exc} (input shape {fmt((None, *shape))})",
                source.value(path))]) from None
        shapes[name] = out
        mark = source.value(("layers", index))
        infos.append(LayerInfo(name, layer.type, (None, *out), trainable + frozen, trainable, macs,
                               mark.line if mark else None))
    model = ModelInfo(spec.name, (None, *spec.input.shape), tuple(infos))
    errors, warnings = check_against_training(spec, model, source)
    if errors:
        raise SpecError(errors + warnings)
    return ModelInfo(model.name, model.input_shape, model.layers, tuple(warnings))


def check_against_training(
    spec: ModelSpec, model: ModelInfo, source: SourceMap
) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """Does the model fit its dataset and loss? Only checkable when both are known."""
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    training = spec.training
    if training is None:
        return errors, warnings
    if isinstance(training.dataset, str):
        image_shape, labels = BUILTIN_DATASETS[training.dataset]
        if tuple(spec.input.shape) != image_shape:
            errors.append(Diagnostic(
                "error", f"input.shape {list(spec.input.shape)} does not match {training.dataset}'s "
                f"images, which are {list(image_shape)}", source.value(("input", "shape"))))
        errors.extend(_check_output(spec, model, len(labels), source))
    last = spec.layers[-1]
    activation = _final_activation(spec)
    last_mark = source.value(("layers", len(spec.layers) - 1))
    if training.loss.from_logits and activation == "softmax":
        warnings.append(Diagnostic(
            "warning", "the last layer applies softmax but the loss has from_logits: true; "
            "it will treat probabilities as logits. Remove the softmax or set from_logits: false",
            source.value(("layers", len(spec.layers) - 1, "activation")) or last_mark))
    elif not training.loss.from_logits and activation != "softmax":
        warnings.append(Diagnostic(
            "warning", f"the model ends in {last.type} with activation "
            f"'{activation or 'linear'}', but {training.loss.type} expects probabilities; "
            "use activation: softmax or set the loss's from_logits: true", last_mark))
    return errors, warnings


def _check_output(spec: ModelSpec, model: ModelInfo, classes: int, source: SourceMap) -> list[Diagnostic]:
    out = model.output_shape
    dataset = spec.training.dataset  # type: ignore[union-attr]
    if len(out) != 2:
        # Blame the Dense that was handed an image: it acted per pixel, as Keras's Dense does.
        for index, (layer, before) in enumerate(zip(spec.layers, (model.input_shape, *(
                info.output_shape for info in model.layers)))):
            if isinstance(layer, Dense) and len(before) > 2:
                return [Diagnostic(
                    "error", f"{_label(index, layer, model.layers[index].name)}: receives "
                    f"{fmt(before)} and acts on the last axis only, so the model outputs {fmt(out)}; "
                    f"a classifier for {classes} classes must output (None, {classes}): "
                    "add Flatten or GlobalAveragePooling2D before it", source.value(("layers", index)))]
        return [Diagnostic(
            "error", f"the model outputs {fmt(out)}; a classifier for {dataset}'s {classes} classes "
            f"must output (None, {classes}): end with Flatten (or GlobalAveragePooling2D) and "
            f"Dense(units: {classes})", source.value(("layers", len(spec.layers) - 1)))]
    if out[1] != classes:
        for index in range(len(spec.layers) - 1, -1, -1):
            layer = spec.layers[index]
            if isinstance(layer, Dense):
                return [Diagnostic(
                    "error", f"{_label(index, layer, model.layers[index].name)}: units: {layer.units} "
                    f"but {dataset} has {classes} classes; the model must output (None, {classes})",
                    source.value(("layers", index, "units")))]
        return [Diagnostic(
            "error", f"the model outputs {fmt(out)} but {dataset} has {classes} classes",
            source.value(("layers", len(spec.layers) - 1)))]
    return []


def _final_activation(spec: ModelSpec) -> str | None:
    """The activation that produces the output, skipping shape-only layers after it."""
    for layer in reversed(spec.layers):
        name = layer.activation_name
        if name is not None:
            return name
        if layer.type in ("Dense", "Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
            return None
    return None


def _label(index: int, layer: LayerSpec, name: str) -> str:
    return f"layers[{index}] {layer.type} '{name}'"

