"""Loaded YAML -> ModelSpec, with pydantic's errors turned into located diagnostics.

The idea is Dagster's (dagster/_utils/pydantic_yaml.py): pydantic reports an error
location as a path of keys and indices; the SourceMap built by the loader turns that
path back into a line and column.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cnncompile.language.diagnostics import (Diagnostic, Path, SourceMap, SpecError, did_you_mean, in_file_order,
                                               kind_of, show, value_at)
from cnncompile.language.graph import Broken, default_names, nothing_left, wire
from cnncompile.language.layers import LAYER_NAMES, LAYER_TYPES, MODEL_INPUT
from cnncompile.language.loader import decode, load_yaml
from cnncompile.language.model import Input, ModelSpec
from cnncompile.language.training import ENTRY_TYPES, Training

# Which names a discriminated union chooses among, by the key that holds it.
_KINDS = {"layers": "layer type", "optimizer": "optimizer", "learning_rate": "learning-rate schedule",
          "loss": "loss", "metrics": "metric", "callbacks": "callback", "augmentation": "augmentation"}

# What a type error's value should have been, by pydantic's error type.
_WANTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
           "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
           "model_type": "a mapping", "model_attributes_type": "a mapping"}

# Type errors that only say "this branch of a union wanted another kind of value".
_BRANCH_MISMATCH = {"model_type", "model_attributes_type", "dict_type", "float_type", "int_type",
                    "string_type", "list_type", "bool_type", "literal_error", "union_tag_not_found"}


def parse_spec(data: bytes) -> tuple[ModelSpec, SourceMap]:
    """Bytes of a spec file -> a validated ModelSpec and where everything in it sits."""
    raw, source = load_yaml(decode(data))
    return validate_tree(raw, source), source


def validate_tree(raw: Any, source: SourceMap) -> ModelSpec:
    """A loaded YAML tree -> a validated, wired ModelSpec (`tune` validates candidate trees
    this way); SpecError with every schema and wiring problem, in file order."""
    partial = recover_tree(raw, source)
    if partial.problems:
        raise SpecError(in_file_order(partial.problems))
    return partial.spec


@dataclass(frozen=True)
class Partial:
    """What validation and wiring could make of a tree, and every problem found on the way.

    Error recovery, as in a compiler: a layer, block use or block that fails validation stays
    in the spec as a `Broken` marker, so its name is still defined and only what reads it is
    skipped; a top-level section that fails is left out. `spec.graph()` is the wired rest."""

    spec: ModelSpec
    problems: list[Diagnostic]
    input_known: bool  # False when `input` itself failed: no shape can be inferred


def recover_tree(raw: Any, source: SourceMap) -> Partial:
    """Validate and wire as much of `raw` as can be; SpecError only when nothing can be."""
    if raw is None:
        raise SpecError([Diagnostic("error", "the file is empty; expected a mapping with "
                                    "name, input and layers", source.value(()))])
    if not isinstance(raw, dict):
        raise SpecError([Diagnostic("error", "the top level must be a mapping with name, input "
                                    f"and layers, received {kind_of(raw)}", source.value(()))])
    tree, problems, input_known = dict(raw), [], True
    broken_layers: dict[int, Any] = {}
    broken_blocks: dict[str, Any] = {}
    for _ in range(3):  # each round sets aside what failed; a third is never needed in practice
        try:
            spec = ModelSpec.model_validate(tree)
            break
        except ValidationError as exc:
            located = located_errors(exc, tree, source)
            problems.extend(diagnostic for _, diagnostic in located)
            for path, _ in located:
                if not _set_aside(path, tree, raw, broken_layers, broken_blocks):
                    raise SpecError(in_file_order(problems)) from None
                input_known = input_known and path[:1] != ("input",)
    else:
        raise SpecError(in_file_order(list(dict.fromkeys(problems))))
    for index, item in broken_layers.items():
        spec.layers[index] = Broken(item)
    if broken_blocks:
        spec.blocks.update({name: Broken(block) for name, block in broken_blocks.items()})  # type: ignore[union-attr]
    problems += _blocks_named_like_layers(spec, source)
    nodes, wiring = wire(spec, source)
    spec._graph = nodes
    problems = list(dict.fromkeys([*problems, *wiring]))
    return Partial(spec, problems or ([] if nodes else [nothing_left(source)]), input_known)


def _blocks_named_like_layers(spec: ModelSpec, source: SourceMap) -> list[Diagnostic]:
    """A block called `Conv2D` reads as the layer type wherever it is used: refuse the name."""
    return [Diagnostic("error", f"blocks.{name}: a block cannot be named like a layer type; "
                       "choose another name", source.key(("blocks", name)))
            for name in spec.blocks or {} if name in LAYER_NAMES]


# Placeholders that stand in, for validation only, for a part that failed (set aside).
_STAND_IN_LAYER = {"block": "_"}  # a block use validates without looking at the block
_STAND_IN_INPUT = {"shape": [1]}


def _set_aside(path: Path, tree: dict, raw: dict, layers: dict[int, Any], blocks: dict[str, Any]) -> bool:
    """Replace the part of `tree` an error is in by a stand-in; False when nothing can stand
    in for it (the layers list itself)."""
    top = path[0] if path else None
    if top == "layers" and len(path) >= 2 and isinstance(path[1], int) and isinstance(tree.get("layers"), list):
        if path[1] not in layers:
            tree["layers"] = list(tree["layers"])
            layers[path[1]] = raw["layers"][path[1]]
            tree["layers"][path[1]] = _STAND_IN_LAYER
        return True
    if top == "blocks" and len(path) >= 2 and isinstance(tree.get("blocks"), dict):
        tree["blocks"] = {key: block for key, block in tree["blocks"].items() if key != path[1]}
        blocks[str(path[1])] = raw["blocks"].get(path[1])
        return True
    if top == "input":
        tree["input"] = _STAND_IN_INPUT
        return True
    if top == "name":
        tree["name"] = "model"
        return True
    if top in ("layers", None):
        return False
    tree.pop(top, None)  # training, search, blocks as a whole, an unknown key: optional
    return True


def located_errors(exc: ValidationError, raw: Any, source: SourceMap, at: Path = (), subject: str = "",
                   notes: tuple[Diagnostic, ...] = ()) -> list[tuple[Path, Diagnostic]]:
    """Every pydantic error as (its path in `raw`, a located, readable diagnostic)."""
    errors = _drop_misspelt_missing(
        _drop_losing_branches([(_data_path(e["loc"], raw, e["type"], e.get("input")), e) for e in exc.errors()]))
    located = []
    for path, _branches, error in errors:
        message, at_key = _describe(error, path, raw)
        mark = source.key((*at, *path)) if at_key else source.value((*at, *path))
        located.append((path, Diagnostic("error", (subject or _subject(path, raw)) + message, mark, notes)))
    return located


def translate(exc: ValidationError, raw: Any, source: SourceMap, at: Path = (), subject: str = "",
              notes: tuple[Diagnostic, ...] = ()) -> list[Diagnostic]:
    """Every pydantic error as a located, readable diagnostic, in file order.

    `raw` is the data pydantic saw; for a part of the file validated on its own (a layer
    expanded from a block), `at` is where that part sits in the file, `subject` names it
    and `notes` say where it was instantiated.
    """
    unique = list(dict.fromkeys(d for _, d in located_errors(exc, raw, source, at, subject, notes)))
    return in_file_order(unique)


def _data_path(loc: tuple, raw: Any, kind: str, received: Any = None) -> tuple[Path, tuple]:
    """Split pydantic's loc into the data path and the union-branch labels it passed through.

    pydantic's documented loc mixes two kinds of step: keys and indices into the input, and,
    wherever a union chose or tried a member, that member's label (a tagged union's tag such
    as `Conv2D`, a plain union's `L1L2` or `literal[...]`, a callable Discriminator's Tag).
    Which is which follows from the input itself, not from how labels are spelled: a step
    that does not lead into the data is a label; only a `missing` error's last step names a
    key that is not there. A step that is a key of the mapping could still be a label (a Tag
    `block` on `{block: ...}`): both readings are tried, and the one that explains the error
    best wins, the one whose last step lands in the data, then the one that reaches the value
    pydantic refused, then the one with fewer labels.
    """
    readings = list(_readings(tuple(loc), raw, kind, (), (), 0))
    path, branches, *_ = max(readings, key=lambda r: (r[2], r[3], r[4] is received, -len(r[1])))
    return path, branches


def _readings(loc: tuple, node: Any, kind: str, path: Path, branches: tuple, found: int):
    """Every way of reading `loc` from `node` on: (data path, labels, how many steps led into
    the data, whether the last step is data, the value reached). The best reading follows the
    data furthest."""
    if not loc:
        yield path, branches, found, bool(path) and not (branches and branches[-1][0] == len(path)), node
        return
    step, rest = loc[0], loc[1:]
    as_label = (path, (*branches, (len(path), step)), found)
    if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
        yield from _readings(rest, node[step], kind, (*path, step), branches, found + 1)
    elif isinstance(node, dict) and step in node:
        yield from _readings(rest, node[step], kind, (*path, step), branches, found + 1)
        if isinstance(step, str):
            yield from _readings(rest, node, kind, *as_label)
    elif isinstance(node, dict) and not rest and kind == "missing":
        yield (*path, step), branches, found + 1, True, None  # the key that should be there
    elif isinstance(step, str) and node is not None:
        yield from _readings(rest, node, kind, *as_label)
    else:
        yield from _readings(rest, None, kind, (*path, step), branches, found)  # below a missing value


def _drop_losing_branches(items: list) -> list[tuple[Path, tuple, dict]]:
    """For a plain union (`'l2' | {l1, l2}`), keep the errors of the branch the user meant.

    A branch whose only complaint is the kind of value at its root (wanted a mapping, got
    a string) was not the user's intent when another branch got further.
    """
    # A label is a fork where errors at the same place passed through different labels: the
    # members of a plain union that were all tried. A tagged union's tag (one label, chosen by
    # the data) is no fork.
    seen: dict[tuple, set] = defaultdict(set)
    for (path, branches), _ in items:
        for depth, label in branches:
            seen[path[:depth], depth].add(label)
    by_fork: dict[Path, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    kept = []
    for (path, branches), error in items:
        forks = [(depth, label) for depth, label in branches if len(seen[path[:depth], depth]) > 1]
        if not forks:
            kept.append((path, branches, error))
            continue
        depth, label = forks[0]
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
            kept.append((path, (), {**error, "type": "_union_kinds",
                                    "ctx": {"refusals": [errs[0][2] for errs in branches.values()]}}))
    return kept


def _drop_misspelt_missing(errors: list) -> list:
    """`filterz: 8` is one mistake, not two: the unknown key's error (which suggests
    `filters`) says it all, so the missing `filters` is not reported besides."""
    extras = defaultdict(list)
    for path, _, error in errors:
        if error["type"] == "extra_forbidden" and path:
            extras[path[:-1]].append(str(path[-1]))
    return [(path, branches, error) for path, branches, error in errors
            if not (error["type"] == "missing" and path
                    and any(did_you_mean(extra, [str(path[-1])]) for extra in extras[path[:-1]]))]


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
        if key == "when" and len(path) == 3 and path[0] == "layers":
            return (f"{owner}unknown key 'when': `when` keeps or drops a layer per use of a block, so it "
                    "applies only inside blocks; here, delete the layer or move it into a block"), True
        choices = _allowed_keys(value_at(raw, path[:-1]), path[:-1])
        return f"{owner}unknown key '{key}'{did_you_mean(key, choices)}", True
    if kind == "union_tag_invalid":
        what = _KINDS.get(_container(path), "type")
        tags = [t.strip(" '") for t in ctx.get("expected_tags", "").split(",")]
        tag = ctx.get("tag")
        blocks = raw.get("blocks") if isinstance(raw, dict) else None
        if what == "layer type" and isinstance(blocks, dict) and tag in blocks:
            return f"{field}'{tag}' is a block, not a layer type: write {{block: {tag}, ...}}", False
        hint = did_you_mean(str(tag), tags) or f"; expected one of {', '.join(tags)}"
        return f"{field}unknown {what} '{tag}'{hint}", False
    if kind == "union_tag_not_found":
        what = _KINDS.get(_container(path), "type")
        if not isinstance(received, dict):
            return f"{field}expected a mapping with a 'type' key, received {kind_of(received)}", False
        return f"{field}missing 'type': say which {what} this is", True
    if kind == "_union_kinds":
        forms = [_form(refusal) for refusal in ctx["refusals"]]
        return f"{field}expected {' or '.join(forms)}, received {show(received)}", False
    if kind == "literal_error":
        choices = _literal_choices(ctx.get("expected", ""))
        hint = did_you_mean(received, choices) if isinstance(received, str) else ""
        if hint:
            return f"{field}unknown value {show(received)}{hint}", False
        return f"{field}expected {ctx.get('expected')}, received {show(received)}", False
    if kind in ("value_error", "assertion_error"):
        # A search range's own complaint names its path (several ranges sit side by side).
        where = _field(path[:3]) if path[:1] == ("search",) else ""
        return where + str(error["msg"]).removeprefix("Value error, "), False
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<",
              "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"{field}must be {op} {bound}, received {show(received)}", False
    if kind in ("too_short", "too_long"):
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        word = "at least" if kind == "too_short" else "at most"
        return (f"{field}expected {word} {limit} item{'s' if limit != 1 else ''}, received "
                f"{ctx.get('actual_length')}"), False
    if kind == "string_pattern_mismatch":
        return (f"{field}{show(received)} is not a valid name (letters, digits, '_', '.', '-'; "
                "no leading '.' or '-')"), False
    if kind.endswith("_type") or kind in ("pair", "padding2", "model_attributes_type"):
        wanted = _WANTED.get(kind)
        if wanted:
            return f"{field}expected {wanted}, received {show(received)}", False
        return f"{field}{error['msg']}", False
    return f"{field}{error['msg']}", False


def _subject(path: Path, raw: Any) -> str:
    """"layers[3] Conv2D 'conv2d_2': " for problems inside a layer (the form inference.py uses
    too), else ''. The name is the layer's effective one; a layer whose type is unknown gets
    neither type nor name (Keras would not build it, so it has no default name)."""
    if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
        layer = value_at(raw, path[:2])
        label = f"layers[{path[1]}]"
        if isinstance(layer, dict) and isinstance(layer.get("type"), str) and layer["type"] in LAYER_NAMES:
            label += f" {layer['type']} '{_effective_names(raw['layers'])[path[1]]}'"
        return label + ": "
    return ""


def _effective_names(layers: list) -> list[str | None]:
    """Each raw layer's name as ModelSpec.layer_names() gives it for a valid spec, computed
    over the layers whose type is known (invalid specs have no ModelSpec to ask)."""
    known = {i: (layer["type"], layer.get("name") if isinstance(layer.get("name"), str) else None)
             for i, layer in enumerate(layers)
             if isinstance(layer, dict) and isinstance(layer.get("type"), str) and layer["type"] in LAYER_NAMES}
    names = dict(zip(known, default_names(known.values(), {MODEL_INPUT})))
    return [names.get(i) for i in range(len(layers))]


def _field(path: Path) -> str:
    """'padding: ' for a layer's key, 'training.loss.from_logits: ' elsewhere, '' for a whole layer."""
    if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
        path = path[2:]
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return f"{text}: " if text else ""


def _form(refusal: dict) -> str:
    """What a union member accepts, from its refusal: literal_error -> 'l1', 'l2' or 'l1_l2'."""
    if refusal["type"] == "literal_error":
        return ", ".join(_literal_choices((refusal.get("ctx") or {}).get("expected", "")))
    return _WANTED.get(refusal["type"], "a mapping")


def _allowed_keys(node: Any, path: Path) -> list[str]:
    """Field names of the spec class that `path` holds, for did-you-mean on unknown keys."""
    owner = {(): ModelSpec, ("training",): Training, ("input",): Input}.get(tuple(path))
    if owner is None and isinstance(node, dict):
        for cls in (*LAYER_TYPES, *ENTRY_TYPES):
            type_field = cls.model_fields.get("type")
            if type_field is not None and node.get("type") == type_field.default:
                owner = cls
                break
    return list(owner.model_fields) if owner else []


def _container(path: Path) -> str:
    for step in reversed(path):
        if isinstance(step, str) and step in _KINDS:
            return step
    return ""


def _literal_choices(expected: str) -> list[str]:
    return [part.strip(" '") for part in expected.replace(" or ", ",").split(",") if part.strip(" '")]

