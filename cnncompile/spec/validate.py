"""Loaded YAML -> ModelSpec, with pydantic's errors turned into located diagnostics.

The idea is Dagster's (dagster/_utils/pydantic_yaml.py): pydantic reports an error
location as a path of keys and indices; the SourceMap built by the loader turns that
path back into a line and column.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import ValidationError

from cnncompile.diagnostics import Diagnostic, Path, SourceMap, SpecError, did_you_mean
from cnncompile.spec.layers import LAYER_NAMES, LAYER_TYPES
from cnncompile.spec.loader import decode, load_yaml
from cnncompile.spec.model import Input, ModelSpec
from cnncompile.spec.training import Training

# Which names a discriminated union chooses among, by the key that holds it.
_KINDS = {"layers": "layer type", "optimizer": "optimizer", "learning_rate": "learning-rate schedule",
          "callbacks": "callback", "augmentation": "augmentation"}

# Tags of the callable discriminator that tells a layer from a block use (spec/model.py).
_ENTRY_TAGS = ("layer", "block")

# Type errors that only say "this branch of a union wanted another kind of value".
_BRANCH_MISMATCH = {"model_type", "model_attributes_type", "dict_type", "float_type", "int_type",
                    "string_type", "list_type", "bool_type", "literal_error", "union_tag_not_found"}


def parse_spec(data: bytes) -> tuple[ModelSpec, SourceMap]:
    """Bytes of a spec file -> a validated ModelSpec and where everything in it sits."""
    raw, source = load_yaml(decode(data))
    if raw is None:
        raise SpecError([Diagnostic("error", "the file is empty; expected a mapping with "
                                    "name, input and layers", source.value(()))])
    if not isinstance(raw, dict):
        raise SpecError([Diagnostic("error", "the top level must be a mapping with name, input "
                                    f"and layers, received {_kind(raw)}", source.value(()))])
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(translate(exc, raw, source)) from None
    spec.graph(source)  # wiring: names, inputs, arity; raises SpecError, located
    return spec, source


def translate(exc: ValidationError, raw: Any, source: SourceMap, at: Path = (), subject: str = "",
              notes: tuple[Diagnostic, ...] = ()) -> list[Diagnostic]:
    """Every pydantic error as a located, readable diagnostic, in file order.

    `raw` is the data pydantic saw; for a part of the file validated on its own (a layer
    expanded from a block), `at` is where that part sits in the file, `subject` names it
    and `notes` say where it was instantiated.
    """
    errors = _drop_losing_branches([(_data_path(e["loc"], raw), e) for e in exc.errors()])
    diagnostics = []
    for path, _branches, error in errors:
        message, at_key = _describe(error, path, raw)
        mark = source.key((*at, *path)) if at_key else source.value((*at, *path))
        diagnostics.append(Diagnostic("error", (subject or _subject(path, raw)) + message, mark, notes))
    unique = list(dict.fromkeys(diagnostics))
    return sorted(unique, key=lambda d: (d.mark.line, d.mark.column) if d.mark else (0, 0))


def _data_path(loc: tuple, raw: Any) -> tuple[Path, tuple]:
    """Split pydantic's loc into the data path and the union-branch labels it passed through.

    pydantic adds the chosen tag (`Conv2D`) or member name (`L1L2`, `literal[...]`) to loc
    for unions; those steps are not keys in the data.
    """
    path: list[str | int] = []
    branches: list[tuple[int, str]] = []
    node = raw
    for position, step in enumerate(loc):
        if step in _ENTRY_TAGS and isinstance(node, dict) and position and isinstance(loc[position - 1], int):
            continue  # layer or block use: decided by the keys present, so no fork
        if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            path.append(step)
            node = node[step]
        elif isinstance(node, dict) and step in node:
            path.append(step)
            node = node[step]
        elif isinstance(step, str) and (not isinstance(node, dict) or node.get("type") == step
                                        or step[:1].isupper() or step.startswith(("literal[", "function-"))):
            if isinstance(node, dict) and node.get("type") == step:
                continue  # the discriminator's tag: no fork, the data decided it
            branches.append((len(path), step))
        else:
            path.append(step)  # a missing key: the path still names it
            node = None
    return tuple(path), tuple(branches)


def _drop_losing_branches(items: list) -> list[tuple[Path, tuple, dict]]:
    """For a plain union (`'l2' | {l1, l2}`), keep the errors of the branch the user meant.

    A branch whose only complaint is the kind of value at its root (wanted a mapping, got
    a string) was not the user's intent when another branch got further.
    """
    by_fork: dict[Path, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    kept = []
    for (path, branches), error in items:
        if not branches:
            kept.append((path, branches, error))
            continue
        depth, label = branches[0]
        by_fork[path[:depth]][label].append((path, branches, error))
    for root, branches in by_fork.items():
        deep = [errs for errs in branches.values() if not _superficial(errs, len(root))]
        literal = [errs[0] for errs in branches.values() if errs[0][2]["type"] == "literal_error"
                   and isinstance(errs[0][2].get("input"), str)]
        if deep:
            for errs in deep:
                kept.extend(errs)
        elif literal:
            kept.append(literal[0])  # a string meant as one of the names: say which is close
        else:
            # Every branch refused the kind of value: say so once, listing what fits.
            path, _, error = next(iter(branches.values()))[0]
            kept.append((path, (), {**error, "type": "_union_kinds", "ctx": {"labels": list(branches)}}))
    return kept


def _superficial(errors: list, depth: int) -> bool:
    """Only complaints about the kind of value at the branch's root (depth)."""
    return all(len(path) == depth and error["type"] in _BRANCH_MISMATCH for path, _, error in errors)


