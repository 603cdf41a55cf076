"""The editor's questions answered from a Document, as LSP types.

Diagnostics are `check`'s, range for range; hover, inlay hints and shapes come from the
last version that compiled; definition, outline and completion scopes from the last that
parsed; completion reads the current line itself, because while a value is being typed the
YAML around it rarely parses. Lines and columns: LSP's are 0-based, the spec's 1-based; a
column the editor sends or receives counts the code units it negotiated (UTF-16 by default),
ours count characters, and `units` (pygls's codec) converts between them.
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

from lsprotocol import types as lsp

from cnncompile.editor.document import (
    TOP,
    Document,
    Snapshot,
    Spot,
    item_list,
    layer_item,
    scope_before,
)
from cnncompile.language.diagnostics import Diagnostic, Mark, Path, show, value_at

SOURCE = "cnncompile"
_SEVERITY = {"error": lsp.DiagnosticSeverity.Error, "warning": lsp.DiagnosticSeverity.Warning,
             "note": lsp.DiagnosticSeverity.Information}
# "unknown key 'filtrs'; did you mean 'filters'?", "no layer named 'x' is defined before this one;
# did you mean 'y'?": the received word is the last one quoted before diagnostics.did_you_mean's hint.
_DID_YOU_MEAN = re.compile(r"'([^']+)'[^';]*; did you mean '([^']+)'\?")
Units = Callable[[str], int]  # a text's length in the editor's code units
_HOVER_ROWS = 40  # a block use of a big cell expands to dozens of layers: show the first ones


# --- diagnostics ---------------------------------------------------------------------------

def diagnostics(snapshot: Snapshot, uri: str, units: Units = len) -> list[lsp.Diagnostic]:
    """`check`'s diagnostics: same message and start; the range spans the token there."""
    return [_diagnostic(d, snapshot.lines, uri, units) for d in snapshot.diagnostics]


def _diagnostic(diagnostic: Diagnostic, lines: list[str], uri: str, units: Units) -> lsp.Diagnostic:
    related = [lsp.DiagnosticRelatedInformation(lsp.Location(uri, token_range(lines, note.mark, units)), note.message)
               for note in diagnostic.notes if note.mark is not None]
    return lsp.Diagnostic(range=token_range(lines, diagnostic.mark, units), message=diagnostic.message,
                          severity=_SEVERITY[diagnostic.severity], source=SOURCE,
                          related_information=related or None)


_TOKEN = re.compile(r"[^\s,\[\]{}#:]+")


def token_range(lines: list[str], mark: Mark | None, units: Units = len) -> lsp.Range:
    """The range of the key, scalar or opening bracket that starts at `mark`."""
    if mark is None:
        return lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
    line, start = mark.line - 1, mark.column - 1
    text = lines[line] if 0 <= line < len(lines) else ""
    rest = text[start:]
    if rest[:1] in ("'", '"'):
        close = rest.find(rest[0], 1)
        length = close + 1 if close > 0 else len(rest)
    elif rest[:1] in ("{", "["):
        length = _bracketed(rest)
    else:
        match = _TOKEN.match(rest)
        length = match.end() if match else min(1, len(rest))
    return lsp.Range(position(lines, line, start, units), position(lines, line, start + length, units))


def _bracketed(text: str) -> int:
    """Length of the flow collection opening `text`, up to its closing bracket on this line
    (a whole layer written `{type: ...}`), else to the end of the line."""
    depth = 0
    for index, char in enumerate(text):
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        if depth == 0:
            return index + 1
    return len(text.rstrip())


def position(lines: list[str], line: int, index: int, units: Units) -> lsp.Position:
    """The editor's position of a 0-based line and character index."""
    text = lines[line] if 0 <= line < len(lines) else ""
    return lsp.Position(line, units(text[:index]))


def column(lines: list[str], line: int, character: int, units: Units) -> int:
    """The character index of an editor's position (the inverse of `position`)."""
    text = lines[line] if 0 <= line < len(lines) else ""
    count = 0
    for index, char in enumerate(text):
        if count >= character:
            return index
        count += units(char)
    return len(text)


def _here(document: Document, line: int, character: int) -> int:
    """The character column of the editor's cursor, in the current text."""
    return column(document.lines, line, character, document.units)


# --- hover ---------------------------------------------------------------------------------

