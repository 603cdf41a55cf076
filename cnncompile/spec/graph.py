"""The spec's layers as a graph: every layer named, wired to the layers it reads.

A layer reads the layers named in its `inputs`, or else the layer listed before it (the
first reads the model input, called `input`). A name may only refer to a layer listed
*earlier*, so the listing order is a topological order and a cycle cannot be written.
The model's output is the last layer listed.

Names are checked here, all at once: unknown names (with did-you-mean), names used before
they are defined, duplicates, the reserved `input`, and the number of inputs each layer
type takes. Shapes are inference's business; this stage is pure structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cnncompile.diagnostics import Diagnostic, Path, SourceMap, SpecError, did_you_mean
from cnncompile.spec.layers import MODEL_INPUT, LayerSpec, snake_case


@dataclass(frozen=True)
class Node:
    """One layer of the expanded graph."""

    name: str
    layer: LayerSpec
    inputs: tuple[str, ...]
    path: Path
    """Where the layer is written in the YAML: ('layers', 3), or a line inside a block."""

    @property
    def label(self) -> str:
        """How messages name the layer: `layers[3] Conv2D 'conv2d_2'`."""
        where = "".join(f"[{step}]" if isinstance(step, int) else (f".{step}" if i else step)
                        for i, step in enumerate(self.path))
        return f"{where} {self.layer.type} '{self.name}'"


def default_names(layers: Sequence[LayerSpec], taken: set[str]) -> list[str]:
    """Each layer's own name, or Keras's default (conv2d, conv2d_1, ...) skipping names
    in `taken`, so every name is unique."""
    taken = taken | {layer.name for layer in layers if layer.name}
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        if layer.name:
            names.append(layer.name)
            continue
        base = snake_case(layer.type)
        while True:
            n = counts.get(base, 0)
            counts[base] = n + 1
            candidate = base if n == 0 else f"{base}_{n}"
            if candidate not in taken:
                break
        taken.add(candidate)
        names.append(candidate)
    return names


def resolve(layers: Sequence[LayerSpec], source: SourceMap | None = None) -> list[Node]:
    """The wired graph of a spec's `layers`; SpecError listing every wiring problem."""
    source = source or SourceMap()
    names = default_names(layers, {MODEL_INPUT})
    problems: list[Diagnostic] = []
    defined: dict[str, int] = {}  # name -> index of the layer that defines it
    nodes: list[Node] = []
    for index, (name, layer) in enumerate(zip(names, layers)):
        path = ("layers", index)
        node = Node(name, layer, tuple(layer.inputs or [names[index - 1] if index else MODEL_INPUT]), path)
        if name == MODEL_INPUT:
            problems.append(Diagnostic("error", f"{node.label}: the name '{MODEL_INPUT}' is reserved for the "
                                       "model input; choose another", source.value((*path, "name"))))
        elif name in defined:
            first = source.value(("layers", defined[name]))
            also = f"layers[{defined[name]}]" + (f" at line {first.line}" if first else "")
            problems.append(Diagnostic("error", f"{node.label}: duplicate layer name '{name}' (also {also})",
                                       source.value((*path, "name"))))
        for position, wanted in enumerate(node.inputs):
            if wanted != MODEL_INPUT and wanted not in defined:
                problems.append(Diagnostic("error", f"{node.label}: inputs: {_unknown(wanted, names, defined, index, source)}",
                                           source.value((*path, "inputs", position))))
        problems.extend(_arity(node, source))
        defined.setdefault(name, index)
        nodes.append(node)
    if problems:
        raise SpecError(problems)
    return nodes


def _unknown(wanted: str, names: list[str], defined: dict[str, int], index: int, source: SourceMap) -> str:
    """Why an input name does not resolve: defined later, or not at all (did you mean)."""
    if wanted in names[index:]:
        later = names.index(wanted, index)
        mark = source.value(("layers", later))
        at = f" at line {mark.line}" if mark else ""
        what = "itself" if later == index else f"'{wanted}', which is defined later (layers[{later}]{at})"
        return (f"cannot read {what}; a layer reads only the model input and layers listed "
                "before it, so the graph has no cycles: move it below its inputs")
    hint = did_you_mean(wanted, [MODEL_INPUT, *defined])
    return f"no layer named '{wanted}' is defined before this one{hint}"


def _arity(node: Node, source: SourceMap) -> list[Diagnostic]:
    layer = type(node.layer)
    count = len(node.inputs)
    if count < layer.min_inputs or (layer.max_inputs is not None and count > layer.max_inputs):
        if layer.max_inputs == 1:
            expected, hint = "reads exactly one input", "; merge them first with Add or Concatenate"
        elif layer.max_inputs == layer.min_inputs:
            expected, hint = f"takes exactly {layer.min_inputs} inputs", ""
        else:
            expected, hint = f"takes at least {layer.min_inputs} inputs", ""
        return [Diagnostic("error", f"{node.label}: {node.layer.type} {expected}, received {count}{hint}",
                           source.value((*node.path, "inputs")))]
    return []
