"""YAML text -> plain Python values plus a SourceMap, safely and strictly.

PyYAML's parser emits events; we build the values ourselves instead of using a
Constructor, which gives us everything the spec language needs in one pass:

- no tags that construct objects: only the core YAML tags are allowed;
- YAML 1.2 core scalars: `yes`, `no`, `on`, `off` stay strings, so `padding: no`
  is rejected by validation instead of silently becoming False;
- duplicate keys are errors, not "last one wins";
- alias expansion is counted, so a "billion laughs" file fails after a bounded
  amount of work, and nesting depth is capped before anything recurses;
- every key and value gets its line and column.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from cnncompile.language.diagnostics import Diagnostic, Mark, Path, SourceMap, SpecError

# A model spec is a few hundred nodes; these leave room for very large ones while
# keeping hostile input cheap to reject.
MAX_NODES = 500_000  # values written out: a 50,000-layer file holds about 250,000
MAX_ALIASED = 100_000  # values repeated through aliases (a "billion laughs" stops here)
MAX_DEPTH = 64
MAX_BYTES = 10 * 1024 * 1024
INT_LIMIT = 2**63

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_CORE = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {None, "!", *(_CORE + t for t in ("str", "int", "float", "bool", "null", "map", "seq"))}


def _mark(event: yaml.Event) -> Mark:
    return Mark(event.start_mark.line + 1, event.start_mark.column + 1)


class _Builder:
    """Turns a PyYAML event stream into values, a SourceMap and a list of problems."""

    def __init__(self) -> None:
        self.source = SourceMap()
        self.anchors: dict[str, tuple[Any, int]] = {}  # value and its node count
        self.nodes = 0
        self.aliased = 0  # of self.nodes, how many came through aliases

    def fail(self, message: str, mark: Mark) -> SpecError:
        return SpecError([Diagnostic("error", message, mark)])

    def count(self, n: int, mark: Mark, aliased: bool = False) -> None:
        self.nodes += n
        self.aliased += n if aliased else 0
        if self.aliased > MAX_ALIASED:
            raise self.fail(f"aliases repeat more than {MAX_ALIASED:,} values; refusing to load the "
                            "document (write a block and use it instead)", mark)
        if self.nodes > MAX_NODES:
            raise self.fail(f"the document holds more than {MAX_NODES:,} values; refusing to load it "
                            "(a block used with repeat: writes a long chain in one line)", mark)

    def check_tag(self, event: Any) -> None:
        if event.tag not in _ALLOWED_TAGS:
            raise self.fail(
                f"YAML tag '{event.tag}' is not allowed; a spec holds only plain "
                "mappings, lists, strings and numbers",
                _mark(event),
            )

    def scalar(self, event: yaml.ScalarEvent) -> Any:
        self.check_tag(event)
        text, mark = event.value, _mark(event)
        tag = event.tag
        quoted = bool(event.style) or tag in ("!", _CORE + "str")  # plain: None (PyYAML), "" (libyaml)
        if quoted:
            return text
        if tag == _CORE + "null" or (tag is None and _NULL.match(text)):
            return None
        if tag == _CORE + "bool" or (tag is None and _BOOL.match(text)):
            if not _BOOL.match(text):
                raise self.fail(f"'{text}' is not a boolean; use true or false", mark)
            return text.lower() == "true"
        if tag == _CORE + "int" or (tag is None and _INT.match(text)):
            if not _INT.match(text):
                raise self.fail(f"'{text}' is not an integer", mark)
            if len(text) > 20:
                raise self.fail(f"integer {text[:12]}… is too large (limit is 2^63)", mark)
            value = int(text, 0) if text[:2] in ("0o", "0x") else int(text)
            if abs(value) >= INT_LIMIT:
                raise self.fail(f"integer {text} is too large (limit is 2^63)", mark)
            return value
        if tag == _CORE + "float" or (tag is None and _FLOAT.match(text)):
            if not (_FLOAT.match(text) or _INT.match(text)):
                raise self.fail(f"'{text}' is not a number", mark)
            value = float(text.replace(".inf", "inf").replace(".Inf", "inf").replace(".INF", "inf")
                          .replace(".nan", "nan").replace(".NaN", "nan").replace(".NAN", "nan"))
            if math.isinf(value) and "inf" not in text.lower():
                raise self.fail(f"number {text[:20]} is too large for a float", mark)
            return value
        return text

    def build(self, events: list[yaml.Event]) -> Any:
        """Consume the events of one document's root node."""
        it = iter(events)
        return self.node(next(it), it, (), 0)

    def node(self, event: yaml.Event, it: Any, path: Path, depth: int) -> Any:
        mark = _mark(event)
        if depth > MAX_DEPTH:
            raise self.fail(f"nesting is deeper than {MAX_DEPTH} levels", mark)
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise self.fail(f"alias *{event.anchor} refers to no anchor defined before it", mark)
            value, size = self.anchors[event.anchor]
            self.count(size, mark, aliased=True)
            self.source.values[path] = mark
            return value
        start = self.nodes
        self.source.values[path] = mark
        self.count(1, mark)
        if isinstance(event, yaml.ScalarEvent):
            value: Any = self.scalar(event)
        elif isinstance(event, yaml.SequenceStartEvent):
            self.check_tag(event)
            value = []
            for child in it:
                if isinstance(child, yaml.SequenceEndEvent):
                    break
                value.append(self.node(child, it, (*path, len(value)), depth + 1))
        elif isinstance(event, yaml.MappingStartEvent):
            self.check_tag(event)
            value = {}
            for key_event in it:
                if isinstance(key_event, yaml.MappingEndEvent):
                    break
                key_mark = _mark(key_event)
                if not isinstance(key_event, yaml.ScalarEvent):
                    raise self.fail("mapping keys must be plain names, not lists or mappings", key_mark)
                key = self.scalar(key_event)
                if key == "<<" and not key_event.style:
                    raise self.fail("YAML merge keys (<<) are not supported; write the keys out", key_mark)
                if not isinstance(key, str):
                    key = key_event.value  # `1: x` is the key "1"; validation reports it by name
                if key in value:
                    first = self.source.keys[(*path, key)]
                    raise self.fail(
                        f"duplicate key '{key}' (first defined at line {first.line})", key_mark
                    )
                self.source.keys[(*path, key)] = key_mark
                value[key] = self.node(next(it), it, (*path, key), depth + 1)
        else:  # pragma: no cover - the parser guarantees node events here
            raise self.fail(f"unexpected YAML event {type(event).__name__}", mark)
        anchor = getattr(event, "anchor", None)
        if anchor:
            self.anchors[anchor] = (value, self.nodes - start)
        return value


