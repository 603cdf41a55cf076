"""The spec's layers as a graph: blocks expanded, every layer named and wired.

A layer reads the layers named in its `inputs`, or else the layer listed before it (the
first reads the model input, called `input`). A name may only refer to a layer listed
*earlier*, so the listing order is a topological order and a cycle cannot be written.
The model's output is the last layer listed.

A block use (`{block: NAME, ...}`) is replaced by the block's layers, their `${...}`
expressions evaluated with the use's parameters, their names prefixed with the use's
(`conv2_block1` + `1_conv`), their references resolved inside the block. A layer whose
`when:` is false is dropped and its name stands for its first input.

Every problem is collected, then all are reported at once: unknown names (did you mean),
names used before they are defined, duplicates, the reserved `input`, the number of
inputs a layer takes, unknown blocks and parameters, recursion, bad expressions, and
invalid layers inside blocks (at the line in the block, with a note at each use). Shapes
are inference's business; this stage is pure structure.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from cnncompile.language.diagnostics import Diagnostic, Path, SourceMap, SpecError, did_you_mean
from cnncompile.language.blocks import RESERVED, BlockUse
from cnncompile.language.expressions import ExpressionError, substitute
from cnncompile.language.layers import MODEL_INPUT, Layer, LayerSpec, snake_case

if TYPE_CHECKING:
    from cnncompile.language.model import ModelSpec


@dataclass(frozen=True)
class Use:
    """One instance of a block: which block, the instance's name, where the use is written."""

    block: str
    instance: str
    path: Path
    trainable: bool = True


@dataclass(frozen=True)
class Node:
    """One layer of the expanded graph."""

    name: str
    layer: LayerSpec
    inputs: tuple[str, ...]
    path: Path
    """Where the layer is written in the YAML: ('layers', 3), or a line inside a block."""
    uses: tuple[Use, ...] = ()
    """The block instances it was expanded from, outermost first."""

    @property
    def label(self) -> str:
        """How messages name the layer: `layers[3] Conv2D 'conv2d_2'`."""
        return f"{_where(self.path)} {self.layer.type} '{self.name}'"

    @property
    def trainable(self) -> bool:
        """False when the layer, or a block use it was expanded from, says `trainable: false`."""
        return self.layer.trainable and all(use.trainable for use in self.uses)

    @property
    def block(self) -> tuple[str, ...]:
        return tuple(use.instance for use in self.uses)

    def notes(self, source: SourceMap) -> tuple[Diagnostic, ...]:
        return _expansion_notes(self.uses, source)


def _where(path: Path) -> str:
    return "".join(f"[{step}]" if isinstance(step, int) else (f".{step}" if i else str(step))
                   for i, step in enumerate(path))


def _expansion_notes(uses: Sequence[Use], source: SourceMap) -> tuple[Diagnostic, ...]:
    """"in expansion of block" notes, innermost use first, as a C compiler prints them."""
    return tuple(Diagnostic("note", f"in expansion of block '{use.block}' as '{use.instance}'",
                            source.value(use.path)) for use in reversed(uses))


def default_names(entries: Iterable[tuple[str, str | None]], taken: set[str]) -> list[str]:
    """For (type, own name) pairs: the own name, or Keras's default (conv2d, conv2d_1, ...)
    skipping names in `taken` and every own name, so all names are unique."""
    entries = list(entries)
    taken = taken | {name for _, name in entries if name}
    counts: dict[str, int] = {}
    names = []
    for kind, own in entries:
        if own:
            names.append(own)
            continue
        base = snake_case(kind)
        while True:
            n = counts.get(base, 0)
            counts[base] = n + 1
            candidate = base if n == 0 else f"{base}_{n}"
            if candidate not in taken:
                break
        taken.add(candidate)
        names.append(candidate)
    return names


_BROKEN = object()  # a name whose layer had an error: references to it are not errors again


@functools.cache
def _layer_adapter() -> TypeAdapter:
    """Validates one expanded layer; built on first use, so specs without blocks never pay."""
    return TypeAdapter(Layer)


