"""Repeated structure -> `blocks:`, found from the layer names a model already has.

Keras Applications (and most hand-written models) name a repeated unit's layers
`<stage>_block<N>_<local>`: `conv2_block1_1_conv` is layer `1_conv` of instance 1 of the
chain `conv2_block`. Discovery works in four steps, and gives up (leaves layers flat)
wherever a step's condition fails:

1. Instances: consecutive layers sharing `<stem>block<N>_`, with two or more layers, one
   tensor coming in, and only their last layer read from outside.
2. Blocks: instances whose (local name, type) sequences are all subsequences of one of them
   are one block. An argument that differs between instances becomes a parameter (two that
   agree wherever both exist are one; one that is always k times another is `${k * p}`);
   a layer that some instances lack gets `when:`. Every instance is re-expanded from the
   template, exactly as the language would, and must wire up identically.
3. Chains: the instances of one stem, numbered 1..n and each reading the one before, become
   one use with `repeat`; an argument that differs only for the first is
   `${a if index == 1 else b}`.
4. Stages: two or more chains of the same block, each named `<stage>_block...`, become uses
   of a second block whose parameters are what differs between the chains (and `blocks`, the
   repeat count): `{block: stage, name: conv3, filters: 128, blocks: 4}`.

model_import.py still compares the expanded result with the flat model, layer by layer.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from cnncompile.importer.imported import PAIRS, ImportedLayer, ImportedModel, compact, layer_class, plain
from cnncompile.language.blocks import RESERVED

LOCAL = r"(?P<local>[A-Za-z0-9_][A-Za-z0-9_.\-]*)"
INSTANCE = re.compile(rf"^(?P<stem>(?:(?P<stage>.+?)_)?block_?)(?P<index>\d+)_{LOCAL}$")
"""Keras Applications' `conv2_block1_1_conv`, `block_3_expand`: a chain of blocks, in a stage."""
NUMBERED = re.compile(rf"^(?P<stem>[A-Za-z]+(?:_[A-Za-z]+)*_?)(?P<index>\d+)_{LOCAL}$")
"""Otherwise a word and a number, `res2_1_conv`: a chain without stages."""
STAGED = re.compile(rf"^(?P<stem>(?P<stage>[A-Za-z]+\d+)_)(?P<index>\d+)_{LOCAL}$")
"""A word, a number and another number, PyTorch's `layer2_0_conv1` (module layer2.0): the
second number counts the units of a stage. Also fits `res2_1_conv` (unit res2, layer 1_conv),
hence tried as a second reading (STRATEGIES)."""

STRATEGIES = ((INSTANCE, NUMBERED), (INSTANCE, STAGED, NUMBERED))
"""The readings of the names that are tried; model_import keeps the shortest exact result."""


def _key(name: str, patterns: tuple[re.Pattern, ...]) -> tuple[str, str | None, int] | None:
    match = next((m for m in (p.match(name) for p in patterns) if m), None)
    if match is None:
        return None
    return match["stem"], match.groupdict().get("stage"), int(match["index"])
ABSENT = object()


@dataclass
class Instance:
    stem: str
    stage: str | None
    index: int
    layers: list[ImportedLayer]
    outside: str  # the one tensor it reads from outside (a full layer name, or `input`)

    @property
    def name(self) -> str:
        return f"{self.stem}{self.index}"

    @property
    def locals(self) -> list[tuple[str, str]]:
        return [(self.local(layer.name), layer.type) for layer in self.layers]

    def local(self, name: str) -> str:
        return name[len(self.name) + 1:]

    def refs(self, layer: ImportedLayer) -> list[str]:
        """The layer's inputs as the block sees them: a local name, or `input`."""
        mine = {l.name for l in self.layers}
        return [self.local(ref) if ref in mine else "input" for ref in layer.inputs]


def _instances(model: ImportedModel, patterns: tuple[re.Pattern, ...]) -> list[Instance]:
    """Step 1: every run of layers that is a well-formed instance; a stem with any malformed
    instance (or one split in two runs) contributes none."""
    runs: list[tuple[tuple[str, str | None, int], list[ImportedLayer]]] = []
    for layer in model.layers:
        key = _key(layer.name, patterns)
        if key and runs and runs[-1][0] == key:
            runs[-1][1].append(layer)
        else:
            runs.append((key, [layer]))
    readers: dict[str, set[str]] = {}
    for layer in model.layers:
        for ref in layer.inputs:
            readers.setdefault(ref, set()).add(layer.name)
    seen: Counter = Counter(key for key, _ in runs if key)
    bad_stems = {key[0] for key, count in seen.items() if count > 1}
    found = []
    for key, layers in runs:
        if key is None:
            continue
        names = {layer.name for layer in layers}
        outside = {ref for layer in layers for ref in layer.inputs if ref not in names}
        leaks = any(readers.get(layer.name, set()) - names for layer in layers[:-1])
        if len(layers) < 2:  # a lone layer is not worth a block, and says nothing about the others
            continue
        if len(outside) != 1 or leaks:
            bad_stems.add(key[0])
            continue
        found.append(Instance(key[0], key[1], key[2], layers, outside.pop()))
    return [instance for instance in found if instance.stem not in bad_stems]


