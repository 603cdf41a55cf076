"""Graph specs: wiring by name, merge layers, and located errors, all independent ones at once."""

from __future__ import annotations

import json

import pytest

from cnncompile.language.diagnostics import SpecError
from cnncompile.analysis.check import compile_file
from cnncompile.language.validate import parse_spec
from tests.conftest import run_cli, spec_text


def problems(write_spec, layers: str, training: str = "") -> list[str]:
    """Every diagnostic (errors and warnings) for a spec around `layers`, rendered."""
    path = write_spec(spec_text(layers, training=training), "m.yaml")
    try:
        compiled = compile_file(path)
    except SpecError as exc:
        return [d.render("m.yaml") for d in exc.diagnostics]
    return [d.render("m.yaml") for d in compiled.info.warnings]


RESIDUAL = """
    {type: Conv2D, name: stem, filters: 8, kernel_size: 3, padding: same}
    {type: Conv2D, filters: 8, kernel_size: 3, padding: same, activation: relu}
    {type: Conv2D, filters: 8, kernel_size: 3, padding: same}
    {type: Add, inputs: [stem, conv2d_1]}
    {type: Flatten}
    {type: Dense, units: 10, activation: softmax}
"""


def test_a_residual_graph_checks_with_the_inputs_it_reads(write_spec):
    compiled = compile_file(write_spec(spec_text(RESIDUAL)))
    wiring = {layer.name: layer.inputs for layer in compiled.info.layers}
    assert wiring == {"stem": ("input",), "conv2d": ("stem",), "conv2d_1": ("conv2d",),
                      "add": ("stem", "conv2d_1"), "flatten": ("add",), "dense": ("flatten",)}
    assert compiled.info.layers[3].output_shape == (None, 28, 28, 8)
    assert compiled.info.warnings == ()


def test_chains_are_unchanged_by_the_graph_language(write_spec):
    """No `inputs` anywhere: each layer reads the one before, exactly as before."""
    compiled = compile_file(write_spec(spec_text("""
        {type: Conv2D, filters: 8, kernel_size: 3}
        {type: Flatten}
        {type: Dense, units: 10}
    """)))
    assert [layer.inputs for layer in compiled.info.layers] == [("input",), ("conv2d",), ("flatten",)]


@pytest.mark.parametrize("layers, expected", [
    ("""{type: Conv2D, name: stem, filters: 8, kernel_size: 3}
        {type: Conv2D, filters: 8, kernel_size: 3, inputs: [stme]}""",
     ["m.yaml:6:57: error: layers[1] Conv2D 'conv2d': inputs: no layer named 'stme' is defined before "
      "this one; did you mean 'stem'?"]),
    ("""{type: Conv2D, filters: 8, kernel_size: 3, inputs: [later]}
        {type: Flatten, name: later}""",
     ["m.yaml:5:57: error: layers[0] Conv2D 'conv2d': inputs: cannot read 'later', which is defined later "
      "(layers[1] at line 6); a layer reads only the model input and layers listed before it, so the graph "
      "has no cycles: move it below its inputs"]),
    ("{type: Flatten, name: loop, inputs: [loop]}",
     ["m.yaml:5:42: error: layers[0] Flatten 'loop': inputs: a layer cannot read itself; name the layers it "
      "reads (the model input or layers listed before it), or leave out inputs to read the layer listed just "
      "before"]),
    ("{type: Flatten, name: input}",
     ["m.yaml:5:27: error: layers[0] Flatten 'input': the name 'input' is reserved for the model input; "
      "choose another"]),
    ("""{type: Flatten, name: a}
        {type: Flatten, name: b, inputs: [input]}
        {type: Dense, units: 3, inputs: [a, b]}""",
     ["m.yaml:7:37: error: layers[2] Dense 'dense': Dense reads exactly one input, received 2; merge them "
      "first with Add or Concatenate"]),
])
def test_wiring_errors_are_located(write_spec, layers, expected):
    assert problems(write_spec, layers) == expected


def test_every_wiring_error_is_reported_in_one_run(write_spec):
    found = problems(write_spec, """
        {type: Conv2D, name: a, filters: 8, kernel_size: 3}
        {type: Conv2D, name: a, filters: 8, kernel_size: 3}
        {type: Add, inputs: [a, missing]}
        {type: Dense, units: 3, inputs: [a, a]}
    """)
    assert [line.split(": error: ")[0] for line in found] == ["m.yaml:6:26", "m.yaml:7:29", "m.yaml:8:37"]
    assert "duplicate name 'a' (also layers[0] at line 5)" in found[0]


