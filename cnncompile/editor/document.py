"""One open spec: every version analysed as `check` would, and what a cursor points at.

A document being typed is invalid most of the time (half a key, an unclosed bracket), so
a Document keeps, beside the current text, three analyses: the latest (its diagnostics are
what the editor shows), the last that parsed as YAML (its tree and positions drive
definition, outline and the scope of completions) and the last that compiled (its shapes
drive hover and inlay hints).
"""

from __future__ import annotations

import bisect
import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

from cnncompile.language.diagnostics import (
    Diagnostic,
    Mark,
    Path,
    SourceMap,
    SpecError,
    value_at,
)

# A layer item: ('layers', i) at the top level, ('blocks', NAME, 'layers', i) inside a block.
TOP = ("layers",)


@dataclass(frozen=True)
class Snapshot:
    """The analysis of one version of the text."""

    text: str
    diagnostics: tuple[Diagnostic, ...]
    raw: Any = None  # the loaded YAML tree, when the text parsed
    source: SourceMap | None = None
    compiled: Any = None  # CompiledSpec, when the spec checked without errors

    @functools.cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @functools.cached_property
    def locator(self) -> Locator:
        return Locator(self.source or SourceMap())


def analyse(text: str, path: FilePath) -> Snapshot:
    """Everything `check` reports for `text`: its errors, or its warnings and numbers."""
    from cnncompile.analysis.check import compile_tree
    from cnncompile.language.loader import decode, load_yaml

    data = text.encode()
    try:
        raw, source = load_yaml(decode(data))
    except SpecError as exc:
        return Snapshot(text, tuple(exc.diagnostics))
    try:
        compiled = compile_tree(raw, source, data, path)
        if compiled.spec.search is not None:  # `check` validates the search space too
            from cnncompile.analysis.space import compile_space

            compile_space(compiled, data)
    except SpecError as exc:
        return Snapshot(text, tuple(exc.diagnostics), raw, source)
    return Snapshot(text, compiled.info.warnings, raw, source, compiled)


class Document:
    """One open file: the editor's current text, and the analyses of the versions before it
    (the latest, the last that parsed, the last that compiled), which lag behind the text
    while an analysis runs."""

    def __init__(self, path: FilePath, units: Callable[[str], int] = len):
        self.path = path
        self.units = units  # a text's length in the editor's position units (UTF-16 code units, usually)
        self.text = ""
        self.latest: Snapshot | None = None
        self.parsed: Snapshot | None = None
        self.good: Snapshot | None = None
        self._unchanged: tuple[tuple[str, str], dict[int, int]] = (("", ""), {})

    @property
    def lines(self) -> list[str]:
        """The current text's lines."""
        return self.text.split("\n")

    def unchanged_lines(self, snapshot: Snapshot) -> dict[int, int]:
        """Current line -> the same line in `snapshot`, for every line unchanged since that
        version (0-based). Typing above a layer shifts it; its hover and hint follow it."""
        key = (snapshot.text, self.text)
        if self._unchanged[0] != key:
            if snapshot.text == self.text:
                mapping = {line: line for line in range(len(self.lines))}
            else:
                matcher = difflib.SequenceMatcher(None, snapshot.lines, self.lines, autojunk=False)
                mapping = {now + k: then + k for then, now, size in matcher.get_matching_blocks() for k in range(size)}
            self._unchanged = (key, mapping)
        return self._unchanged[1]

    def update(self, text: str) -> Snapshot:
        """Analyse `text` (unless it is the latest analysed) and keep the result."""
        if self.latest is not None and self.latest.text == text:
            return self.latest
        snapshot = analyse(text, self.path)
        self.latest = snapshot
        if snapshot.source is not None:
            self.parsed = snapshot
        if snapshot.compiled is not None:
            self.good = snapshot
        return snapshot


@dataclass(frozen=True)
class Spot:
    """What a position points at: the innermost value (or key) that starts at or before it."""

    path: Path
    on_key: bool  # on the key naming `path` rather than on its value


