"""`cnncompile draw`: real subprocesses, real Graphviz, real files; block collapsing on a hand-built graph."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from typing import Literal

import pytest

from cnncompile.analysis import draw
from cnncompile.analysis.inference import LayerInfo, ModelInfo
from cnncompile.language.layers import Conv2D, Dense, Flatten, LayerSpec, MaxPooling2D, ZeroPadding2D
from tests.conftest import EXAMPLES, FRAMEWORKS, ROOT, modules_imported_by, run_cli

SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(path) -> list[str]:
    return [t.text for t in ET.parse(path).getroot().iter(f"{SVG}text") if t.text]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_draw_every_example_to_svg_and_png(path, tmp_path):
    layers = json.loads(run_cli("check", "--json", str(path)).stdout)["layers"]
    svg = tmp_path / "model.svg"
    result = run_cli("draw", str(path), "-o", str(svg))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {svg} ({len(layers) + 1} nodes)\n"
    texts = svg_texts(svg)
    for layer in layers:  # every layer: its name, type, output shape and parameter count
        assert layer["name"] in texts and layer["type"] in texts
        shape = "(" + ", ".join("None" if d is None else str(d) for d in layer["output_shape"]) + ")"
        assert shape in texts, (layer["name"], shape)
        assert f"{layer['params']:,} params" in texts, layer["name"]
    # one edge per input of every layer, labelled with the shape it carries (batch axis dropped)
    assert len(ET.parse(svg).getroot().findall(f".//{SVG}g[@class='edge']")) == sum(len(layer["inputs"]) for layer in layers)
    stripped = {t.strip() for t in texts}
    for layer in layers[:-1]:  # a merge's operand edges are numbered: "[1] 14×14×48"
        label = "×".join(map(str, layer["output_shape"][1:]))
        assert any(text == label or text.endswith(f"] {label}") for text in stripped), layer["name"]

    png = tmp_path / "model.png"
    result = run_cli("draw", str(path), "-o", str(png), "--rankdir", "LR")
    assert result.returncode == 0, result.stderr
    from PIL import Image

    with Image.open(png) as image:
        image.load()
        assert image.format == "PNG" and image.width > image.height > 200  # left to right: wide


def test_seed_drawing_says_what_matters():
    from cnncompile.analysis.check import compile_file

    arch = draw.from_compiled(compile_file(ROOT / "examples" / "mnist_cnn.yaml"))
    conv = arch.nodes[1]
    assert (conv.id, conv.kind, conv.arguments, conv.output_shapes, conv.params) == (
        "conv2d", "Conv2D", ("filters 32", "kernel_size 3×3", "activation relu"), ((None, 26, 26, 32),), 320)
    assert [(e.source, e.target, draw.short_shape(e.shape)) for e in arch.edges][:2] == [
        ("input", "conv2d", "28×28×1"), ("conv2d", "max_pooling2d", "26×26×32")]
    header = draw._header(arch)
    assert "93,322 params (93,322 trainable) · 2.79 M MACs per image" in header
    assert "8 layers · in (None, 28, 28, 1) → out (None, 10)" in header
    assert "> convolution <" in header and "> dense <" in header  # the colour key names what is drawn


@pytest.mark.parametrize("layer, detail, expected", [
    (Conv2D(filters=8, kernel_size=5, strides=2, padding="same"), "normal",
     ("filters 8", "kernel_size 5×5", "strides 2×2", "padding same")),
    # initializers are bookkeeping: shown only in full detail
    (Dense(units=10, kernel_initializer="he_normal", use_bias=False), "normal", ("units 10", "use_bias false")),
    (Dense(units=10, kernel_initializer="he_normal", use_bias=False), "full",
     ("units 10", "use_bias false", "kernel_initializer he_normal")),
    (MaxPooling2D(), "normal", ("pool_size 2×2",)),  # the default window is still worth reading
    (ZeroPadding2D(padding=[[1, 2], [3, 4]]), "normal", ("padding [[1, 2], [3, 4]]",)),  # not 1×2, 3×4
    (Flatten(), "normal", ()),
    (Conv2D(filters=8, kernel_size=3), "compact", ()),
])
def test_arguments_shown(layer, detail, expected):
    assert draw.arguments(layer, detail) == expected


# --- blocks and merges on a hand-built graph (ModelInfo.layers[i].block / merge layers are coming) ---

class Add(LayerSpec):  # stands in for the graphs issue's merge layer: reads a list of tensors
    type: Literal["Add"] = "Add"


def residual_model():
    """input -> stem -> [res1: a, b, add(b, stem)] -> [res2: [inner: c], add2(c, res1/add)] -> flatten -> dense."""
    def info(name, type_, shape, params, block=()):
        return LayerInfo(name, type_, (None, *shape), params, params, params * 10, None, block=block)

    graph = [
        ("stem", Conv2D(filters=4, kernel_size=3, padding="same"), ["input"]),
        ("res1_a", Conv2D(filters=4, kernel_size=3, padding="same"), ["stem"]),
        ("res1_b", Conv2D(filters=4, kernel_size=3, padding="same"), ["res1_a"]),
        ("res1_add", Add(), ["res1_b", "stem"]),
        ("res2_c", Conv2D(filters=4, kernel_size=1), ["res1_add"]),
        ("res2_add", Add(), ["res2_c", "res1_add"]),
        ("flatten", Flatten(), ["res2_add"]),
        ("dense", Dense(units=10), ["flatten"]),
    ]
    layers = (info("stem", "Conv2D", (8, 8, 4), 40),
              info("res1_a", "Conv2D", (8, 8, 4), 148, ("res1",)),
              info("res1_b", "Conv2D", (8, 8, 4), 148, ("res1",)),
              info("res1_add", "Add", (8, 8, 4), 0, ("res1",)),
              info("res2_c", "Conv2D", (8, 8, 4), 20, ("res2", "inner")),
              info("res2_add", "Add", (8, 8, 4), 0, ("res2",)),
              info("flatten", "Flatten", (256,), 0),
              info("dense", "Dense", (10,), 2570))
    return graph, ModelInfo("resnetish", (None, 8, 8, 1), layers)


def test_blocks_collapse_to_one_node_per_use():
    graph, info = residual_model()
    arch = draw.architecture("resnetish", graph, info, collapse_blocks=True)
    assert [n.id for n in arch.nodes] == ["input", "stem", "res1", "res2", "flatten", "dense"]
    res1, res2 = arch.nodes[2], arch.nodes[3]
    assert (res1.kind, res1.params, res1.macs, res1.output_shapes, res1.layers) == (
        "block", 296, 2960, ((None, 8, 8, 4),), 3)
    assert (res2.params, res2.layers) == (20, 2)  # the nested use folds into its outermost one
    # edges between collapsed nodes only, each once, labelled with the shape that crosses
    assert [(e.source, e.target, draw.short_shape(e.shape)) for e in arch.edges] == [
        ("input", "stem", "8×8×1"), ("stem", "res1", "8×8×4"), ("res1", "res2", "8×8×4"),
        ("res2", "flatten", "8×8×4"), ("flatten", "dense", "256")]
    source = draw.to_dot(arch).source
    assert "cluster" not in source and "3 layers" in source and "296 params" in source


def as_nodes(graph, uses: dict[str, tuple[tuple[str, str], ...]]):
    """The graph as node objects (.name, .layer, .inputs, .uses), the form graphs with blocks take."""
    from types import SimpleNamespace as Object

    return [Object(name=name, layer=layer, inputs=tuple(inputs),
                   uses=tuple(Object(block=block, instance=instance) for block, instance in uses.get(name, ())))
            for name, layer, inputs in graph]


def test_blocks_expanded_draw_as_nested_boxes_and_merges_show_operands():
    graph, info = residual_model()
    residual, stage = ("residual", "res1"), ("stage", "res2")
    graph = as_nodes(graph, {"res1_a": (residual,), "res1_b": (residual,), "res1_add": (residual,),
                             "res2_c": (stage, ("bottleneck", "inner")), "res2_add": (stage,)})
    arch = draw.architecture("resnetish", graph, info)
    assert len(arch.nodes) == 9
    add = next(n for n in arch.nodes if n.id == "res1_add")
    assert add.operands == ("res1_b", "stem") and add.category == draw.MERGE
    into_add = [(e.source, e.operand) for e in arch.edges if e.target == "res1_add"]
    assert into_add == [("res1_b", 0), ("stem", 1)]
    source = draw.to_dot(arch).source
    assert 'label="res1 (residual)"' in source and 'label="inner (bottleneck)"' in source
    assert draw.architecture("r", graph, info, collapse_blocks=True).nodes[2].kind == "residual"
    assert "subgraph cluster_res1 {" in source and 'subgraph "cluster_res2/inner" {' in source
    assert source.index("subgraph cluster_res2 {") < source.index('subgraph "cluster_res2/inner" {')
    assert "of res1_b, stem" in source and "[1] 8×8×4" in source
    svg = draw.render(draw.to_dot(arch), "svg").decode()  # and dot accepts it
    assert svg.count('class="cluster"') == 3


# --- framework-free, and graceful without Graphviz ---

def test_draw_imports_no_framework(tmp_path):
    out = tmp_path / "m.svg"
    assert modules_imported_by("draw", "examples/mnist_cnn.yaml", "-o", str(out), watch=(*FRAMEWORKS, "numpy")) == []
    assert out.read_text().rstrip().endswith("</svg>")  # and it did draw


def test_without_dot_the_source_is_still_written(tmp_path):
    no_dot = {"PATH": str(tmp_path / "empty-bin")}  # the CLI runs by absolute interpreter path
    result = run_cli("draw", "examples/mnist_cnn.yaml", "-o", str(tmp_path / "m.dot"), env=no_dot)
    assert result.returncode == 0, result.stderr
    assert "note: Graphviz's `dot` program is not installed, so only the DOT source was written; " \
           "install Graphviz (Debian/Ubuntu: apt-get install graphviz" in result.stderr
    assert (tmp_path / "m.dot").read_text().startswith("digraph mnist_cnn {")

    result = run_cli("draw", "examples/mnist_cnn.yaml", "-o", str(tmp_path / "m.png"), env=no_dot)
    assert result.returncode == 1
    assert result.stderr == ("examples/mnist_cnn.yaml: error: cannot render .png: Graphviz's `dot` program is "
                             "not installed or not on PATH; install Graphviz (Debian/Ubuntu: apt-get install "
                             "graphviz; Fedora: dnf install graphviz; macOS: brew install graphviz), or write "
                             "the DOT source with -o FILE.dot\n")
    assert not (tmp_path / "m.png").exists()


def test_pdf_and_the_default_name(tmp_path):
    result = run_cli("draw", str(ROOT / "examples" / "lenet5.yaml"), "-o", str(tmp_path / "l.pdf"), "--detail", "full")
    assert result.returncode == 0 and (tmp_path / "l.pdf").read_bytes()[:5] == b"%PDF-"
    result = run_cli("draw", str(ROOT / "examples" / "lenet5.yaml"), cwd=tmp_path)  # no -o: <name>.svg here
    assert result.stdout == "wrote lenet5.svg (9 nodes)\n" and "c1" in svg_texts(tmp_path / "lenet5.svg")


def test_dot_source_renders_with_the_dot_program(tmp_path):
    """The .dot file is valid input for `dot` itself: what the note tells the user to run works."""
    result = run_cli("draw", "examples/lenet5.yaml", "-o", str(tmp_path / "l.dot"))
    assert result.returncode == 0 and "note:" not in result.stderr  # dot is installed here
    subprocess.run(["dot", "-Tsvg", str(tmp_path / "l.dot"), "-o", str(tmp_path / "l.svg")], check=True)
    assert "c1" in svg_texts(tmp_path / "l.svg")


@pytest.mark.parametrize("args, code, message", [
    (["draw", "examples/mnist_cnn.yaml", "-o", "m.jpg"], 2, "-o m.jpg: the name must end in .svg, .png, .pdf, .dot"),
    (["draw", "examples/mnist_cnn.yaml", "--rankdir", "BT"], 2, "Invalid value for '--rankdir'"),
    (["draw", "missing.yaml"], 2, "cannot read missing.yaml"),
])
def test_draw_usage_errors(args, code, message):
    result = run_cli(*args)
    assert result.returncode == code and message in result.stderr and "Traceback" not in result.stderr


def test_invalid_spec_is_reported_not_drawn(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ninput: {shape: [4, 4, 1]}\nlayers:\n  - {type: Conv2D, filters: 2, kernel_size: 7}\n")
    result = run_cli("draw", str(bad), "-o", str(tmp_path / "bad.svg"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{bad}:4:45: error: layers[0] Conv2D 'conv2d': kernel 7x7 does not fit")
    assert not (tmp_path / "bad.svg").exists()