def test_merge_operands_that_do_not_broadcast_name_both_with_their_shapes_and_lines(write_spec):
    found = problems(write_spec, """
        {type: Conv2D, name: a, filters: 8, kernel_size: 3, padding: same}
        {type: Conv2D, name: b, filters: 16, kernel_size: 3, padding: same}
        {type: Add, inputs: [a, b]}
        {type: Conv2D, name: c, filters: 8, kernel_size: 3, inputs: [a]}
        {type: Concatenate, inputs: [a, c]}
    """)
    assert found == [
        "m.yaml:7:25: error: layers[2] Add 'add': inputs 'a' (None, 28, 28, 8) (line 5) and 'b' "
        "(None, 28, 28, 16) (line 6) do not broadcast: aligned from the right, each axis must be equal or 1",
        "m.yaml:9:33: error: layers[4] Concatenate 'concatenate': inputs 'a' (None, 28, 28, 8) (line 5) and "
        "'c' (None, 26, 26, 8) (line 8) differ outside the concatenation axis (-1); every other axis must match",
    ]


def test_independent_shape_errors_on_other_branches_are_all_reported(write_spec):
    """The first branch's mistake does not hide the second's; the layer fed by a broken one is
    skipped rather than reported twice."""
    found = problems(write_spec, """
        {type: Conv2D, name: left, filters: 8, kernel_size: 40, inputs: [input]}
        {type: Flatten}
        {type: MaxPooling2D, name: right, pool_size: 30, inputs: [input]}
        {type: Concatenate, inputs: [flatten, right]}
    """)
    assert [line.split(": error: ")[0] for line in found] == ["m.yaml:5:57", "m.yaml:7:50"]


def test_a_dead_branch_is_a_warning_at_its_end(write_spec):
    found = problems(write_spec, """
        {type: Conv2D, name: stem, filters: 8, kernel_size: 3}
        {type: Conv2D, name: forgotten, filters: 8, kernel_size: 3}
        {type: MaxPooling2D, name: forgotten_pool}
        {type: Flatten, inputs: [stem]}
        {type: Dense, units: 10}
    """)
    assert found == ["m.yaml:7:5: warning: layers[2] MaxPooling2D 'forgotten_pool': its output is never used "
                     "(the model's output is 'dense', the last layer); a dead branch is usually a wiring mistake, and Keras leaves it out of the model (and the totals)"]


def test_channels_first_is_refused_and_channels_last_accepted(write_spec):
    found = problems(write_spec, "{type: Conv2D, filters: 8, kernel_size: 3, data_format: channels_first}")
    assert found == ["m.yaml:5:61: error: layers[0] Conv2D 'conv2d': data_format: cnncompile models are channels_last "
                     "only (images are [height, width, channels], as input.shape says); remove data_format "
                     "or set it to channels_last"]
    assert problems(write_spec, "{type: MaxPooling2D, data_format: channels_last}") == []


def test_the_classifier_check_walks_back_from_the_output(write_spec):
    """Wrong class count after a merge: blame the layer that sets the width, found through the
    graph (along each layer's first input)."""
    found = problems(write_spec, """
        {type: Conv2D, name: a, filters: 8, kernel_size: 3, padding: same}
        {type: Conv2D, filters: 12, kernel_size: 1, inputs: [a]}
        {type: Conv2D, filters: 12, kernel_size: 1, inputs: [a]}
        {type: Add, inputs: [conv2d, conv2d_1]}
        {type: GlobalAveragePooling2D}
        {type: Softmax}
    """, training="training: {dataset: mnist}")
    assert found == ["m.yaml:6:29: error: layers[1] Conv2D 'conv2d': filters: 12 but mnist has 10 classes; "
                     "the model must output (None, 10)"]


def test_check_shows_connected_to_and_json_carries_inputs(write_spec):
    path = write_spec(spec_text(RESIDUAL))
    table = run_cli("check", str(path))
    assert table.returncode == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if line.startswith("Layer (type)"))
    assert header.split() == ["Layer", "(type)", "Output", "Shape", "Param", "#", "MACs", "Connected", "to"]
    add_row = next(line for line in table.stdout.splitlines() if line.startswith("add (Add)"))
    assert add_row.endswith("stem, conv2d_1")
    conv_row = next(line for line in table.stdout.splitlines() if line.startswith("conv2d (Conv2D)"))
    assert conv_row.split()[-1] == "451,584"  # reads the layer before it: Connected to stays empty
    data = json.loads(run_cli("check", "--json", str(path)).stdout)
    assert [layer["inputs"] for layer in data["layers"]][:4] == [["input"], ["stem"], ["conv2d"], ["stem", "conv2d_1"]]


def test_merge_layers_need_at_least_two_inputs():
    with pytest.raises(SpecError) as exc:
        parse_spec(spec_text("{type: Add, inputs: [input]}").encode())
    assert [d.render("m.yaml") for d in exc.value.diagnostics] == [
        "m.yaml:5:25: error: layers[0] Add 'add': inputs: expected at least 2 items, received 1"]