def hover(document: Document, line: int, character: int) -> lsp.Hover | None:
    """A key: its documentation and default. A layer: its shape, parameters, MACs and inputs;
    a block use: the layers it expands to; a layer inside a block: each instance."""
    character = _here(document, line, character)
    parsed = document.parsed
    spot = _spot(document, parsed, line, character)
    if spot is not None and spot.on_key:
        text = _key_doc(parsed.raw, spot.path)
        if text:
            return _markdown(text)
    good = document.good
    spot = _spot(document, good, line, character)
    if spot is None:
        return None
    item = layer_item(spot.path)
    if item is None:
        return None
    text = _layer_doc(good, item)
    return _markdown(text) if text else None


def _spot(document: Document, snapshot: Snapshot | None, line: int, character: int) -> Spot | None:
    """What the cursor points at in `snapshot`, if its line is unchanged since that version."""
    then = document.unchanged_lines(snapshot).get(line) if snapshot is not None else None
    return snapshot.locator.at(then + 1, character + 1) if then is not None else None


def _markdown(text: str) -> lsp.Hover:
    return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, text))


def _key_doc(raw: Any, path: Path) -> str | None:
    """The documentation of the key at `path`, from the class that defines it."""
    from cnncompile.language.reference import default_text

    owner = _owner(raw, path[:-1])
    key = path[-1]
    if isinstance(owner, dict):  # a block use: the block's parameters, then BlockUse's fields
        if key in owner:
            default = "required" if owner[key] is None else f"default `{show(owner[key])}`"
            return f"**{key}**: a parameter of this block ({default})"
        from cnncompile.language.blocks import BlockUse

        owner = BlockUse
    if owner is None or key not in owner.model_fields:
        return None
    field = owner.model_fields[key]
    doc = (field.description or "").strip()
    if key == "type":
        doc = inspect.cleandoc(owner.__doc__ or "")
    return f"**{key}** ({owner.__name__}): {doc}\n\ndefault: {default_text(field)}"


def _owner(raw: Any, path: Path) -> Any:
    """The class whose fields the mapping at `path` holds (a block use's parameters: a dict)."""
    from cnncompile.language.blocks import BlockUse
    from cnncompile.language.model import Input, ModelSpec
    from cnncompile.language.training import Training

    fixed = {(): ModelSpec, ("input",): Input, ("training",): Training}
    if path in fixed:
        return fixed[path]
    if layer_item(path) != path:
        return None
    entry = value_at(raw, path)
    if not isinstance(entry, dict):
        return None
    if "block" in entry:
        params = value_at(raw, ("blocks", entry["block"], "params"))
        return params if isinstance(params, dict) else BlockUse
    return _layer_classes().get(entry.get("type"))


@functools.cache
def _layer_classes() -> dict[str, type]:
    from cnncompile.language.layers import LAYER_NAMES, LAYER_TYPES

    return dict(zip(LAYER_NAMES, LAYER_TYPES))


def _layer_doc(good: Snapshot, item: Path) -> str | None:
    from cnncompile.language.shapes import fmt

    compiled = good.compiled
    infos = {info.name: info for info in compiled.info.layers}
    nodes = compiled.spec.graph()
    own = [node for node in nodes if node.path == item]
    if len(own) == 1 and not own[0].uses:
        info = infos[own[0].name]
        reads = ", ".join(f"`{name}`" for name in info.inputs)
        return (f"**{info.type}** `{info.name}` → `{fmt(info.output_shape)}`\n\n"
                f"params {info.params:,} (trainable {info.trainable_params:,}) · MACs {info.macs:,} · reads {reads}")
    if own:  # a layer inside a block: one row per instance
        rows = [f"| {node.name} | `{fmt(infos[node.name].output_shape)}` | {infos[node.name].params:,} |"
                for node in own[:_HOVER_ROWS]]
        return "\n".join([(f"**{own[0].layer.type}** in block `{item[1]}`: {len(own)} "
                           f"instance{'s' if len(own) != 1 else ''}"), "",
                          "| layer | output shape | params |", "| --- | --- | --- |", *rows, *_more(len(own))])
    # A block use: the layers of its first instance (a use inside a block has one per use of that block).
    instances: dict[str, list] = {}
    for node in nodes:
        use = next((use for use in node.uses if use.path == item), None)
        if use is not None:
            instances.setdefault(use.instance, []).append((use, infos[node.name]))
    if not instances:
        return None
    first = next(iter(instances.values()))
    use, expanded = first[0][0], [info for _, info in first]
    rows = [f"| {info.name} | {info.type} | `{fmt(info.output_shape)}` | {info.params:,} |"
            for info in expanded[:_HOVER_ROWS]]
    also = f" (first of {len(instances)} instances)" if len(instances) > 1 else ""
    return "\n".join([(f"**block `{use.block}`** as `{use.instance}`{also} → `{fmt(expanded[-1].output_shape)}`: "
                       f"{len(expanded)} layers, params {sum(i.params for i in expanded):,}, "
                       f"MACs {sum(i.macs for i in expanded):,}"), "",
                      "| layer | type | output shape | params |", "| --- | --- | --- | --- |", *rows,
                      *_more(len(expanded))])