class Locator:
    """Positions -> paths, over a SourceMap that knows only where each key and value starts.

    The YAML is written in order, so the node that started last before the cursor holds it
    (or the cursor sits after it, before the next one); a node ends where the next node that
    is not inside it starts.
    """

    def __init__(self, source: SourceMap):
        self.source = source
        starts = [(self._start(path), path) for path in source.values]
        starts.sort(key=lambda item: (item[0].line, item[0].column, len(item[1])))
        self.paths = [path for _, path in starts]
        self.starts = [(mark.line, mark.column) for mark, _ in starts]

    def _start(self, path: Path) -> Mark:
        return self.source.keys.get(path) or self.source.values[path]

    def at(self, line: int, column: int) -> Spot | None:
        """The spot at a 1-based line and column."""
        index = bisect.bisect_right(self.starts, (line, column)) - 1
        if index < 0:
            return None
        path = self.paths[index]
        key = self.source.keys.get(path)
        # On the key itself, not in the space between it and its value.
        on_key = key is not None and key.line == line and column < key.column + len(str(path[-1]))
        return Spot(path, on_key)

    def end(self, path: Path) -> tuple[int, int] | None:
        """Where the next node outside `path` starts (1-based), or None at the end of the file."""
        index = self.paths.index(path)
        for later in range(index + 1, len(self.paths)):
            if self.paths[later][:len(path)] != path:
                return self.starts[later]
        return None

    def start(self, path: Path) -> Mark:
        return self._start(path)


def layer_item(path: Path) -> Path | None:
    """The layer item (or block use) `path` lies in: ('layers', 2) or ('blocks', 'b', 'layers', 0)."""
    if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
        return path[:2]
    if len(path) >= 4 and path[0] == "blocks" and path[2] == "layers" and isinstance(path[3], int):
        return path[:4]
    return None


def item_list(item: Path) -> Path:
    """The list an item sits in: ('layers',) or ('blocks', 'b', 'layers')."""
    return item[:-1]


def scope_before(snapshot: Snapshot, items_at: Path, before: tuple[int, int]) -> dict[str, Path]:
    """The names a layer of the list at `items_at` may read if it starts at `before` (1-based
    line, column): name -> where it is defined. At the top level `input` and the layers and
    block uses listed before; in a block its inputs and its layers listed before."""
    from cnncompile.language.graph import default_names
    from cnncompile.language.layers import MODEL_INPUT

    raw, source = snapshot.raw, snapshot.source
    items = value_at(raw, items_at)
    if not isinstance(items, list):
        return {}
    block = items_at[1] if items_at[0] == "blocks" else None
    names: dict[str, Path] = {}
    if block is None:
        names[MODEL_INPUT] = ("input",)
    else:
        inputs = value_at(raw, ("blocks", block, "inputs"))
        if isinstance(inputs, list):
            names.update((str(name), ("blocks", block, "inputs", k)) for k, name in enumerate(inputs))
        else:
            names["input"] = ("blocks", block)  # the default single input
    # Unnamed layers get Keras's default names, counted over the whole list as graph.py does.
    layers = [(i, entry) for i, entry in enumerate(items) if isinstance(entry, dict) and "block" not in entry]
    kinds = [(str(entry.get("type")), _own_name(entry)) for _, entry in layers]
    default = dict(zip((i for i, _ in layers), default_names(kinds, {MODEL_INPUT} if block is None else set())))
    for i, entry in enumerate(items):
        at = (*items_at, i)
        mark = source.value(at)
        if mark is None or (mark.line, mark.column) >= before:
            break
        name = default.get(i) or (_own_name(entry) if isinstance(entry, dict) else None)
        if name:
            names[name] = at
    return names


def _own_name(entry: dict) -> str | None:
    name = entry.get("name")
    return name if isinstance(name, str) and "${" not in name else None
