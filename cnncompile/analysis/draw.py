"""`cnncompile draw`: the architecture as a picture, laid out by Graphviz.

Framework-free like `check`: the wiring comes from `spec.graph()` (name, layer, input names, in
execution order), shapes and counts from inference. This module only decides what each node and
edge says; Graphviz's `dot` program does the layout (the `graphviz` package is a thin, pure-Python
wrapper that runs it). Without `dot` installed the DOT source can still be written.
"""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import graphviz

from cnncompile.analysis.inference import ModelInfo
from cnncompile.files import write_bytes
from cnncompile.language.shapes import fmt
from cnncompile.language.layers import LayerSpec

FORMATS = ("svg", "png", "pdf", "dot")
DETAILS = ("compact", "normal", "full")  # compact: name, type, shape; full adds MACs and every argument
RANKDIRS = ("TB", "LR")
INSTALL_HINT = ("install Graphviz (Debian/Ubuntu: apt-get install graphviz; Fedora: dnf install graphviz; "
                "macOS: brew install graphviz)")

Shape = tuple[int | None, ...]
Graph = Sequence[tuple[str, LayerSpec, Sequence[str]]]  # what ModelSpec.graph() yields

# Arguments worth a place on the node even when left at their default: they are what a reader
# looks for first. Everything else is shown only when it differs from Keras's default.
HEADLINE_ARGUMENTS = ("filters", "kernel_size", "pool_size", "units", "rate", "activation", "target_shape")
# Bookkeeping arguments that say nothing about the architecture; shown with --detail full.
_PLUMBING = re.compile(r"_(initializer|regularizer|constraint)$|^seed$")
_IDENTITY_FIELDS = ("type", "name", "inputs")  # already on the node or drawn as edges

class Category(NamedTuple):
    """A kind of layer and its colours; `pattern` matches layer type names."""

    name: str
    pattern: re.Pattern | None
    fill: str
    border: str


# Node colours by what the layer does, matched on the type name so that new layer types get a
# sensible colour without a table to keep in step.
CATEGORIES = (
    Category("convolution", re.compile(r"Conv"), "#dbeafe", "#2563eb"),
    Category("pooling", re.compile(r"Pool"), "#dcfce7", "#15803d"),
    Category("dense", re.compile(r"^Dense$"), "#ffedd5", "#c2410c"),
    Category("normalization", re.compile(r"Normali[sz]ation"), "#f3e8ff", "#7e22ce"),
    Category("activation", re.compile(r"Activation|ReLU|Softmax|^ELU$"), "#fef9c3", "#a16207"),
    Category("regularization", re.compile(r"Dropout|Noise"), "#f1f5f9", "#64748b"),
)
MERGE = Category("merge", None, "#fee2e2", "#b91c1c")  # any layer reading more than one tensor
BLOCK = Category("block", None, "#ccfbf1", "#0f766e")  # a collapsed block use
OTHER = Category("reshaping", None, "#f8fafc", "#94a3b8")
INPUT = Category("input", None, "#e2e8f0", "#334155")


class DrawError(Exception):
    """The drawing cannot be made as asked (e.g. Graphviz missing for an image format)."""


class DotMissing(DrawError):
    """Graphviz's `dot` program is not installed: only DOT source can be written."""

    reason = f"Graphviz's `dot` program is not installed or not on PATH; {INSTALL_HINT}"


@dataclass(frozen=True)
class Node:
    id: str  # the layer's name, the block use's name, or "input"
    kind: str  # layer type; for a collapsed block use, the block's name ("block" when unknown)
    category: Category
    arguments: tuple[str, ...]  # "filters 32", "kernel_size 3×3", ...
    output_shapes: tuple[Shape, ...]
    params: int
    macs: int
    operands: tuple[str, ...] = ()  # the nodes a merge reads, in operand order
    block: tuple[str, ...] = ()  # enclosing block uses, outermost first (drawn as nested boxes)
    layers: int = 1  # layers this node stands for


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    shape: Shape
    operand: int | None  # position among a merge's inputs (Concatenate's order matters)


@dataclass(frozen=True)
class Architecture:
    name: str
    input_shape: Shape
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    info: ModelInfo
    block_of_use: dict[str, str]  # block use (instance) name -> the block it instantiates, when known