def _more(count: int) -> list[str]:
    return [f"\n… {count - _HOVER_ROWS} more"] if count > _HOVER_ROWS else []


# --- completion ----------------------------------------------------------------------------

def completion(document: Document, line: int, character: int) -> list[lsp.CompletionItem]:
    """What may be written at the cursor, read from the text of the current line and item."""
    lines = document.lines
    if not 0 <= line < len(lines):
        return []
    character = _here(document, line, character)
    prefix = lines[line][:character]
    if re.search(r"\btype:\s*['\"]?\w*$", prefix):
        return _layer_types()
    if re.search(r"\bblock:\s*['\"]?\w*$", prefix):
        return _block_names(document)
    if re.search(r"\binputs:\s*\[[^\]]*$", prefix) or _in_block_style_inputs(lines, line, prefix):
        return _readable_names(document, line, character)
    start = _item_start(lines, line)
    item_text = "\n".join(lines[start:line + 1]) if start is not None else lines[line]
    value = re.search(r"\b(\w+):\s*['\"]?[\w.]*$", prefix)
    if value:
        return _values(value.group(1), item_text)
    if start is not None and re.search(r"(^\s*(-\s+)?|[{,]\s*)\w*$", prefix):
        return _keys(document, item_text)
    return []


def _item_start(lines: list[str], line: int) -> int | None:
    """The line where the list item holding `line` begins (`- {type: ...` or `- type: ...`)."""
    for index in range(line, -1, -1):
        if re.match(r"\s*-\s+(\{|[\w\"']+\s*:)", lines[index]):
            return index
        if index < line and re.match(r"\S", lines[index]):  # a top-level key: no item
            return None
    return None


def _in_block_style_inputs(lines: list[str], line: int, prefix: str) -> bool:
    """`inputs:` followed by `- name` lines, the cursor on one of those."""
    match = re.match(r"(\s*)-\s+[\w.\-]*$", prefix)
    if not match:
        return False
    for index in range(line - 1, -1, -1):
        text = lines[index]
        if re.match(rf"{match.group(1)}-\s", text):
            continue
        return bool(re.match(r"\s*(-\s+)?inputs:\s*$", text))
    return False


def _layer_types() -> list[lsp.CompletionItem]:
    return [lsp.CompletionItem(name, kind=lsp.CompletionItemKind.Class, detail=_first_line(cls.__doc__),
                               documentation=_doc(f"{inspect.cleandoc(cls.__doc__ or '')}\n\n`{cls.example}`"))
            for name, cls in _layer_classes().items()]


def _first_line(text: str | None) -> str:
    return inspect.cleandoc(text or "").split("\n", 1)[0]


def _doc(text: str) -> lsp.MarkupContent:
    return lsp.MarkupContent(lsp.MarkupKind.Markdown, text)


def _blocks(document: Document) -> dict:
    blocks = value_at(document.parsed.raw, ("blocks",)) if document.parsed else None
    return blocks if isinstance(blocks, dict) else {}


def _block_names(document: Document) -> list[lsp.CompletionItem]:
    items = []
    for name, block in _blocks(document).items():
        params = block.get("params") if isinstance(block, dict) else None
        shown = ", ".join(f"{k}: {'required' if v is None else show(v)}" for k, v in params.items()) \
            if isinstance(params, dict) else ""
        items.append(lsp.CompletionItem(str(name), kind=lsp.CompletionItemKind.Module,
                                        detail=f"block ({shown})" if shown else "block"))
    return items