@dataclass
class _Scope:
    """The names visible while expanding one list of layers (the top level, or one block use)."""

    path: Path  # of the list: ('layers',) or ('blocks', NAME, 'layers')
    prefix: str  # prepended to local names: '' at the top level, 'conv2_block1_' in a use
    names: dict[str, Any]  # local name -> the full name it stands for (or _BROKEN)
    values: dict[str, Any] = field(default_factory=dict)  # for ${...}: parameters and index
    uses: tuple[Use, ...] = ()
    used_blocks: dict[str, int] = field(default_factory=dict)  # default instance numbering


class _Expansion:
    def __init__(self, spec: ModelSpec, source: SourceMap):
        self.blocks = spec.blocks or {}
        self.source = source
        self.nodes: list[Node] = []
        self.defined: dict[str, Path] = {}
        self.problems: list[Diagnostic] = []

    def error(self, message: str, path: Path, uses: Sequence[Use] = ()) -> None:
        self.problems.append(Diagnostic("error", message, self.source.value(path),
                                        _expansion_notes(uses, self.source)))

    # --- lists of layers -------------------------------------------------------------

    def expand(self, items: Sequence[Any], scope: _Scope, previous: Any) -> Any:
        """Expand `items` in `scope`; returns the full name of the last one's output."""
        written = default_names((_kind_and_name(item) for item in items if not _is_use(item)),
                                {MODEL_INPUT} if not scope.prefix else set())
        written = iter(written)
        written = [None if _is_use(item) else next(written) for item in items]
        for index, item in enumerate(items):
            path = (*scope.path, index)
            if written[index] is None:
                previous = self.expand_use(item, path, scope, previous)
            else:
                previous = self.place_layer(item, written[index], written[index + 1:], path, scope, previous)
        return previous

    def place_layer(self, item: Any, default: str, later: list, path: Path, scope: _Scope,
                    previous: Any) -> Any:
        uses = scope.uses
        if isinstance(item, dict):  # a template inside a block: evaluate, then validate
            try:
                when = substitute(item.get("when", True), scope.values, ("when",))
                data = substitute({k: v for k, v in item.items() if k != "when"}, scope.values)
            except ExpressionError as exc:
                self.error(f"{_where(path)}: {_key(exc.path)}{exc}", (*path, *exc.path), uses)
                scope.names[default] = _BROKEN
                return _BROKEN
            if not when:
                # Dropped: its name stands for its first input, so readers rewire to that.
                first = self.resolve(data.get("inputs", [None])[0], scope, later, path, 0) \
                    if data.get("inputs") else previous
                scope.names[data.get("name") or default] = first
                return first
            try:
                layer = _layer_adapter().validate_python(data)
            except ValidationError as exc:
                from cnncompile.language.validate import translate

                kind = data.get("type") if isinstance(data.get("type"), str) else ""
                subject = f"{_where(path)}{f' {kind}' if kind else ''} '{scope.prefix}{data.get('name') or default}': "
                self.problems.extend(translate(exc, data, self.source, at=path, subject=subject,
                                               notes=_expansion_notes(uses, self.source)))
                scope.names[data.get("name") or default] = _BROKEN
                return _BROKEN
        else:
            layer = item
        local = layer.name or default
        name = scope.prefix + local
        if layer.inputs:
            label = f"{_where(path)} {layer.type} '{name}'"
            inputs = [self.resolve(ref, scope, later, path, i, own=local, label=label)
                      for i, ref in enumerate(layer.inputs)]
        else:
            inputs = [previous]
        scope.names[local] = name
        if any(i is _BROKEN or i is None for i in inputs):
            scope.names[local] = _BROKEN
            return _BROKEN
        node = Node(name, layer, tuple(inputs), path, uses)
        self.add(node, path)
        return name

    def add(self, node: Node, path: Path) -> None:
        if node.name == MODEL_INPUT:
            self.error(f"{node.label}: the name '{MODEL_INPUT}' is reserved for the model input; "
                       "choose another", (*path, "name"), node.uses)
        elif node.name in self.defined:
            first = self.source.value(self.defined[node.name])
            also = _where(self.defined[node.name]) + (f" at line {first.line}" if first else "")
            self.error(f"{node.label}: duplicate layer name '{node.name}' (also {also})", (*path, "name"),
                       node.uses)
        self.defined.setdefault(node.name, path)
        self._check_arity(node)
        self.nodes.append(node)

    def resolve(self, ref: Any, scope: _Scope, later: list, path: Path, position: int,
                own: str | None = None, label: str | None = None) -> Any:
        """The full name a reference in `inputs` stands for; None after reporting why not."""
        label = label or _where(path)
        if not scope.prefix and ref == MODEL_INPUT:
            return MODEL_INPUT
        if ref in scope.names:
            return scope.names[ref]
        if ref == own or ref in later:
            if ref == own:
                where = "itself"
            else:
                at = (*path[:-1], path[-1] + 1 + later.index(ref))
                mark = self.source.value(at)
                where = f"'{ref}', which is defined later ({_where(at)}{f' at line {mark.line}' if mark else ''})"
            self.error(f"{label}: inputs: cannot read {where}; a layer reads only "
                       f"{'the model input' if not scope.prefix else 'the block inputs'} and layers listed "
                       "before it, so the graph has no cycles: move it below its inputs",
                       (*path, "inputs", position), scope.uses)
            return None
        visible = [name for name, full in scope.names.items() if full is not _BROKEN]
        self.error(f"{label}: inputs: no layer named '{ref}' is defined before this one"
                   f"{did_you_mean(str(ref), [MODEL_INPUT, *visible] if not scope.prefix else visible)}",
                   (*path, "inputs", position), scope.uses)
        return None

    # --- block uses ------------------------------------------------------------------

    def expand_use(self, item: Any, path: Path, scope: _Scope, previous: Any) -> Any:
        uses = scope.uses
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label = f"{_where(path)} '{item['name']}'"
        elif isinstance(item, BlockUse) and item.name:
            label = f"{_where(path)} '{item.name}'"
        else:
            label = _where(path)
        if isinstance(item, dict):
            try:
                use = BlockUse.model_validate(item)
            except ValidationError as exc:
                from cnncompile.language.validate import translate

                self.problems.extend(translate(exc, item, self.source, at=path, subject=f"{label}: ",
                                               notes=_expansion_notes(uses, self.source)))
                return _BROKEN
        else:
            use = item
        block = self.blocks.get(use.block)
        if block is None:
            self.error(f"{label}: unknown block '{use.block}'"
                       f"{did_you_mean(use.block, self.blocks) or '; define it under blocks:'}",
                       (*path, "block"), uses)
            return _BROKEN
        chain = [u.block for u in uses]
        if use.block in chain:
            cycle = " -> ".join([*chain[chain.index(use.block):], use.block])
            self.error(f"{label}: block '{use.block}' uses itself ({cycle}); blocks cannot be "
                       "recursive", (*path, "block"), uses)
            return _BROKEN
        try:
            repeat = substitute(use.repeat, scope.values, ("repeat",))
        except ExpressionError as exc:
            self.error(f"{label}: repeat: {exc}", (*path, "repeat"), uses)
            return _BROKEN
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            self.error(f"{label}: repeat: expected an integer >= 1, received {repeat!r}",
                       (*path, "repeat"), uses)
            return _BROKEN
        unknown = [key for key in use.arguments if key not in block.params]
        for key in unknown:
            self.error(f"{label}: block '{use.block}' has no parameter '{key}'"
                       f"{did_you_mean(key, block.params) or '; its parameters: ' + (', '.join(block.params) or 'none')}",
                       (*path, key), uses)
        missing = [key for key, default in block.params.items() if default is None and key not in use.arguments]
        if missing:
            self.error(f"{label}: block '{use.block}' needs {', '.join(missing)} (no default)",
                       path, uses)
        reserved = [key for key in block.params if key in RESERVED]
        if unknown or missing or reserved:
            return _BROKEN
        number = 0
        if use.name is None:
            number = scope.used_blocks.get(use.block, 0)
            scope.used_blocks[use.block] = number + 1
        operands_written = use.inputs
        for index in range(1, repeat + 1):
            values = {**scope.values, "index": index}
            try:
                when = substitute(use.when, values, ("when",))
                arguments = substitute(use.arguments, values)
                instance = self.instance_name(use, index, repeat, values, number)
            except ExpressionError as exc:
                self.error(f"{label}: {_key(exc.path)}{exc}", (*path, *exc.path), uses)
                return _BROKEN
            if operands_written and index == 1:
                operands = [self.resolve(ref, scope, [], path, i, label=label)
                            for i, ref in enumerate(operands_written)]
            elif operands_written:
                operands = [previous, *operands[1:]]
            else:
                operands = [previous]
            if not when:
                previous = operands[0]
                scope.names[instance] = previous
                continue
            if len(operands) != len(block.inputs):
                self.error(f"{label}: block '{use.block}' reads {len(block.inputs)} input"
                           f"{'s' if len(block.inputs) != 1 else ''} ({', '.join(block.inputs)}); "
                           f"received {len(operands)}", (*path, "inputs"), uses)
                return _BROKEN
            full = scope.prefix + instance
            # A broken operand (its error is reported) still lets the block's own problems surface.
            child = _Scope(("blocks", use.block, "layers"), full + "_",
                           {name: _BROKEN if o is None else o for name, o in zip(block.inputs, operands)},
                           {**block.params, **arguments, "index": index}, (*uses, Use(use.block, full, path, use.trainable)))
            before = len(self.nodes)
            previous = self.expand(block.layers, child, operands[0])
            scope.names[instance] = previous
            if not scope.prefix:  # at the top level every expanded name is visible
                for node in self.nodes[before:]:
                    scope.names.setdefault(node.name, node.name)
        if use.name and repeat > 1 and "${" not in use.name:
            scope.names[use.name] = previous  # the whole chain's output
        return previous

    @staticmethod
    def instance_name(use: BlockUse, index: int, repeat: int, values: dict, number: int) -> str:
        if use.name is None:
            base = use.block if number == 0 else f"{use.block}_{number}"
            return base if repeat == 1 else f"{base}_{index}"
        name = str(substitute(use.name, values, ("name",)))
        return f"{name}_{index}" if repeat > 1 and "${" not in use.name else name

    def _check_arity(self, node: Node) -> None:
        layer = type(node.layer)
        count = len(node.inputs)
        if count >= layer.min_inputs and (layer.max_inputs is None or count <= layer.max_inputs):
            return
        if layer.max_inputs == 1:
            expected, hint = "reads exactly one input", "; merge them first with Add or Concatenate"
        elif layer.max_inputs == layer.min_inputs:
            expected, hint = f"takes exactly {layer.min_inputs} inputs", ""
        else:
            expected, hint = f"takes at least {layer.min_inputs} inputs", ""
        self.error(f"{node.label}: {node.layer.type} {expected}, received {count}{hint}",
                   (*node.path, "inputs"), node.uses)