def _describe(error: dict, path: Path, raw: Any) -> tuple[str, bool]:
    """(message, whether to point at the key rather than the value)."""
    kind, ctx, received = error["type"], error.get("ctx") or {}, error.get("input")
    field = _field(path)
    if kind in ("extra_forbidden", "missing"):
        owner, key = _field(path[:-1]), str(path[-1])
        if kind == "missing":
            return f"{owner}missing required key '{key}'", True
        choices = _allowed_keys(_node(raw, path[:-1]), path[:-1])
        return f"{owner}unknown key '{key}'{did_you_mean(key, choices)}", True
    if kind == "union_tag_invalid":
        what = _KINDS.get(_container(path), "type")
        tags = [t.strip(" '") for t in ctx.get("expected_tags", "").split(",")]
        tag = ctx.get("tag")
        hint = did_you_mean(str(tag), tags) or f"; expected one of {', '.join(tags)}"
        return f"{field}unknown {what} '{tag}'{hint}", False
    if kind == "union_tag_not_found":
        what = _KINDS.get(_container(path), "type")
        if not isinstance(received, dict):
            return f"{field}expected a mapping with a 'type' key, received {_kind(received)}", False
        return f"{field}missing 'type': say which {what} this is", True
    if kind == "_union_kinds":
        forms = [_form(label) for label in ctx["labels"]]
        return f"{field}expected {' or '.join(forms)}, received {_show(received)}", False
    if kind == "literal_error":
        choices = _literal_choices(ctx.get("expected", ""))
        hint = did_you_mean(received, choices) if isinstance(received, str) else ""
        if hint:
            return f"{field}unknown value {_show(received)}{hint}", False
        return f"{field}expected {ctx.get('expected')}, received {_show(received)}", False
    if kind in ("value_error", "assertion_error"):
        return str(error["msg"]).removeprefix("Value error, "), False
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<",
              "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"{field}must be {op} {bound}, received {_show(received)}", False
    if kind in ("too_short", "too_long"):
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        word = "at least" if kind == "too_short" else "at most"
        return (f"{field}expected {word} {limit} item{'s' if limit != 1 else ''}, received "
                f"{ctx.get('actual_length')}"), False
    if kind == "string_pattern_mismatch":
        return (f"{field}{_show(received)} is not a valid name (letters, digits, '_', '.', '-'; "
                "no leading '.' or '-')"), False
    if kind.endswith("_type") or kind in ("pair", "padding2", "model_attributes_type"):
        wanted = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
                  "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
                  "model_type": "a mapping", "model_attributes_type": "a mapping"}.get(kind)
        if wanted:
            return f"{field}expected {wanted}, received {_show(received)}", False
        return f"{field}{error['msg']}", False
    return f"{field}{error['msg']}", False


def _subject(path: Path, raw: Any) -> str:
    """'layers[3] Conv2D 'conv2d_2': ' for problems inside a layer, else ''."""
    if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
        layer = _node(raw, path[:2])
        label = f"layers[{path[1]}]"
        if isinstance(layer, dict):
            if isinstance(layer.get("type"), str) and layer["type"] in LAYER_NAMES:
                label += f" {layer['type']}"
            if isinstance(layer.get("name"), str):
                label += f" '{layer['name']}'"
        return label + ": "
    return ""


def _field(path: Path) -> str:
    """'padding: ' for a layer's key, 'training.loss.from_logits: ' elsewhere, '' for a whole layer."""
    if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
        path = path[2:]
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return f"{text}: " if text else ""


def _form(label: str) -> str:
    """A union member's label as a reader would say it: literal['l1','l2'] -> 'l1' or 'l2'."""
    if label.startswith("literal["):
        return ", ".join(_literal_choices(label[len("literal["):-1]))
    return "a mapping"


def _allowed_keys(node: Any, path: Path) -> list[str]:
    """Field names of the spec class that `path` holds, for did-you-mean on unknown keys."""
    owner = {(): ModelSpec, ("training",): Training, ("input",): Input}.get(tuple(path))
    if owner is None and isinstance(node, dict):
        for cls in (*LAYER_TYPES, *_training_classes()):
            type_field = cls.model_fields.get("type")
            if type_field is not None and node.get("type") == type_field.default:
                owner = cls
                break
    return list(owner.model_fields) if owner else []


def _training_classes() -> list[type]:
    from cnncompile.spec import training
    return [obj for obj in vars(training).values()
            if isinstance(obj, type) and "type" in getattr(obj, "model_fields", {})]


def _container(path: Path) -> str:
    for step in reversed(path):
        if isinstance(step, str) and step in _KINDS:
            return step
    return ""


def _literal_choices(expected: str) -> list[str]:
    return [part.strip(" '") for part in expected.replace(" or ", ",").split(",") if part.strip(" '")]


def _node(raw: Any, path: Path) -> Any:
    for step in path:
        try:
            raw = raw[step]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "nothing (null)"}.get(type(value), "a value")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return _kind(value)
    return str(value)
