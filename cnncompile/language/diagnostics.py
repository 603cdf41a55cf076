"""Located diagnostics: every problem carries the YAML line and column it is about.

Printed like a compiler's, `model.yaml:14:7: error: …`, so editors and terminals
can jump to the spot.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    """1-based line and column, as editors count them."""

    line: int
    column: int


@dataclass(frozen=True)
class Diagnostic:
    severity: Literal["error", "warning", "note"]
    message: str
    mark: Mark | None = None
    notes: tuple[Diagnostic, ...] = ()
    """Follow-up locations, like a C compiler's "in expansion of macro" lines: for a problem
    inside a block, the uses that instantiated it, innermost first."""

    def render(self, filename: str) -> str:
        where = f"{filename}:{self.mark.line}:{self.mark.column}" if self.mark else filename
        head = f"{where}: {self.severity}: {self.message}"
        return "\n".join([head, *(note.render(filename) for note in self.notes)])


class SpecError(Exception):
    """One or more errors found in a spec. Library code raises this; the CLI prints it."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.render("<spec>") for d in self.diagnostics))


def in_file_order(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """By line and column, unlocated first (a stable sort: the order on one line is kept)."""
    return sorted(diagnostics, key=lambda d: (d.mark.line, d.mark.column) if d.mark else (0, 0))


@dataclass
class SourceMap:
    """Where each value of a loaded YAML document sits in the file.

    `values[path]` is the position of the value at `path` (a tuple of mapping keys and
    list indices); `keys[path]` is the position of the key that introduced it, which is
    where an unknown or misspelled key should be reported.
    """

    values: dict[Path, Mark] = field(default_factory=dict)
    keys: dict[Path, Mark] = field(default_factory=dict)

    def value(self, path: Path) -> Mark | None:
        """Position of the value at `path`, or of its nearest located ancestor."""
        for end in range(len(path), -1, -1):
            mark = self.values.get(tuple(path[:end]))
            if mark is not None:
                return mark
        return None

    def key(self, path: Path) -> Mark | None:
        """Position of the key naming `path`, else of its value, else an ancestor's."""
        return self.keys.get(tuple(path)) or self.value(path)


def value_at(tree: Any, path: Path) -> Any:
    """The value at `path` in a loaded YAML tree, or None where the path leads nowhere."""
    for step in path:
        try:
            tree = tree[step]
        except (KeyError, IndexError, TypeError):
            return None
    return tree


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean `Conv2D`?)' for the closest choice, case-insensitively, or ''."""
    return Vocabulary(choices).suggest(word)


class Vocabulary:
    """Names to suggest from, built once for many look-ups.

    Up to FULL names, the word is compared with every one (difflib). Beyond that, with the
    names nearest to it in sorted order (a typo after the first letters: `conv2d_1x` finds
    `conv2d_11`), so 300 typos among 20,000 names cost milliseconds, not minutes."""

    FULL = 1_000
    WINDOW = 40  # sorted neighbours compared on each side

    def __init__(self, names: Iterable[str]):
        self.names = [str(name) for name in dict.fromkeys(names)]
        self._sorted: list[tuple[str, int]] | None = None
        self._lower: dict[str, int] | None = None

    def suggest(self, word: str, before: int | None = None) -> str:
        """The hint for `word` among the first `before` names (all by default)."""
        word = str(word)[:200]
        before = len(self.names) if before is None else before
        if before <= self.FULL:
            return _closest(word, self.names[:before])
        if self._sorted is None:
            self._sorted = sorted((name.lower(), order) for order, name in enumerate(self.names))
            self._lower = {}
            for lower, order in self._sorted:
                self._lower.setdefault(lower, order)
        exact = self._lower.get(word.lower())  # type: ignore[union-attr]
        if exact is not None and exact < before:
            return f"; did you mean '{self.names[exact]}'?"
        at = bisect.bisect_left(self._sorted, (word.lower(), -1))
        near = self._sorted[max(0, at - self.WINDOW): at + self.WINDOW]
        return _closest(word, [self.names[order] for _, order in near if order < before])


def _closest(word: str, choices: list[str]) -> str:
    by_lower = {c.lower(): c for c in choices}
    if word.lower() in by_lower:
        return f"; did you mean '{by_lower[word.lower()]}'?"
    import difflib  # lazily: only a misspelt name needs it, and `check` of a good spec pays every import

    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean '{by_lower[close[0]]}'?" if close else ""


def kind_of(value: Any) -> str:
    """A YAML value's kind as a reader says it: 'a mapping', 'a list', 'a string', ..."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "nothing (null)"}.get(type(value), "a value")


def show(value: Any) -> str:
    """A received value for a message, in YAML's spelling, at most 40 characters: 'same',
    [3, 0], true, null; a mapping only by its kind. A large value is never turned into text
    whole: only as much as is shown."""
    if isinstance(value, dict):
        return kind_of(value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value) if len(value) <= 38 else repr(value[:35] + "...")
    if isinstance(value, int) and value.bit_length() > 100:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, (list, tuple)):
        text = "["
        for i, item in enumerate(value):
            text += (", " if i else "") + show(item)
            if len(text) > 40:
                return text[:37] + "..."
        return text + "]"
    text = str(value)[:41]
    return text if len(text) <= 40 else text[:37] + "..."