def architecture(name: str, graph: Graph, info: ModelInfo, *, detail: str = "normal",
                 collapse_blocks: bool = False) -> Architecture:
    """Nodes and shape-labelled edges from the graph's wiring and inference's numbers.

    With collapse_blocks, every layer that came from a block use is folded into one node per
    outermost use (LayerInfo.block[0]), carrying the use's summed params and MACs and the shapes
    leaving it; edges inside a use disappear.
    """
    graph = list(graph)
    # Which block each use instantiates, when the graph says (node.uses): "res1" is a "residual".
    block_of_use = {use.instance: use.block for node in graph for use in getattr(node, "uses", ())}
    graph = _wiring(graph)
    infos = {layer.name: layer for layer in info.layers}
    blocks = {layer.name: tuple(getattr(layer, "block", ()) or ()) for layer in info.layers}

    def node_of(layer_name: str) -> str:
        if layer_name == "input" or not collapse_blocks or not blocks[layer_name]:
            return layer_name
        return blocks[layer_name][0]

    shapes: dict[str, Shape] = {"input": info.input_shape, **{n: i.output_shape for n, i in infos.items()}}
    read_by: dict[str, list[str]] = {}
    for layer_name, _, inputs in graph:
        for source in inputs:
            read_by.setdefault(source, []).append(layer_name)

    nodes: dict[str, Node] = {"input": Node("input", "Input", INPUT, (), (info.input_shape,), 0, 0)}
    members: dict[str, list[str]] = {}
    for layer_name, layer, inputs in graph:
        node_id = node_of(layer_name)
        if node_id != layer_name:
            members.setdefault(node_id, []).append(layer_name)
            continue
        layer_info = infos[layer_name]
        operands = tuple(node_of(source) for source in inputs) if len(inputs) > 1 else ()
        nodes[node_id] = Node(node_id, layer.type, MERGE if operands else _category(layer.type),
                              arguments(layer, detail), (layer_info.output_shape,), layer_info.params,
                              layer_info.macs, operands, blocks[layer_name])
    for node_id, names in members.items():
        # What leaves the use: members read outside it, or by nothing at all (a model output).
        leaving = [n for n in names if not read_by.get(n) or any(node_of(r) != node_id for r in read_by[n])]
        nodes[node_id] = Node(node_id, block_of_use.get(node_id, "block"), BLOCK, (f"{len(names)} layers",),
                              tuple(dict.fromkeys(shapes[n] for n in leaving)),
                              sum(infos[n].params for n in names), sum(infos[n].macs for n in names),
                              layers=len(names))

    edges: dict[tuple[str, str, str], Edge] = {}
    for layer_name, _, inputs in graph:
        target = node_of(layer_name)
        for position, source_layer in enumerate(inputs):
            source = node_of(source_layer)
            if source != target:
                operand = position if len(inputs) > 1 and target == layer_name else None
                edges.setdefault((source, target, source_layer),
                                 Edge(source, target, shapes[source_layer], operand))
    ordered = [nodes["input"], *(nodes[i] for i in dict.fromkeys(node_of(n) for n, _, _ in graph))]
    return Architecture(name, info.input_shape, tuple(ordered), tuple(edges.values()), info, block_of_use)


def _wiring(graph) -> list[tuple[str, LayerSpec, tuple[str, ...]]]:
    """(name, layer, input names) per layer, whether spec.graph() yields tuples (chains) or
    node objects with .name, .layer and .inputs (graphs with blocks)."""
    return [(node.name, node.layer, tuple(node.inputs)) if hasattr(node, "layer") else
            (node[0], node[1], tuple(node[2])) for node in graph]


def arguments(layer: LayerSpec, detail: str = "normal") -> tuple[str, ...]:
    """The layer's arguments worth reading on a drawing, as 'name value' strings."""
    if detail == "compact":
        return ()
    shown = []
    fields = type(layer).model_fields
    headline_first = sorted(fields, key=lambda f: HEADLINE_ARGUMENTS.index(f) if f in HEADLINE_ARGUMENTS else 99)
    for field_name in headline_first:
        field = fields[field_name]
        value = getattr(layer, field_name)
        if field_name in _IDENTITY_FIELDS or value is None:
            continue
        if detail != "full" and _PLUMBING.search(field_name):
            continue
        if (field_name in HEADLINE_ARGUMENTS or field.is_required() or value != field.default
                or field_name in layer.model_fields_set):
            shown.append(f"{field_name} {_value(value)}")
    return tuple(shown)