def _is_subsequence(short: list, long: list) -> bool:
    rest = iter(long)
    return all(item in rest for item in short)


@dataclass
class Param:
    name: str
    values: list[Any]  # per instance; ABSENT where no layer of the instance uses it
    default: Any = None


@dataclass
class Block:
    name: str
    instances: list[Instance]
    template: list[dict[str, Any]]
    params: list[Param]

    def arguments(self, position: int) -> dict[str, Any]:
        """The parameter values of instance `position` (all of them, defaults included)."""
        return {p.name: p.values[position] for p in self.params}


def _default(kind: str, key: str) -> Any:
    value = layer_class(kind).model_fields[key].default
    return compact(value) if key in PAIRS else plain(value)


def _merge(params: list[Param], values: list[Any]) -> tuple[Param, int] | None:
    """An existing parameter this vector of values is, or is a multiple of (filling the
    parameter's gaps, where its layer is absent, from these values)."""
    for param in params:
        for factor in (1, 2, 3, 4, 6, 8):
            if factor > 1 and not all(isinstance(v, int) and not isinstance(v, bool)
                                      for v in (*param.values, *values) if v is not ABSENT):
                break
            fits = all(v is ABSENT or p is ABSENT or (type(v) is type(p) and v == factor * p)
                       for v, p in zip(values, param.values))
            fills = all(v is ABSENT or p is not ABSENT or factor == 1 or v % factor == 0
                        for v, p in zip(values, param.values))
            if fits and fills:
                param.values = [p if p is not ABSENT else (ABSENT if v is ABSENT else v // factor if factor > 1 else v)
                                for v, p in zip(values, param.values)]
                return param, factor
    return None


def _magnitude(values: list[Any]) -> float:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(numbers) if numbers else 0.0


def _identifier(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return name if re.match(r"^[A-Za-z_]", name) else f"p{name}"


def _unique(name: str, taken: set[str], reserved: tuple[str, ...] = RESERVED) -> str:
    candidate, n = name, 2
    while candidate in taken or candidate in reserved:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _block(name: str, instances: list[Instance]) -> Block | None:
    """Step 2: one template for `instances`, or None when re-expanding it would not give
    every instance back exactly."""
    seed = max(instances, key=lambda i: len(i.layers))
    by_local = [{i.local(l.name): l for l in i.layers} for i in instances]
    params: list[Param] = []
    flags: list[Param] = []  # when: one per pattern of presence (a projection's conv and bn share one)
    taken: set[str] = set()
    template = []
    presence_params: dict[tuple[bool, ...], str] = {}
    previous = "input"
    varying: list[tuple[dict[str, Any], str, str, list[Any]]] = []  # (item, key, local, values)
    for layer in seed.layers:
        local = seed.local(layer.name)
        item: dict[str, Any] = {"type": layer.type, "name": local}
        keys = list(dict.fromkeys(k for found in by_local if local in found for k in found[local].args))
        for key in keys:
            values = [found[local].args.get(key, _default(layer.type, key)) if local in found else ABSENT
                      for found in by_local]
            present = [v for v in values if v is not ABSENT]
            item[key] = present[0]
            if any(v != present[0] for v in present):
                varying.append((item, key, local, values))
        refs = seed.refs(layer)
        if refs != [previous]:
            item["inputs"] = refs
        presence = tuple(local in found for found in by_local)
        if not all(presence):
            if presence not in presence_params:
                flag = _unique(_identifier(f"with_{local}"), taken)
                presence_params[presence] = flag
                flags.append(Param(flag, list(presence)))
            item["when"] = f"${{{presence_params[presence]}}}"
        template.append(item)
        previous = local
    # Smallest values first, so that the 4x wider expansion reads `${4 * filters}`.
    for item, key, local, values in sorted(varying, key=lambda v: _magnitude(v[3])):
        merged = _merge(params, values)
        if merged is None:
            params.append(Param(_unique(_identifier(key if key not in taken else f"{key}_{local}"), taken), values))
            merged = params[-1], 1
        param, factor = merged
        item[key] = f"${{{param.name}}}" if factor == 1 else f"${{{factor} * {param.name}}}"
    params += flags
    for param in params:
        counts = Counter(repr(v) for v in param.values if v is not ABSENT)
        common = counts.most_common(1)[0][0]
        param.default = next(v for v in param.values if repr(v) == common)
        param.values = [param.default if v is ABSENT else v for v in param.values]
    block = Block(name, instances, template, params)
    return block if all(_reexpands(block, position) for position in range(len(instances))) else None


def _reexpands(block: Block, position: int) -> bool:
    """Expand the template for one instance as graph.py does (a dropped layer's name stands
    for its first input) and compare the wiring with the instance's own."""
    instance = block.instances[position]
    arguments = block.arguments(position)
    actual = {instance.local(l.name): (l.type, instance.refs(l)) for l in instance.layers}
    names = {"input": "input"}
    previous = "input"
    expanded = []
    for item in block.template:
        flag = item.get("when")
        inputs = [names[ref] for ref in item["inputs"]] if "inputs" in item else [previous]
        if flag is not None and not arguments[flag[2:-1]]:
            names[item["name"]] = previous = inputs[0]
            continue
        expanded.append(item["name"])
        if actual.get(item["name"], (None, None))[1] != inputs:
            return False
        names[item["name"]] = previous = item["name"]
    return expanded == list(actual) and previous == instance.local(instance.layers[-1].name)


def _clusters(instances: list[Instance]) -> list[list[Instance]]:
    clusters: list[tuple[list, list[Instance]]] = []
    for instance in sorted(instances, key=lambda i: -len(i.layers)):
        for template, members in clusters:
            if _is_subsequence(instance.locals, template):
                members.append(instance)
                break
        else:
            clusters.append((instance.locals, [instance]))
    return [members for _, members in clusters if len(members) > 1]


def _block_name(instances: list[Instance], taken: set[str]) -> str:
    """The last word of its instances' stem: `conv2_block` -> `block`, `layer1_` -> `layer`."""
    stems = Counter(_identifier(re.sub(r"(?<=[A-Za-z])\d+$", "", i.stem.rstrip("_").split("_")[-1]))
                    for i in instances)
    return _unique(stems.most_common(1)[0][0] if stems else "block", taken, ())


@dataclass
class Chain:
    """Step 3: consecutive instances of one stem, as one use."""

    block: Block
    positions: list[int]  # into block.instances, by index

    @property
    def first(self) -> Instance:
        return self.block.instances[self.positions[0]]

    def forms(self) -> dict[str, tuple[Any, Any]] | None:
        """Per parameter (value of the first instance, value of the others); None if the
        others differ among themselves."""
        forms = {}
        for param in self.block.params:
            values = [param.values[p] for p in self.positions]
            if any(v != values[-1] for v in values[1:]):
                return None
            forms[param.name] = (values[0], values[-1])
        return forms


def _chains(block: Block) -> list[Chain]:
    by_stem: dict[str, list[int]] = {}
    for position, instance in enumerate(block.instances):
        by_stem.setdefault(instance.stem, []).append(position)
    chains = []
    for positions in by_stem.values():
        positions.sort(key=lambda p: block.instances[p].index)
        run = [positions[0]]
        for p in positions[1:]:
            before, this = block.instances[run[-1]], block.instances[p]
            if this.index == before.index + 1 and this.outside == before.layers[-1].name:
                run.append(p)
            else:
                chains.append(Chain(block, run))
                run = [p]
        chains.append(Chain(block, run))
    return chains


def _expression(first: Any, rest: Any, name: str | None) -> Any:
    """The value of a chain's argument, `name` standing for the first instance's value when
    it differs between chains."""
    if first == rest and name is None:
        return first
    if first == rest:
        return f"${{{name}}}"
    if name is None and isinstance(first, bool) and isinstance(rest, bool):
        return "${index == 1}" if first else "${index != 1}"
    head = name if name is not None else _literal(first)
    return f"${{{head} if index == 1 else {_literal(rest)}}}"


def _literal(value: Any) -> str:
    return repr(value) if not isinstance(value, (list, tuple)) else repr(list(value))


def _numbered(stem: str, start: int) -> str:
    """The name of instance `index` (counted from 1) of a chain numbered from `start`."""
    if start == 1:
        return f"{stem}${{index}}"
    return f"{stem}${{index - 1}}" if start == 0 else f"{stem}${{index + {start - 1}}}"


@dataclass
class Unit:
    """A use written at the top level, standing for `layers` of the model."""

    item: dict[str, Any]
    layers: list[ImportedLayer]
    outside: str


def _chain_units(block: Block, chain: Chain) -> list[Unit]:
    defaults = {p.name: p.default for p in block.params}
    forms = chain.forms()
    instances = [block.instances[p] for p in chain.positions]
    layers = [l for i in instances for l in i.layers]
    if forms is not None and len(instances) > 1:
        item = {"block": block.name, "name": _numbered(chain.first.stem, chain.first.index), "repeat": len(instances)}
        for name, (first, rest) in forms.items():
            if not (first == rest == defaults[name]):
                item[name] = _expression(first, rest, None)
        return [Unit(item, layers, chain.first.outside)]
    units = []
    for position, instance in zip(chain.positions, instances):
        item = {"block": block.name, "name": instance.name}
        item.update({k: v for k, v in block.arguments(position).items() if v != defaults[k]})
        units.append(Unit(item, instance.layers, instance.outside))
    return units


def _stage(block: Block, chains: list[Chain], taken: set[str]) -> tuple[dict[str, Any], list[Unit]] | None:
    """Step 4: chains that differ only in their parameters' values as uses of one block."""
    forms = [chain.forms() for chain in chains]
    if (len(chains) < 2 or all(len(c.positions) == 1 for c in chains) or any(f is None for f in forms)
            or any(c.first.stage is None for c in chains) or len({c.first.index for c in chains}) != 1):
        return None
    inner_stems = {c.first.stem[len(c.first.stage) + 1:] for c in chains}
    if len(inner_stems) != 1:
        return None
    defaults = {p.name: p.default for p in block.params}
    params: dict[str, list[Any]] = {}
    use: dict[str, Any] = {"block": block.name, "name": _numbered(inner_stems.pop(), chains[0].first.index),
                           "repeat": "${blocks}"}
    for param in block.params:
        firsts = [f[param.name][0] for f in forms]
        rests = [f[param.name][1] for f in forms]
        same_first, same_rest = len(set(map(repr, firsts))) == 1, len(set(map(repr, rests))) == 1
        if same_rest and same_first:
            if not firsts[0] == rests[0] == defaults[param.name]:
                use[param.name] = _expression(firsts[0], rests[0], None)
        elif same_rest:
            params[param.name] = firsts
            use[param.name] = _expression(None, rests[0], param.name) if any(
                f != r for f, r in zip(firsts, rests)) else f"${{{param.name}}}"
        elif all(f == r for f, r in zip(firsts, rests)):
            params[param.name] = firsts
            use[param.name] = f"${{{param.name}}}"
        else:
            return None
    count = "blocks" if "blocks" not in params else "blocks_count"
    use["repeat"] = f"${{{count}}}"
    params[count] = [len(c.positions) for c in chains]
    stage_defaults = {}
    for name, values in params.items():
        counts = Counter(repr(v) for v in values)
        stage_defaults[name] = next(v for v in values if repr(v) == counts.most_common(1)[0][0])
    stage_name = _unique("stage", taken, ())
    units = []
    for position, chain in enumerate(chains):
        item = {"block": stage_name, "name": chain.first.stage}
        item.update({n: v[position] for n, v in params.items() if v[position] != stage_defaults[n]})
        instances = [block.instances[p] for p in chain.positions]
        units.append(Unit(item, [l for i in instances for l in i.layers], chain.first.outside))
    return {"params": stage_defaults, "layers": [use]}, units


def fold(model: ImportedModel, patterns: tuple[re.Pattern, ...] = STRATEGIES[0]
         ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(blocks, layers) for `model`, reading its names with `patterns`; no blocks when no
    repeated structure is found."""
    taken: set[str] = set()
    blocks: dict[str, dict[str, Any]] = {}
    units: list[Unit] = []
    for members in _clusters(_instances(model, patterns)):
        members.sort(key=lambda i: model.layers.index(i.layers[0]))
        block = _block(_block_name(members, taken), members)
        if block is None:
            continue
        blocks[block.name] = {"params": {p.name: p.default for p in block.params}, "layers": block.template}
        chains = _chains(block)
        staged = _stage(block, chains, taken)
        if staged is not None:
            stage_block, stage_units = staged
            blocks[stage_units[0].item["block"]] = stage_block
            units.extend(stage_units)
        else:
            units.extend(u for chain in chains for u in _chain_units(block, chain))
    starts = {id(unit.layers[0]): unit for unit in units}
    inside = {id(layer) for unit in units for layer in unit.layers}
    layers: list[dict[str, Any]] = []
    previous = "input"
    for layer in model.layers:
        if id(layer) in starts:
            unit = starts[id(layer)]
            item = dict(unit.item)
            if unit.outside != previous:
                item["inputs"] = [unit.outside]
            layers.append(item)
            previous = unit.layers[-1].name
        elif id(layer) not in inside:
            layers.append(layer.entry(previous))
            previous = layer.name
    return blocks, layers