def load_yaml(text: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document into values and their positions; raise SpecError if bad."""
    builder = _Builder()
    try:
        events = list(_events(text, builder))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark else Mark(1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError([Diagnostic("error", f"invalid YAML: {problem}", where)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Diagnostic("error", f"invalid YAML: {exc}", Mark(1, 1))]) from None
    body = [e for e in events if not isinstance(e, (yaml.StreamStartEvent, yaml.StreamEndEvent))]
    starts = [i for i, e in enumerate(body) if isinstance(e, yaml.DocumentStartEvent)]
    if not starts:
        raise SpecError([Diagnostic("error", "the file is empty; expected a mapping with "
                                    "name, input and layers", Mark(1, 1))])
    if len(starts) > 1:
        raise SpecError([Diagnostic("error", "expected a single YAML document, found "
                                    f"{len(starts)} (separated by ---)", _mark(body[starts[1]]))])
    return builder.build(body[1:-1]), builder.source


# libyaml's C parser, where PyYAML was built with it, is ~10x faster on big specs (a
# 10,000-layer file); its events and marks are the same.
_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _events(text: str, builder: _Builder):
    """Parser events, with the nesting depth checked before anything is built."""
    depth = 0
    for event in yaml.parse(text, Loader=_PARSER):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise builder.fail(f"nesting is deeper than {MAX_DEPTH} levels", _mark(event))
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
        yield event


def decode(data: bytes) -> str:
    """UTF-8 text of a spec file, or a SpecError pointing at the first bad byte."""
    if len(data) > MAX_BYTES:
        raise SpecError([Diagnostic("error", f"file is {len(data):,} bytes; a spec is at most "
                                    f"{MAX_BYTES:,}", Mark(1, 1))])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise SpecError([Diagnostic(
            "error", f"file is not valid UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded",
            Mark(line, column))]) from None