def _value(value, nested: bool = False) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        if not nested and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return "×".join(map(str, value))  # a window or stride: 3×3
        return "[" + ", ".join(_value(v, nested=True) for v in value) + "]"  # e.g. [[top, bottom], [left, right]]
    if hasattr(value, "model_dump"):  # a nested spec object, e.g. a regularizer
        return ", ".join(f"{k} {_value(v)}" for k, v in value.model_dump(exclude_none=True).items())
    return str(value)


def _category(layer_type: str) -> Category:
    return next((c for c in CATEGORIES if c.pattern.search(layer_type)), OTHER)


def short_shape(shape: Shape) -> str:
    """Edge labels drop the batch axis: 26×26×32."""
    return "×".join(str(d) for d in shape[1:]) or "scalar"


def human(count: int) -> str:
    """2,794,240 -> 2.79 M: for MAC totals, where the leading digits are what matters."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.3g} {suffix}"
    return str(count)


def to_dot(arch: Architecture, *, rankdir: str = "TB", detail: str = "normal", dpi: int | None = None) -> graphviz.Digraph:
    """The Graphviz graph: HTML-like labels, one colour per kind of layer, nested boxes for
    expanded blocks, and a header with the model's totals and a colour key."""
    dot = graphviz.Digraph(arch.name, graph_attr={
        "rankdir": rankdir, "fontname": "Helvetica", "labelloc": "t", "pad": "0.2", "nodesep": "0.3", "ranksep": "0.35",
        "label": _header(arch), "bgcolor": "white", **({"dpi": str(dpi)} if dpi else {})},
        node_attr={"shape": "plain", "fontname": "Helvetica", "fontsize": "11"},
        edge_attr={"fontname": "Helvetica", "fontsize": "9", "color": "#64748b", "fontcolor": "#334155",
                   "arrowsize": "0.7"})
    _emit_nodes(dot, arch.nodes, (), detail, arch.block_of_use)
    for edge in arch.edges:
        label = short_shape(edge.shape)
        dot.edge(edge.source, edge.target, label=f" [{edge.operand}] {label} " if edge.operand is not None
                 else f" {label} ")
    return dot


def _emit_nodes(container: graphviz.Digraph, nodes: Sequence[Node], prefix: tuple[str, ...], detail: str,
                block_of_use: dict[str, str]) -> None:
    """Nodes at this nesting level, then one dashed box (a Graphviz cluster) per block use inside it."""
    children: dict[str, None] = {}
    for node in nodes:
        if node.block == prefix:
            container.node(node.id, label=_label(node, detail))
        elif node.block[:len(prefix)] == prefix:
            children[node.block[len(prefix)]] = None
    for child in children:
        path = (*prefix, child)
        inside = [n for n in nodes if n.block[:len(path)] == path]
        with container.subgraph(name="cluster_" + "/".join(path)) as cluster:
            label = f"{child} ({block_of_use[child]})" if child in block_of_use else child
            cluster.attr(label=label, style="rounded,dashed", color=BLOCK.border, fontcolor=BLOCK.border, fontsize="10")
            _emit_nodes(cluster, inside, path, detail, block_of_use)


def _label(node: Node, detail: str) -> str:
    fill, border = node.category.fill, node.category.border
    e = html.escape
    rows = [f'<TR><TD ALIGN="LEFT"><B>{e(node.id)}</B></TD>'
            f'<TD ALIGN="RIGHT"><FONT COLOR="{border}">{e(node.kind)}</FONT></TD></TR>']
    small = '<FONT POINT-SIZE="9">{}</FONT>'
    if node.operands:
        rows.append(f'<TR><TD COLSPAN="2" ALIGN="LEFT">{small.format(e("of " + ", ".join(node.operands)))}</TD></TR>')
    for line in _wrap(node.arguments, 38):
        rows.append(f'<TR><TD COLSPAN="2" ALIGN="LEFT">{small.format(e(line))}</TD></TR>')
    shapes = " | ".join(fmt(s) for s in node.output_shapes)
    if detail == "compact" or node.category is INPUT:
        rows.append(f'<TR><TD COLSPAN="2" ALIGN="LEFT">{small.format(e(shapes))}</TD></TR>')
    else:
        counts = f"{node.params:,} params" + (f" · {human(node.macs)} MACs" if detail == "full" else "")
        rows.append(f'<TR><TD ALIGN="LEFT">{small.format(e(shapes))}</TD>'
                    f'<TD ALIGN="RIGHT">{small.format(e(counts))}</TD></TR>')
    border_width = "2" if node.category is BLOCK else "1"
    return (f'<<TABLE BORDER="{border_width}" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" STYLE="ROUNDED" '
            f'BGCOLOR="{fill}" COLOR="{border}">{"".join(rows)}</TABLE>>')