def _readable_names(document: Document, line: int, character: int) -> list[lsp.CompletionItem]:
    """The names a layer here may read: those defined before it in its list."""
    parsed = document.parsed
    if parsed is None:
        return []
    item, before = _enclosing_item(document, parsed, line, character)
    names = dict(scope_before(parsed, item_list(item), before))
    if item[0] == "layers":
        names.update(_expanded_names(document, before))
    shapes = _shapes(document)
    return [lsp.CompletionItem(name, kind=lsp.CompletionItemKind.Variable, detail=shapes.get(name)) for name in names]


def _enclosing_item(document: Document, parsed: Snapshot, line: int, character: int) -> tuple[Path, tuple[int, int]]:
    """The item the cursor is in (or, on a line typed since `parsed`, the item above it) and
    the position in `parsed` (1-based) before which a name must be defined to be readable."""
    locator, unchanged = parsed.locator, document.unchanged_lines(parsed)
    if line not in unchanged:  # a new line: everything up to the last unchanged line above is readable
        above = next((unchanged[earlier] for earlier in range(line - 1, -1, -1) if earlier in unchanged), None)
        spot = locator.at(above + 1, 10**9) if above is not None else None
        item = layer_item(spot.path) if spot else None
        return item or (*TOP, 0), ((above + 2, 0) if above is not None else (1, 0))
    spot = locator.at(unchanged[line] + 1, character + 1)
    item = layer_item(spot.path) if spot else None
    if item is None:
        return (*TOP, 0), (unchanged[line] + 1, 0)
    end, start = locator.end(item), locator.start(item)
    inside = end is None or (unchanged[line] + 1, character + 1) < end
    return item, ((start.line, start.column) if inside else (unchanged[line] + 1, 0))


def _expanded_names(document: Document, before: tuple[int, int]) -> dict[str, Path]:
    """Top-level names made by block uses before `before` (from the last compiled version)."""
    good = document.good
    if good is None:
        return {}
    names: dict[str, Path] = {}
    for node in good.compiled.spec.graph():
        if node.uses:
            use = node.uses[0]
            mark = good.source.value(use.path)
            if mark and (mark.line, mark.column) < before:
                names.setdefault(use.instance, use.path)
                names.setdefault(node.name, use.path)
    return names


def _shapes(document: Document) -> dict[str, str]:
    """Every name's output shape in the last compiled version, `input` included."""
    from cnncompile.language.layers import MODEL_INPUT
    from cnncompile.language.shapes import fmt

    if document.good is None:
        return {}
    info = document.good.compiled.info
    return {MODEL_INPUT: fmt(info.input_shape), **{layer.name: fmt(layer.output_shape) for layer in info.layers}}


def _item_keys(item_text: str) -> tuple[str | None, str | None, set[str]]:
    kind = re.search(r"\btype:\s*['\"]?(\w+)", item_text)
    block = re.search(r"\bblock:\s*['\"]?(\w+)", item_text)
    present = set(re.findall(r"([\w]+)\s*:", item_text))
    return kind and kind.group(1), block and block.group(1), present


def _keys(document: Document, item_text: str) -> list[lsp.CompletionItem]:
    """Argument names of the layer (or block use) being written, with defaults and docs."""
    from cnncompile.language.blocks import BlockUse
    from cnncompile.language.reference import default_text

    kind, block, present = _item_keys(item_text)
    items = []
    if block is not None:
        params = value_at(_blocks(document), (block, "params"))
        for name, default in (params.items() if isinstance(params, dict) else []):
            if name not in present:
                items.append(lsp.CompletionItem(
                    name, kind=lsp.CompletionItemKind.Property, insert_text=f"{name}: ",
                    detail="required" if default is None else f"default {show(default)}",
                    documentation=_doc(f"a parameter of block `{block}`")))
        owner: Any = BlockUse
    else:
        owner = _layer_classes().get(kind)
    if owner is None:
        return [lsp.CompletionItem(key, kind=lsp.CompletionItemKind.Property, insert_text=f"{key}: ")
                for key in ("type", "block") if key not in present]
    for name, field in owner.model_fields.items():
        if name in present or name == "type":
            continue
        detail = "required" if field.is_required() else "default " + default_text(field).strip("`")
        items.append(lsp.CompletionItem(name, kind=lsp.CompletionItemKind.Property, insert_text=f"{name}: ",
                                        detail=detail, documentation=_doc(field.description or "")))
    return items


