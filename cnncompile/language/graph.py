"""The spec's layers as a graph: blocks expanded, every layer named and wired.

A layer reads the layers named in its `inputs`, or else the layer listed before it (the
first reads the model input, called `input`). A name may only refer to a layer listed
*earlier*, so the listing order is a topological order and a cycle cannot be written.
The model's output is the last layer listed.

A block use (`{block: NAME, ...}`) is replaced by the block's layers, their `${...}`
expressions evaluated with the use's parameters, their names prefixed with the use's
(`conv2_block1` + `1_conv`), their references resolved inside the block. A layer whose
`when:` is false is dropped and its name stands for its first input. The size a use would
reach is counted before it is expanded (MAX_LAYERS), so work is bounded for any input.

Every problem is collected, then all are reported at once: unknown names (did you mean),
names used before they are defined, duplicates, the reserved `input`, the number of
inputs a layer takes, unknown blocks and parameters, recursion, bad expressions, and
invalid layers inside blocks (at the line in the block, with a note at each use). A part
with a problem (or one that failed validation: `Broken`) keeps its name, standing for an
unknown output; what reads it is skipped without another error, and everything else is
still wired (error recovery). Shapes are inference's business; this stage is pure structure.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from cnncompile.language.blocks import Block, BlockUse
from cnncompile.language.diagnostics import (
    Diagnostic,
    Path,
    SourceMap,
    SpecError,
    Vocabulary,
    did_you_mean,
    show,
)
from cnncompile.language.expressions import ExpressionError, substitute, text_of
from cnncompile.language.layers import (
    LAYER_NAMES,
    MAX_NAME_LENGTH,
    MODEL_INPUT,
    NAME_PATTERN,
    Layer,
    LayerSpec,
    snake_case,
)

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
    """"in expansion of block" notes, innermost use first, as a C compiler prints them; past
    MAX_NOTES, the innermost few and the outermost, with one note for those between."""
    notes = [Diagnostic("note", f"in expansion of block '{use.block}' as '{_short(use.instance)}'",
                        source.value(use.path)) for use in reversed(uses)]
    if len(notes) > MAX_NOTES:
        hidden = len(notes) - MAX_NOTES + 1
        notes = [*notes[:MAX_NOTES - 2], Diagnostic("note", f"... {hidden} more nested uses ..."), notes[-1]]
    return tuple(notes)


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

MAX_LAYERS = 100_000
"""Layers a spec may expand to. The size a use would reach is computed before it is expanded
(count first), so 2**40 nested layers are refused at once, not after the memory is gone."""

MAX_DEPTH = 64
"""Block uses nested inside each other (the zoo's deepest is 3); deeper is refused, located."""

MAX_NOTES = 6
""""in expansion" notes per diagnostic; deeper nesting is summarised in one note."""


@dataclass(frozen=True)
class Broken:
    """A layer, block use or block that failed validation, its errors already reported.

    It keeps its place so its name stays defined: what reads it is skipped, never reported
    again (an error once, at its cause), and everything else is still wired and inferred."""

    raw: Any

    @property
    def is_use(self) -> bool:
        return isinstance(self.raw, dict) and "block" in self.raw


class _TooLarge(Exception):
    """The expansion passed MAX_LAYERS: stop at once (the sizes counted first missed it only
    when a `repeat` is an expression inside a block)."""

    def __init__(self, path: Path, uses: tuple[Use, ...]):
        super().__init__(path)
        self.path, self.uses = path, uses


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
    produced: set[str] = field(default_factory=set)  # full names of the outputs made in this scope
    broken_prefixes: set[str] = field(default_factory=set)  # of uses that failed: names under them are unknown


@dataclass(frozen=True)
class _Listing:
    """One list of layers as written: each item's name (None for a use) and where each name
    is first written, so "defined later" is one lookup, not a copy of the rest of the list."""

    names: list[str | None]
    position: dict[str, int]

    @classmethod
    def of(cls, items: Sequence[Any], top_level: bool) -> _Listing:
        own = [None if _is_use(item) else _kind_and_name(item) for item in items]
        defaults = iter(default_names([entry for entry in own if entry], {MODEL_INPUT} if top_level else set()))
        names = [None if entry is None else next(defaults) for entry in own]
        position: dict[str, int] = {}
        for index, name in enumerate(names):
            if name is not None:
                position.setdefault(name, index)
        return cls(names, position)

    def later(self, ref: str, index: int) -> int | None:
        """Where `ref` is written when that is after `index`, else None."""
        at = self.position.get(ref)
        return at if at is not None and at > index else None


class _Expansion:
    def __init__(self, spec: ModelSpec, source: SourceMap):
        self.blocks = spec.blocks or {}
        self.source = source
        self.nodes: list[Node] = []
        self.defined: dict[str, tuple[Path, tuple[Use, ...]]] = {}  # every full name: where it is written
        self.problems: list[Diagnostic] = []
        self.sizes: dict[str, int] = {}
        self.unknown: list[tuple[int, str, _Scope, int]] = []  # unknown names: (problem, ref, scope, names then)

    def error(self, message: str, path: Path, uses: Sequence[Use] = (),
              extra: tuple[Diagnostic, ...] = ()) -> None:
        self.problems.append(Diagnostic("error", message, self.source.value(path),
                                        (*extra, *_expansion_notes(uses, self.source))))

    # --- lists of layers -------------------------------------------------------------

    def expand(self, items: Sequence[Any], scope: _Scope, previous: Any) -> Any:
        """Expand `items` in `scope`; returns the full name of the last one's output."""
        listing = _Listing.of(items, top_level=not scope.prefix)
        for index, item in enumerate(items):
            path = (*scope.path, index)
            if isinstance(item, Broken):
                previous = self.set_aside(item, listing.names[index], scope)
            elif listing.names[index] is None:
                previous = self.expand_use(item, path, scope, previous)
            else:
                previous = self.place_layer(item, index, listing, path, scope, previous)
        return previous

    def set_aside(self, item: Broken, default: str | None, scope: _Scope) -> Any:
        """A part that failed validation: its names stand for an unknown output."""
        if not item.is_use:
            scope.names[default] = _BROKEN
            return _BROKEN
        name, block = item.raw.get("name"), item.raw.get("block")
        stem = name.split("${")[0] if isinstance(name, str) else block if isinstance(block, str) else ""
        if stem:
            scope.names[stem] = _BROKEN
            scope.broken_prefixes.add(stem)
        return _BROKEN

    def place_layer(self, item: Any, index: int, listing: _Listing, path: Path, scope: _Scope,
                    previous: Any) -> Any:
        default = listing.names[index]
        if isinstance(item, dict):  # a template inside a block: evaluate, then validate
            layer = self.instantiate(item, index, listing, path, scope, previous)
            if not isinstance(layer, LayerSpec):
                return layer  # dropped (what stands for it) or broken
        else:
            layer = item
        local = layer.name or default
        name = scope.prefix + local
        if layer.inputs:
            label = f"{_where(path)} {layer.type} '{name}'"
            inputs = [self.resolve(ref, scope, index, listing, path, i, own=local, label=label)
                      for i, ref in enumerate(layer.inputs)]
        else:
            inputs = [previous]
        scope.names[local] = name
        node = Node(name, layer, tuple(inputs), path, scope.uses)
        # Its name and how many inputs it takes do not depend on what the inputs are: both are
        # checked even when an input is unknown.
        named, fits = self.claim(node, path), self._arity_fits(node)
        if not (named and fits) or any(i is _BROKEN or i is None for i in inputs):
            scope.names[local] = _BROKEN  # reported: what reads it is not reported again
            return _BROKEN
        if len(self.nodes) >= MAX_LAYERS:
            raise _TooLarge(path, node.uses)
        self.nodes.append(node)
        scope.produced.add(name)
        return name

    def instantiate(self, item: dict, index: int, listing: _Listing, path: Path, scope: _Scope,
                    previous: Any) -> Any:
        """A block's layer template -> a LayerSpec, or what stands for it when `when` drops it."""
        default, uses = listing.names[index], scope.uses
        try:
            when = substitute(item.get("when", True), scope.values, ("when",))
            data = substitute({k: v for k, v in item.items() if k != "when"}, scope.values)
        except ExpressionError as exc:
            self.error(f"{_where(path)}: {_key(exc.path)}{exc}", (*path, *exc.path), uses)
            scope.names[default] = _BROKEN
            return _BROKEN
        own = data.get("name") if isinstance(data.get("name"), str) else default
        kind = data.get("type") if isinstance(data.get("type"), str) else ""
        label = f"{_where(path)}{f' {kind}' if kind else ''} '{scope.prefix}{own}'"
        if not self.is_boolean(when, label, path, uses):
            scope.names[own] = _BROKEN
            return _BROKEN
        if not when:
            stands_for = self.drop(data, index, listing, path, scope, previous, label)
            scope.names[own] = stands_for
            return stands_for
        if kind in self.blocks and kind not in LAYER_NAMES:
            self.error(f"{label}: '{kind}' is a block, not a layer type: write {{block: {kind}, ...}}",
                       (*path, "type"), uses)
            scope.names[own] = _BROKEN
            return _BROKEN
        try:
            return _layer_adapter().validate_python(data)
        except ValidationError as exc:
            from cnncompile.language.validate import translate

            self.problems.extend(translate(exc, data, self.source, at=path, subject=f"{label}: ",
                                           notes=_expansion_notes(uses, self.source)))
            scope.names[own] = _BROKEN
            return _BROKEN

    def is_boolean(self, when: Any, label: str, path: Path, uses: Sequence[Use]) -> bool:
        """`when` must be a boolean once substituted: the text 'no' or 'false' is not false."""
        if isinstance(when, bool):
            return True
        hint = ""
        if isinstance(when, str):
            meant = "false" if when.strip().lower() in _FALSY else "true"
            hint = f"; this is text (YAML 1.2 reads only true and false as booleans): write {meant} unquoted"
        self.error(f"{label}: when: expected true or false, received {show(when)}{hint}", (*path, "when"), uses)
        return False

    def drop(self, data: dict, index: int, listing: _Listing, path: Path, scope: _Scope, previous: Any,
             label: str) -> Any:
        """What a layer dropped by `when: false` stands for: its first input (the layer before
        when it names none). A merge whose first input would bypass the block's own work on
        another input is refused: that reads as the shortcut of a residual written in Keras's
        operand order, and dropping it would silently turn the block into its input."""
        refs = data.get("inputs")
        if refs is None:
            return previous
        if not isinstance(refs, list) or not refs or not all(isinstance(ref, str) for ref in refs):
            self.error(f"{label}: inputs: expected a list of layer names, received {show(refs)}",
                       (*path, "inputs"), scope.uses)
            return _BROKEN
        operands = [self.resolve(ref, scope, index, listing, path, i, label=label) for i, ref in enumerate(refs)]
        if any(operand is None or operand is _BROKEN for operand in operands):
            return _BROKEN
        bypassed = [ref for ref, operand in zip(refs[1:], operands[1:]) if operand in scope.produced]
        if operands[0] not in scope.produced and bypassed:
            order = ", ".join([bypassed[0], *(ref for ref in refs if ref != bypassed[0])])
            self.error(f"{label}: when is false here, and a dropped layer stands for its first input, "
                       f"'{refs[0]}', which would silently bypass '{bypassed[0]}' computed in this block; "
                       f"list first the input that should stand for it: inputs: [{order}]",
                       (*path, "inputs"), scope.uses)
            return _BROKEN
        return operands[0]

    def claim(self, node: Node, path: Path) -> bool:
        """Claim a layer's name; False (reported) when it is reserved or taken."""
        if node.name == MODEL_INPUT:
            self.error(f"{node.label}: the name '{MODEL_INPUT}' is reserved for the model input; "
                       "choose another", (*path, "name"), node.uses)
            return False
        return self.define(node.name, node, (*path, "name"), node.uses)

    def define(self, name: str, label: str | Node, path: Path, uses: tuple[Use, ...], how: str = "") -> bool:
        """Claim a full name (a layer's, a use's); a second claim is a duplicate-name error at
        the second place, with a note at the first. `label` names the claimant (a node's is
        made only for the message)."""
        first = self.defined.get(name)
        if first is None:
            self.defined[name] = (path, uses)
            return True
        label = label.label if isinstance(label, Node) else label
        mark = self.source.value(first[0])
        also = _where(first[0][:-1] if first[0][-1] == "name" else first[0]) + (f" at line {mark.line}" if mark else "")
        self.error(f"{label}: duplicate name '{_short(name)}'{how} (also {also})", path, uses,
                   (Diagnostic("note", f"'{_short(name)}' is first defined here", mark),))
        return False

    def resolve(self, ref: Any, scope: _Scope, index: int, listing: _Listing, path: Path, position: int,
                own: str | None = None, label: str | None = None) -> Any:
        """The full name a reference in `inputs` stands for (_BROKEN for an unknown output);
        None after reporting why not."""
        label = label or _where(path)
        if not scope.prefix and ref == MODEL_INPUT:
            return MODEL_INPUT
        if ref in scope.names:
            return scope.names[ref]
        if scope.broken_prefixes and any(ref[:end] in scope.broken_prefixes for end in range(1, len(ref) + 1)):
            return _BROKEN  # inside a use that failed: its error is reported
        at = (*path, "inputs", position)
        reads = "the model input" if not scope.prefix else "the block inputs"
        if ref == own:
            self.error(f"{label}: inputs: a layer cannot read itself; name the layers it reads "
                       f"({reads} or layers listed before it), or leave out inputs to read the layer "
                       "listed just before", at, scope.uses)
            return None
        later = listing.later(ref, index)
        if later is not None:
            where = (*path[:-1], later)
            mark = self.source.value(where)
            self.error(f"{label}: inputs: cannot read '{ref}', which is defined later ({_where(where)}"
                       f"{f' at line {mark.line}' if mark else ''}); a layer reads only {reads} and layers "
                       "listed before it, so the graph has no cycles: move it below its inputs", at, scope.uses)
            return None
        # The did-you-mean is added at the end, from one sorted vocabulary per scope (cheap for
        # many typos among many names); it offers only names defined before this reference.
        self.unknown.append((len(self.problems), ref, scope, len(scope.names)))
        self.error(f"{label}: inputs: no layer named '{_short(ref)}' is defined before this one", at, scope.uses)
        return None

    def suggest_names(self) -> None:
        """Complete the unknown-name errors with their did-you-mean."""
        vocabularies: dict[int, Vocabulary] = {}
        for index, ref, scope, known in self.unknown:
            top = not scope.prefix
            if id(scope) not in vocabularies:
                vocabularies[id(scope)] = Vocabulary([MODEL_INPUT, *scope.names] if top else scope.names)
            hint = vocabularies[id(scope)].suggest(ref, known + top)
            if hint:
                problem = self.problems[index]
                self.problems[index] = replace(problem, message=problem.message + hint)

    # --- block uses ------------------------------------------------------------------

    def expand_use(self, item: Any, path: Path, scope: _Scope, previous: Any) -> Any:
        """Replace a use by its instances, each reading the one before."""
        label = _use_label(item, path)
        use = self.validated_use(item, path, label, scope)
        block = self.block_of(use, path, label, scope) if use is not None else None
        if block is None:
            return self.set_aside(Broken(item if isinstance(item, dict) else use.model_dump()), None, scope)
        repeat = self.repeat_of(use, path, label, scope)
        if repeat is None or not self.arguments_fit(use, block, path, label, scope.uses):
            return self.set_aside(Broken({"block": use.block, "name": use.name}), None, scope)
        number = 0
        if use.name is None:
            number = scope.used_blocks.get(use.block, 0)
            scope.used_blocks[use.block] = number + 1
        operands = None
        if use.inputs:
            operands = [self.resolve(ref, scope, -1, _Listing([], {}), path, i, label=label)
                        for i, ref in enumerate(use.inputs)]
            operands = [_BROKEN if operand is None else operand for operand in operands]
        for index in range(1, repeat + 1):
            chained = [previous] if operands is None else [previous if index > 1 else operands[0], *operands[1:]]
            previous = self.instance(use, block, index, repeat, number, chained, path, label, scope)
            if previous is None:
                return self.set_aside(Broken({"block": use.block, "name": use.name}), None, scope)
        chain = use.name and repeat > 1 and "${" not in use.name
        if chain and self.define(scope.prefix + use.name, label, (*path, "name"), scope.uses):
            scope.names[use.name] = previous  # the whole chain's output
        return previous

    def validated_use(self, item: Any, path: Path, label: str, scope: _Scope) -> BlockUse | None:
        if isinstance(item, BlockUse):
            return item
        try:
            return BlockUse.model_validate(item)
        except ValidationError as exc:
            from cnncompile.language.validate import translate

            self.problems.extend(translate(exc, item, self.source, at=path, subject=f"{label}: ",
                                           notes=_expansion_notes(scope.uses, self.source)))
            return None

    def block_of(self, use: BlockUse, path: Path, label: str, scope: _Scope) -> Block | None:
        """The block a use names; None after reporting why not (or silently, when the block
        itself failed validation and is reported at its definition)."""
        block = self.blocks.get(use.block)
        if isinstance(block, Broken):
            return None
        if block is None:
            self.error(f"{label}: unknown block '{use.block}'"
                       f"{did_you_mean(use.block, self.blocks) or '; define it under blocks:'}",
                       (*path, "block"), scope.uses)
            return None
        chain = [u.block for u in scope.uses]
        if use.block in chain:
            cycle = " -> ".join([*chain[chain.index(use.block):], use.block])
            self.error(f"{label}: block '{use.block}' uses itself ({cycle}); blocks cannot be "
                       "recursive", (*path, "block"), scope.uses)
            return None
        if len(scope.uses) >= MAX_DEPTH:
            self.error(f"{label}: block uses are nested {len(scope.uses) + 1} deep, more than {MAX_DEPTH}",
                       (*path, "block"), scope.uses)
            return None
        return block

    def repeat_of(self, use: BlockUse, path: Path, label: str, scope: _Scope) -> int | None:
        """The use's `repeat`, evaluated, checked, and its expanded size counted before any
        layer is made: None after reporting why not."""
        try:
            repeat = substitute(use.repeat, scope.values, ("repeat",))
        except ExpressionError as exc:
            self.error(f"{label}: repeat: {exc}", (*path, "repeat"), scope.uses)
            return None
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            self.error(f"{label}: repeat: expected an integer >= 1, received {show(repeat)}",
                       (*path, "repeat"), scope.uses)
            return None
        each = self.size(use.block)
        if len(self.nodes) + repeat * each > MAX_LAYERS:
            times = f" ({repeat:,} x {each:,})" if repeat > 1 else ""
            self.error(f"{label}: this use of block '{use.block}' would expand to {repeat * each:,} layers"
                       f"{times}; a spec may expand to at most {MAX_LAYERS:,}",
                       (*path, "repeat") if repeat > 1 else path, scope.uses)
            return None
        return repeat

    def size(self, name: str, depth: int = 0) -> int:
        """Layers one instance of block `name` makes at most (every `when` true), counting a
        `repeat` written as an expression as 1: it is counted again once it is evaluated."""
        if name in self.sizes:
            return self.sizes[name]
        self.sizes[name] = 0  # a recursive block is reported by block_of; count it as empty
        block = self.blocks.get(name)
        total = 0
        if isinstance(block, Block) and depth < MAX_DEPTH:
            for item in block.layers:
                if "block" in item:
                    repeat = item.get("repeat", 1)
                    repeat = repeat if isinstance(repeat, int) and not isinstance(repeat, bool) and repeat > 0 else 1
                    inner = item.get("block")
                    total += repeat * (self.size(inner, depth + 1) if isinstance(inner, str) else 0)
                else:
                    total += 1
        self.sizes[name] = total
        return total

    def arguments_fit(self, use: BlockUse, block: Block, path: Path, label: str, uses: tuple[Use, ...]) -> bool:
        """Every argument is a parameter of the block, and every parameter without a default is given."""
        unknown = [key for key in use.arguments if key not in block.params]
        for key in unknown:
            self.error(f"{label}: block '{use.block}' has no parameter '{key}'"
                       f"{did_you_mean(key, block.params) or '; its parameters: ' + (', '.join(block.params) or 'none')}",
                       (*path, key), uses)
        missing = [key for key, default in block.params.items() if default is None and key not in use.arguments]
        if missing:
            self.error(f"{label}: block '{use.block}' needs {', '.join(missing)} (no default)", path, uses)
        return not unknown and not missing

    def instance(self, use: BlockUse, block: Block, index: int, repeat: int, number: int, operands: list,
                 path: Path, label: str, scope: _Scope) -> Any:
        """Expand one instance of a use; its output's full name (or what stands for it when
        `when` drops it, or _BROKEN); None when the use itself is wrong (reported)."""
        values = {**scope.values, "index": index}
        try:
            when = substitute(use.when, values, ("when",))
            arguments = substitute(use.arguments, values)
            instance, automatic = self.instance_name(use, index, repeat, values, number)
        except ExpressionError as exc:
            self.error(f"{label}: {_key(exc.path)}{exc}", (*path, *exc.path), scope.uses)
            return None
        if not self.is_boolean(when, label, path, scope.uses):
            return None
        at = (*path, "name") if use.name is not None else path
        if not NAME_PATTERN.fullmatch(instance) or len(instance) > MAX_NAME_LENGTH:
            self.error(f"{label}: name: {show(instance)} is not a valid name (letters, digits, '_', '.', '-'; "
                       f"no leading '.' or '-'; at most {MAX_NAME_LENGTH} characters)", at, scope.uses)
            return None
        full = scope.prefix + instance
        how = f" (the automatic name of this use of block '{use.block}'; give the use a name:)" if automatic else ""
        if not self.define(full, label, at, scope.uses, how):
            return None
        if not when:
            scope.names[instance] = operands[0]
            return operands[0]
        if len(operands) != len(block.inputs):
            self.error(f"{label}: block '{use.block}' reads {len(block.inputs)} input"
                       f"{'s' if len(block.inputs) != 1 else ''} ({', '.join(block.inputs)}); "
                       f"received {len(operands)}", (*path, "inputs"), scope.uses)
            return None
        child = _Scope(("blocks", use.block, "layers"), full + "_", dict(zip(block.inputs, operands)),
                       {**block.params, **arguments, "index": index}, (*scope.uses, Use(use.block, full, path, use.trainable)))
        before = len(self.nodes)
        output = self.expand(block.layers, child, operands[0])
        scope.names[instance] = output
        if output is not _BROKEN:
            scope.produced.add(output)
        if not scope.prefix:  # at the top level every expanded name is visible
            for node in self.nodes[before:]:
                scope.names.setdefault(node.name, node.name)
        return output

    @staticmethod
    def instance_name(use: BlockUse, index: int, repeat: int, values: dict, number: int) -> tuple[str, bool]:
        """The instance's name, and whether it was made up (the use has no `name`)."""
        if use.name is None:
            base = use.block if number == 0 else f"{use.block}_{number}"
            return (base if repeat == 1 else f"{base}_{index}"), True
        name = text_of(substitute(use.name, values, ("name",)))
        return (f"{name}_{index}" if repeat > 1 and "${" not in use.name else name), False

    def _arity_fits(self, node: Node) -> bool:
        layer = type(node.layer)
        count = len(node.inputs)
        if count >= layer.min_inputs and (layer.max_inputs is None or count <= layer.max_inputs):
            return True
        if layer.max_inputs == 1:
            expected, hint = "reads exactly one input", "; merge them first with Add or Concatenate"
        elif layer.max_inputs == layer.min_inputs:
            expected, hint = f"takes exactly {layer.min_inputs} inputs", ""
        else:
            expected, hint = f"takes at least {layer.min_inputs} inputs", ""
        self.error(f"{node.label}: {node.layer.type} {expected}, received {count}{hint}",
                   (*node.path, "inputs"), node.uses)
        return False


_FALSY = ("no", "false", "off", "n", "0", "")


def _use_label(item: Any, path: Path) -> str:
    name = item.get("name") if isinstance(item, dict) else getattr(item, "name", None)
    return f"{_where(path)} '{_short(name)}'" if isinstance(name, str) else _where(path)


def _short(name: str, limit: int = 80) -> str:
    """A name for a message: long generated names keep their two ends."""
    return name if len(name) <= limit else f"{name[:limit // 2 - 2]}...{name[-(limit // 2 - 1):]}"


def _is_use(item: Any) -> bool:
    if isinstance(item, Broken):
        return item.is_use
    return isinstance(item, BlockUse) or (isinstance(item, dict) and "block" in item)


def _kind_and_name(item: Any) -> tuple[str, str | None]:
    """(type, own name) of a layer or a layer template, for default naming."""
    if isinstance(item, LayerSpec):
        return item.type, item.name
    raw = item.raw if isinstance(item, Broken) else item
    if not isinstance(raw, dict):
        return "layer", None
    kind, name = raw.get("type"), raw.get("name")
    return (kind if isinstance(kind, str) else "layer",
            name if isinstance(name, str) and "${" not in name else None)


def _key(path: Path) -> str:
    return f"{_where(path)}: " if path else ""


def first_of_each(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """A mistake inside a block is made once however often the block is used: report it once,
    with the notes of its first expansion."""
    seen: dict[tuple, Diagnostic] = {}
    for diagnostic in diagnostics:
        message = diagnostic.message
        if diagnostic.notes:  # inside an expansion: the subject's name differs per use
            message = _QUOTED.sub("''", message, count=1)
        seen.setdefault((diagnostic.severity, message, diagnostic.mark), diagnostic)
    return list(seen.values())


_QUOTED = re.compile(r"'[^']*'")


def wire(spec: ModelSpec, source: SourceMap | None = None) -> tuple[list[Node], list[Diagnostic]]:
    """The expanded, wired graph of a spec, and every structural problem found on the way.

    A layer with a problem is left out and its name stands for an unknown output; what reads
    it is left out too, without another error, so the nodes are all the rest (error recovery:
    inference still checks them)."""
    source = source or SourceMap()
    expansion = _Expansion(spec, source)
    try:
        expansion.expand(spec.layers, _Scope(("layers",), "", {}), MODEL_INPUT)
    except _TooLarge as exc:
        expansion.error(f"{_where(exc.path)}: the spec expands to more than {MAX_LAYERS:,} layers; "
                        "expansion stopped here", exc.path, exc.uses)
        expansion.nodes = []
    expansion.suggest_names()
    return expansion.nodes, first_of_each(expansion.problems)


def nothing_left(source: SourceMap) -> Diagnostic:
    """Every layer was dropped (and nothing else is wrong)."""
    return Diagnostic("error", "layers: every layer was dropped by `when`; the model is empty",
                      source.value(("layers",)))


def resolve(spec: ModelSpec, source: SourceMap | None = None) -> list[Node]:
    """The expanded, wired graph of a spec; SpecError listing every structural problem."""
    nodes, problems = wire(spec, source)
    if not nodes and not problems:
        problems = [nothing_left(source or SourceMap())]
    if problems:
        raise SpecError(problems)
    return nodes