def _wrap(items: Iterable[str], width: int) -> list[str]:
    """Join arguments with ' · ' into lines of about `width` characters."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 3 + len(item) <= width:
            lines[-1] += " · " + item
        else:
            lines.append(item)
    return lines


def _header(arch: Architecture) -> str:
    info, e = arch.info, html.escape
    layers = sum(node.layers for node in arch.nodes if node.category is not INPUT)
    lines = (f"{info.total_params:,} params ({info.trainable_params:,} trainable) · "
             f"{human(info.total_macs)} MACs per image",
             f"{layers} layers · in {fmt(arch.input_shape)} → out {fmt(info.output_shape)}")
    used = list(dict.fromkeys(node.category for node in arch.nodes if node.category is not INPUT))
    key = "".join(f'<TD BGCOLOR="{fill}" COLOR="{border}" BORDER="1" STYLE="ROUNDED">'
                  f'<FONT POINT-SIZE="9"> {e(name)} </FONT></TD>' for name, _, fill, border in used)
    text = "".join(f'<TR><TD><FONT POINT-SIZE="10">{e(line)}</FONT></TD></TR>' for line in lines)
    return (f'<<TABLE BORDER="0" CELLSPACING="2" CELLPADDING="1">'
            f'<TR><TD><FONT POINT-SIZE="16"><B>{e(arch.name)}</B></FONT></TD></TR>{text}'
            f'<TR><TD ALIGN="CENTER"><TABLE BORDER="0" CELLSPACING="4" CELLPADDING="2" FIXEDSIZE="FALSE"><TR>{key}</TR>'
            f'</TABLE></TD></TR></TABLE>>')


@dataclass(frozen=True)
class Drawing:
    path: Path
    nodes: int
    note: str | None = None  # said to the user, e.g. that dot was missing for a .dot file


def render(dot: graphviz.Digraph, fmt_: str) -> bytes:
    """The drawing in `fmt_` ('dot' is the source itself). DrawError when `dot` is missing."""
    if fmt_ == "dot":
        return dot.source.encode()
    try:
        return dot.pipe(format=fmt_)
    except graphviz.ExecutableNotFound:
        raise DotMissing(f"cannot render .{fmt_}: {DotMissing.reason}, or write the DOT source with -o FILE.dot") from None
    except graphviz.CalledProcessError as exc:
        message = (exc.stderr or b"").decode(errors="replace").strip()
        raise DrawError(f"Graphviz's dot failed to render .{fmt_}: {message or exc}") from None


def from_compiled(compiled, *, detail: str = "normal", collapse_blocks: bool = False) -> Architecture:
    return architecture(compiled.spec.name, compiled.spec.graph(), compiled.info, detail=detail,
                        collapse_blocks=collapse_blocks)


def draw(compiled, out: Path, *, rankdir: str = "TB", detail: str = "normal",
         collapse_blocks: bool = False) -> Drawing:
    """Write the drawing of a compiled spec to `out`; its suffix picks the format."""
    fmt_ = out.suffix.lower().lstrip(".")
    if fmt_ not in FORMATS:
        raise DrawError(f"cannot tell the format of {out}: use a name ending in "
                        + ", ".join(f".{f}" for f in FORMATS))
    arch = from_compiled(compiled, detail=detail, collapse_blocks=collapse_blocks)
    # PNGs at 2x the default 72 dpi stay sharp on today's screens.
    dot = to_dot(arch, rankdir=rankdir, detail=detail, dpi=144 if fmt_ == "png" else None)
    write_bytes(out, render(dot, fmt_))
    note = None
    if fmt_ == "dot" and shutil.which("dot") is None:
        note = f"Graphviz's `dot` program is not installed, so only the DOT source was written; {INSTALL_HINT} " \
               f"to render it (dot -Tsvg {out} -o {out.with_suffix('.svg')})"
    return Drawing(out, len(arch.nodes), note)


def svg(compiled, *, rankdir: str = "TB", detail: str = "normal", collapse_blocks: bool = False) -> str:
    """The drawing as SVG text without its XML prolog, ready to inline in HTML."""
    arch = from_compiled(compiled, detail=detail, collapse_blocks=collapse_blocks)
    text = render(to_dot(arch, rankdir=rankdir, detail=detail), "svg").decode()
    return text[text.index("<svg"):]