def _values(key: str, item_text: str) -> list[lsp.CompletionItem]:
    """The values an enumerated argument takes (padding, activation, interpolation, ...)."""
    kind, _, _ = _item_keys(item_text)
    classes = _layer_classes()
    owners = [classes[kind]] if kind in classes else list(classes.values())
    for owner in owners:
        field = owner.model_fields.get(key)
        values = _choices(field.annotation) if field is not None else []
        if values:
            return [lsp.CompletionItem(str(v).lower() if isinstance(v, bool) else str(v),
                                       kind=lsp.CompletionItemKind.EnumMember) for v in values]
    return []


def _choices(annotation: Any) -> list[Any]:
    """The values of every Literal inside an annotation (through Optional, unions, Annotated),
    and true/false for a boolean."""
    if annotation is bool:
        return [True, False]
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    if typing.get_origin(annotation) is typing.Annotated:
        return _choices(typing.get_args(annotation)[0])
    return [v for arg in typing.get_args(annotation) for v in _choices(arg)]


# --- definition ----------------------------------------------------------------------------

def definition(document: Document, uri: str, line: int, character: int) -> lsp.Location | None:
    """An `inputs:` name -> the layer it names (in a block, the block's layer or input);
    a `block:` name -> the block."""
    parsed = document.parsed
    if parsed is None:
        return None
    spot = _spot(document, parsed, line, _here(document, line, character))
    if spot is None or spot.on_key:
        return None
    path = spot.path
    item = layer_item(path)
    value = value_at(parsed.raw, path)
    if item is None or not isinstance(value, str):
        return None
    target: Path | None = None
    if path == (*item, "block"):
        target = ("blocks", value) if value in _blocks(document) else None
    elif path[len(item):len(item) + 1] == ("inputs",):
        start = parsed.locator.start(item)
        names = scope_before(parsed, item_list(item), (start.line, start.column))
        if item[0] == "layers":
            names = {**_expanded_names(document, (start.line, start.column)), **names}
        target = names.get(value)
    if target is None:
        return None
    mark = parsed.locator.start(target)
    now = {then: now for now, then in document.unchanged_lines(parsed).items()}.get(mark.line - 1)
    if now is None:  # the line it is on has changed since
        return None
    return lsp.Location(uri, token_range(document.lines, Mark(now + 1, mark.column), document.units))


# --- outline -------------------------------------------------------------------------------

def symbols(document: Document) -> list[lsp.DocumentSymbol]:
    """Blocks (with their layers) and the model's layers, each with its type and shape."""
    parsed = document.parsed
    if parsed is None:
        return []
    out = []
    for name, block in _blocks(document).items():
        path = ("blocks", name)
        layers = value_at(block, ("layers",))
        children = _layer_symbols(document, (*path, "layers"), layers) if isinstance(layers, list) else []
        out.append(_symbol(parsed, path, str(name), "block", lsp.SymbolKind.Module, children, document.units))
    layers = value_at(parsed.raw, TOP)
    if isinstance(layers, list):
        out.extend(_layer_symbols(document, TOP, layers))
    if parsed.text == document.text:
        return out
    now = {then: now for now, then in document.unchanged_lines(parsed).items()}
    return _follow(out, now)


def _follow(symbols: list[lsp.DocumentSymbol], now: dict[int, int]) -> list[lsp.DocumentSymbol]:
    """Symbols of an earlier version moved to the lines they are on now (unchanged lines keep
    their columns); one whose first line has changed is left out."""
    kept = []
    for symbol in symbols:
        line = now.get(symbol.range.start.line)
        if line is None:
            continue
        selection = symbol.selection_range
        end = now.get(symbol.range.end.line)
        kept.append(lsp.DocumentSymbol(
            name=symbol.name, detail=symbol.detail, kind=symbol.kind,
            range=lsp.Range(lsp.Position(line, symbol.range.start.character),
                            lsp.Position(end, symbol.range.end.character) if end is not None and end >= line
                            else lsp.Position(line, selection.end.character)),
            selection_range=lsp.Range(lsp.Position(line, selection.start.character),
                                      lsp.Position(line, selection.end.character)),
            children=_follow(symbol.children or [], now) or None))
    return kept