def _is_use(item: Any) -> bool:
    return isinstance(item, BlockUse) or (isinstance(item, dict) and "block" in item)


def _kind_and_name(item: Any) -> tuple[str, str | None]:
    """(type, own name) of a layer or a layer template, for default naming."""
    if isinstance(item, LayerSpec):
        return item.type, item.name
    kind, name = item.get("type"), item.get("name")
    return (kind if isinstance(kind, str) else "layer",
            name if isinstance(name, str) and "${" not in name else None)


def _key(path: Path) -> str:
    return f"{_where(path)}: " if path else ""


def first_of_each(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """A mistake inside a block is made once however often the block is used: report it once,
    with the notes of its first expansion."""
    seen: dict[tuple, Diagnostic] = {}
    for diagnostic in diagnostics:
        seen.setdefault((diagnostic.severity, diagnostic.message, diagnostic.mark), diagnostic)
    return list(seen.values())


def resolve(spec: ModelSpec, source: SourceMap | None = None) -> list[Node]:
    """The expanded, wired graph of a spec; SpecError listing every structural problem."""
    expansion = _Expansion(spec, source or SourceMap())
    top = _Scope(("layers",), "", {})
    expansion.expand(spec.layers, top, MODEL_INPUT)
    if expansion.problems:
        raise SpecError(first_of_each(expansion.problems))
    if not expansion.nodes:
        raise SpecError([Diagnostic("error", "layers: every layer was dropped by `when`; the model is empty",
                                    expansion.source.value(("layers",)))])
    return expansion.nodes
