"""A spec's search space: every candidate is the spec's own YAML tree with some values replaced.

A candidate is checked exactly as a hand-written spec is: its tree goes through the
ordinary validation (language/validate.py) and shape inference (inference.py), then the
budgets. So every rule of the language applies to candidates, including ones added
later (graphs, blocks), and an infeasible candidate costs a millisecond, not a
TensorFlow start-up. Framework-free: `cnncompile check` uses it.

Paths address layers by `name`, not position, for the reason Caffe names blobs: a path
survives inserting a layer. A path is resolved once, to a place in the YAML tree
(`layers.conv1.filters` -> ("layers", 0, "filters")); a block use written in `layers`
with a `name` is addressed the same way (`layers.stage2.repeat`).
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from cnncompile.language.diagnostics import Diagnostic, Path, SourceMap, SpecError, did_you_mean
from cnncompile.analysis.check import CompiledSpec
from cnncompile.analysis.inference import ModelInfo, infer
from cnncompile.language.loader import decode, load_yaml
from cnncompile.language.model import ModelSpec
from cnncompile.language.search import Search, SearchRange
from cnncompile.language.validate import validate_tree

ROOTS = ("input", "layers", "training")  # what a path may start with


@dataclass(frozen=True)
class Dimension:
    """One varied field: its path as written, where it sits in the tree, and its range."""

    path: str
    at: Path
    range: SearchRange

    @property
    def size(self) -> int | None:
        """How many values it takes; None for a continuous range."""
        return self.range.size


@dataclass(frozen=True)
class Rejection:
    kind: str  # 'invalid' (a rule of the language), 'shape' (inference) or 'budget'
    reason: str


@dataclass(frozen=True)
class Candidate:
    """One point of the space: the values chosen and what checking them found."""

    values: dict[str, Any]
    tree: dict
    seconds: float  # what the static check cost
    spec: ModelSpec | None = None
    info: ModelInfo | None = None
    rejection: Rejection | None = None


@dataclass(frozen=True)
class Survey:
    """Feasibility, parameters and MACs over (part of) the space, for `check`."""

    size: int | None  # number of candidates; None when a float range makes it continuous
    grid: int  # number of grid points (float ranges at their two ends)
    evaluated: int
    enumerated: bool  # every grid point was checked; else a seeded random sample
    feasible: int
    rejected: Counter = field(default_factory=Counter)  # kind -> count
    example: dict[str, str] = field(default_factory=dict)  # kind -> the first reason seen
    params: tuple[int, int] | None = None
    macs: tuple[int, int] | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Space:
    search: Search
    base: dict  # the spec's YAML tree without `search:`
    base_spec: ModelSpec
    dimensions: tuple[Dimension, ...]

    def candidate(self, values: dict[str, Any], fixed: dict[Path, Any] | None = None) -> Candidate:
        """Apply `values` (path -> value) and `fixed` (tree place -> value), then validate,
        infer and hold the result to the budgets."""
        started = time.perf_counter()
        tree = copy.deepcopy(self.base)
        for dim in self.dimensions:
            if dim.path in values:
                assign(tree, dim.at, values[dim.path], self.base_spec)
        for at, value in (fixed or {}).items():
            assign(tree, at, value, self.base_spec)
        spec = info = rejection = None
        try:
            spec = validate_tree(tree, SourceMap())
            info = infer(spec)
        except SpecError as exc:
            kind = "invalid" if spec is None else "shape"
            rejection = Rejection(kind, "; ".join(d.message for d in exc.diagnostics if d.severity == "error"))
        if info is not None:
            over = [f"{what} {count:,} over max_{what} {limit:,}"
                    for what, count, limit in (("params", info.total_params, self.search.max_params),
                                               ("macs", info.total_macs, self.search.max_macs))
                    if limit is not None and count > limit]
            if over:
                rejection = Rejection("budget", "; ".join(over))
        return Candidate(dict(values), tree, time.perf_counter() - started, spec, info, rejection)

    def size(self) -> int | None:
        sizes = [dim.size for dim in self.dimensions]
        return None if None in sizes else math.prod(sizes)

    def survey(self, limit: int = 512, seed: int = 0) -> Survey:
        """Check every grid point when there are at most `limit`, else a seeded sample of `limit`."""
        started = time.perf_counter()
        # Grid points by position: a range of 10**12 integers is never listed.
        sizes = [dim.range.grid_size for dim in self.dimensions]
        points = math.prod(sizes)
        if points <= limit:
            combos: Any = itertools.product(*map(range, sizes))
        else:
            rng = random.Random(seed)
            combos = ([rng.randrange(size) for size in sizes] for _ in range(limit))
        feasible, rejected, example = 0, Counter(), {}
        params, macs = [], []
        for combo in combos:
            result = self.candidate({dim.path: dim.range.grid_value(index) for dim, index in zip(self.dimensions, combo)})
            if result.rejection:
                rejected[result.rejection.kind] += 1
                example.setdefault(result.rejection.kind, result.rejection.reason)
                continue
            feasible += 1
            params.append(result.info.total_params)
            macs.append(result.info.total_macs)
        return Survey(self.size(), points, min(points, limit), points <= limit, feasible, rejected, example,
                      (min(params), max(params)) if params else None, (min(macs), max(macs)) if macs else None,
                      time.perf_counter() - started)


class PathError(ValueError):
    """A path that cannot be followed through the tree (into a number, a list, ...)."""


def compile_space(compiled: CompiledSpec, data: bytes | None = None) -> Space:
    """The search space of a checked spec that has `search:`; SpecError (located) if it is wrong.

    Every path must lead somewhere, and every value a range can produce at its ends (every
    value of a choice) must be accepted by its field: `filters: {choice: [16, "32"]}` fails
    here, not at trial 7. `data` is the spec's text when it is not the file on disk (an
    editor's unsaved buffer).
    """
    search = compiled.spec.search
    assert search is not None, "compile_space needs a spec with search:"
    data = compiled.path.read_bytes() if data is None else data
    tree, source = load_yaml(decode(data))
    base = {key: value for key, value in tree.items() if key != "search"}
    problems = []
    if compiled.spec.training is None:
        problems.append(Diagnostic("error", "search: needs a training: section to train candidates with",
                                   source.key(("search",))))
    elif compiled.spec.training.validation_split == 0:
        problems.append(Diagnostic(
            "error", f"search.metric: {search.metric} is measured on the validation split, but "
            "training.validation_split is 0; set it (e.g. 0.2): candidates are never ranked on the test set",
            source.key(("search", "metric")) if "metric" in tree["search"] else source.key(("search",))))
    dimensions = []
    for path, value_range in search.space.items():
        where = ("search", "space", path)
        try:
            at = _resolve(path, base, compiled.spec)
            assign(copy.deepcopy(base), at, next(value_range.ends())[1], compiled.spec)
        except PathError as exc:
            problems.append(Diagnostic("error", f"search.space: '{path}': {exc}", source.key(where)))
            continue
        dimension = Dimension(path, at, value_range)
        problems += _check_values(dimension, base, compiled.spec, source, where)
        dimensions.append(dimension)
    if problems:
        raise SpecError(problems)
    return Space(search, base, compiled.spec, tuple(dimensions))


def _resolve(path: str, base: dict, spec: ModelSpec) -> Path:
    """'layers.conv1.filters' -> ('layers', 0, 'filters'): the place in the YAML tree."""
    steps = path.split(".")
    if any(not step for step in steps):
        raise PathError("expected keys separated by dots, e.g. layers.conv1.filters")
    if steps[0] not in ROOTS:
        raise PathError(f"a path starts with {', '.join(ROOTS)}{did_you_mean(steps[0], ROOTS)}")
    if steps[0] != "layers":
        return tuple(steps)
    if len(steps) < 3:
        raise PathError("a layer's argument is addressed as layers.<name>.<argument>, e.g. layers.conv1.filters")
    named = {entry["name"]: index for index, entry in enumerate(base["layers"])
             if isinstance(entry, dict) and isinstance(entry.get("name"), str)}
    if steps[1] not in named:
        top_level = {node.name: node.path[1] for node in spec.graph() if len(node.path) == 2}
        if steps[1] in top_level:
            index = top_level[steps[1]]
            raise PathError(f"layers[{index}] has no name of its own ('{steps[1]}' is the default, which "
                            f"changes when a layer is inserted before it); add name: {steps[1]} to it")
        raise PathError(f"no layer is named '{steps[1]}'{did_you_mean(steps[1], named) or _named_list(named)}")
    return ("layers", named[steps[1]], *steps[2:])


def _named_list(named: dict) -> str:
    return f"; named layers: {', '.join(named)}" if named else "; no layer has a name: give it one (name: conv1)"


def assign(tree: dict, at: Path, value: Any, spec: ModelSpec) -> None:
    """Set the value at `at` in a YAML tree, making the mappings on the way explicit.

    A shorthand on the way (`optimizer: adam`) becomes its mapping ({type: adam}); a missing
    one is made from the validated spec's default, so `training.optimizer.learning_rate`
    works when `optimizer` was left out.
    """
    node: Any = tree
    resolved: Any = spec
    for depth, step in enumerate(at[:-1]):
        resolved = _attribute(resolved, step)
        child = node[step] if isinstance(node, list) else node.get(step)
        if child is None or isinstance(child, str):
            type_name = child if isinstance(child, str) else getattr(resolved, "type", None)
            child = {"type": type_name} if isinstance(type_name, str) else {}
            node[step] = child
        elif isinstance(child, list) and isinstance(at[depth + 1], int):
            pass  # a layer, already resolved to its index
        elif not isinstance(child, dict):
            shown = ".".join(str(s) for s in at[:depth + 1])
            raise PathError(f"{shown} holds {_kind(child)}, not a mapping with keys to follow")
        node = child
    if not isinstance(node, dict):
        raise PathError("leads into a list; address a layer by name instead")
    node[at[-1]] = copy.deepcopy(value)


def _attribute(obj: Any, step: str | int) -> Any:
    if isinstance(step, int):
        return obj[step] if isinstance(obj, (list, tuple)) and step < len(obj) else None
    return getattr(obj, step, None) if isinstance(obj, BaseModel) else None


def _kind(value: Any) -> str:
    return {list: "a list", bool: "a boolean", int: "a number", float: "a number"}.get(type(value), "a value")


def _check_values(dim: Dimension, base: dict, spec: ModelSpec, source: SourceMap, where: Path) -> list[Diagnostic]:
    """Each value the range can take at its ends, applied alone to the spec, must validate."""
    values = [(value, source.value((*where, dim.range.key, i))) for i, value in dim.range.ends()]
    failures = []
    for value, mark in values:
        tree = copy.deepcopy(base)
        assign(tree, dim.at, value, spec)
        try:
            validate_tree(tree, SourceMap())
        except SpecError as exc:
            failures.append((value, mark, "; ".join(d.message for d in exc.diagnostics)))
    if failures and len(failures) == len(values) and len({reason for _, _, reason in failures}) == 1:
        # The same complaint for every value: the path is wrong, not the values.
        return [Diagnostic("error", f"search.space: '{dim.path}': {failures[0][2]}", source.key(where))]
    return [Diagnostic("error", f"search.space: '{dim.path}': the value {_show(value)} is not accepted: {reason}", mark)
            for value, mark, reason in failures]


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value).replace("True", "true").replace("False", "false")


def describe(space: Space, survey: Survey, trials: int | None = None) -> list[str]:
    """The survey as lines for `check`: size, what was checked, feasibility, params/MACs range.
    `trials`: how many `tune` will train (search.trials unless --trials says otherwise)."""
    dims = ", ".join(f"{d.path} ({d.range.describe()})" for d in space.dimensions)
    size = f"{survey.size:,} candidates" if survey.size is not None else \
        f"infinitely many candidates ({survey.grid:,} grid points with float ranges at their ends)"
    how = (f"checked all {survey.evaluated:,}" if survey.enumerated
           else f"checked a random sample of {survey.evaluated:,} of {survey.grid:,} grid points (estimates)")
    count = len(space.dimensions)
    lines = [f"search space: {count} dimension{'s' if count != 1 else ''}, {size}: {dims}",
             f"  {how} in {survey.seconds:.2f} s: {survey.feasible:,} feasible, "
             f"{sum(survey.rejected.values()):,} rejected"
             + "".join(f"\n    {count:,} {kind}: e.g. {survey.example[kind]}" for kind, count in survey.rejected.items())]
    if survey.params:
        lines.append(f"  params {survey.params[0]:,} to {survey.params[1]:,}; "
                     f"MACs {survey.macs[0]:,} to {survey.macs[1]:,} (feasible candidates)")
    s = space.search
    budgets = ", ".join(f"{k} {v:,}" for k, v in (("max_params", s.max_params), ("max_macs", s.max_macs)) if v)
    trials = s.trials if trials is None else trials
    lines.append(f"  tune: {trials} trial{'s' if trials != 1 else ''}, {s.goal} {s.metric}" + (f"; budgets: {budgets}" if budgets else ""))
    return lines