def _layer_symbols(document: Document, at: Path, layers: list) -> list[lsp.DocumentSymbol]:
    parsed = document.parsed
    names = {path: name for name, path in scope_before(parsed, at, (10**9, 0)).items()}
    shapes = _shapes(document) if at == TOP else {}  # inside a block a layer has one shape per use
    out = []
    for index, entry in enumerate(layers):
        path = (*at, index)
        if not isinstance(entry, dict):
            continue
        if "block" in entry:
            name, detail, kind = str(entry.get("name") or entry["block"]), f"block {entry['block']}", \
                lsp.SymbolKind.Module
        else:
            name, detail, kind = names.get(path, "?"), str(entry.get("type")), lsp.SymbolKind.Class
            detail += f" → {shapes[name]}" if name in shapes else ""
        out.append(_symbol(parsed, path, name, detail, kind, [], document.units))
    return out


def _symbol(parsed: Snapshot, path: Path, name: str, detail: str, kind: lsp.SymbolKind,
            children: list[lsp.DocumentSymbol], units: Units) -> lsp.DocumentSymbol:
    start = parsed.locator.start(path)
    selection = token_range(parsed.lines, start, units)
    end = _end_of(parsed, path, selection.end, units)
    return lsp.DocumentSymbol(name=name, detail=detail, kind=kind, range=lsp.Range(selection.start, end),
                              selection_range=selection, children=children or None)


def _end_of(parsed: Snapshot, path: Path, at_least: lsp.Position, units: Units) -> lsp.Position:
    """The end of the last written line of `path`: before the next node outside it."""
    following = parsed.locator.end(path)
    lines = parsed.lines
    start = parsed.locator.start(path)
    if following is not None and following[0] == start.line:
        end = position(lines, start.line - 1, following[1] - 1, units)
        return end if end.character >= at_least.character else at_least
    last = (following[0] - 1 if following else len(lines)) - 1  # 0-based, the line before
    while last > start.line - 1 and not lines[last].split("#", 1)[0].strip():
        last -= 1
    end = lsp.Position(last, units(lines[last]))
    return end if (end.line, end.character) >= (at_least.line, at_least.character) else at_least


# --- inlay hints ---------------------------------------------------------------------------

def inlay_hints(document: Document, first: int, last: int) -> list[lsp.InlayHint]:
    """Each top-level layer's output shape at the end of its line (a block use: its output's)."""
    from cnncompile.language.shapes import fmt

    good, lines = document.good, document.lines
    if good is None:
        return []
    infos = {info.name: info for info in good.compiled.info.layers}
    shapes: dict[Path, Any] = {}
    for node in good.compiled.spec.graph():
        shapes[node.uses[0].path if node.uses else node.path] = infos[node.name].output_shape  # the last wins
    now = {then: now for now, then in document.unchanged_lines(good).items()}
    hints = []
    for path, shape in shapes.items():
        mark = good.source.value(path)
        line = now.get(mark.line - 1, -1) if mark else -1  # -1: its line has changed since
        if first <= line <= last:
            end = position(lines, line, len(lines[line].rstrip()), document.units)
            hints.append(lsp.InlayHint(end, fmt(shape),
                                       kind=lsp.InlayHintKind.Type, padding_left=True))
    return hints


# --- code actions --------------------------------------------------------------------------

def code_actions(document: Document, uri: str, diagnostics_here: list[lsp.Diagnostic]) -> list[lsp.CodeAction]:
    """Apply a did-you-mean: replace the received word (quoted last before the hint) with the
    suggestion, where it is written on the diagnostic's line."""
    lines = document.lines
    actions = []
    for diagnostic in diagnostics_here:
        match = _DID_YOU_MEAN.search(diagnostic.message)
        start = diagnostic.range.start
        if not match or start.line >= len(lines):
            continue
        received, suggestion = match.groups()
        text, since = lines[start.line], column(lines, start.line, start.character, document.units)
        # After the diagnostic's start (a value), else the nearest before it (the key of a value).
        at = text.find(received, since)
        at = at if at >= 0 else text.rfind(received, 0, since)
        if at < 0:
            continue
        where = lsp.Range(position(lines, start.line, at, document.units),
                          position(lines, start.line, at + len(received), document.units))
        edit = lsp.WorkspaceEdit(changes={uri: [lsp.TextEdit(where, suggestion)]})
        actions.append(lsp.CodeAction(f"Replace '{received}' with '{suggestion}'", kind=lsp.CodeActionKind.QuickFix,
                                      diagnostics=[diagnostic], edit=edit, is_preferred=True))
    return actions
