"""Silent wrong answers become errors, and messages that help (issue 21).

Each test is a spec that `check` used to accept with a wrong model (exit 0) or answer with an
unhelpful message; each asserts the located error, or the right numbers, now.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from cnncompile.analysis.check import compile_file
from cnncompile.language.diagnostics import SpecError
from tests.conftest import run_cli


def compile_text(write_spec, text: str):
    return compile_file(write_spec(textwrap.dedent(text).lstrip("\n"), "m.yaml"))


def errors(write_spec, text: str) -> list[str]:
    with pytest.raises(SpecError) as exc:
        compile_text(write_spec, text)
    return [d.render("m.yaml") for d in exc.value.diagnostics]


HEAD = """
    name: m
    input: {shape: [8, 8, 3]}"""


# --- silent wrong answers ----------------------------------------------------------------

@pytest.mark.parametrize("key", ["repeat", "name", "inputs", "when", "block", "index"])
def test_a_parameter_named_like_a_key_of_a_use_is_refused_at_its_definition(write_spec, key):
    found = errors(write_spec, HEAD + f"""
    blocks:
      unit:
        params: {{{key}: 2}}
        layers: [{{type: ReLU}}]
    layers:
      - {{block: unit}}
      - {{type: Flatten}}
    """)
    assert len(found) == 1, found
    assert found[0].startswith(f"m.yaml:5:13: error: blocks.unit.params: '{key}' cannot be a parameter")


@pytest.mark.parametrize("when, params, received", [
    ("no", "{}", "'no'"),
    ('"${flag}"', '{flag: "false"}', "'false'"),
    ('"${1}"', "{}", "1"),
])
def test_when_must_be_a_boolean_after_substitution(write_spec, when, params, received):
    found = errors(write_spec, HEAD + f"""
    blocks:
      unit:
        params: {params}
        layers:
          - {{type: Conv2D, filters: 4, kernel_size: 1, when: {when}}}
          - {{type: ReLU}}
    layers:
      - {{block: unit}}
    """)
    assert len(found) == 1, found
    assert f"when: expected true or false, received {received}" in found[0]


def test_when_no_is_told_to_write_false(write_spec):
    found = errors(write_spec, HEAD + """
    blocks:
      unit:
        layers: [{type: ReLU, when: no}]
    layers:
      - {block: unit}
    """)
    assert found[0].endswith("this is text (YAML 1.2 reads only true and false as booleans): write false "
                             "unquoted\nm.yaml:7:5: note: in expansion of block 'unit' as 'unit'")


def test_use_names_follow_the_layer_name_rules(write_spec):
    found = errors(write_spec, HEAD + """
    blocks:
      unit: {layers: [{type: ReLU}]}
    layers:
      - {block: unit, name: "../../tmp/evil name"}
    """)
    assert found == [("m.yaml:6:25: error: layers[0] '../../tmp/evil name': name: '../../tmp/evil name' is not a "
                     "valid name (letters, digits, '_', '.', '-'; no leading '.' or '-'; at most 128 characters)")]


def test_a_use_named_like_a_layer_is_a_duplicate_at_both_places(write_spec):
    found = errors(write_spec, HEAD + """
    blocks:
      unit: {layers: [{type: ReLU}]}
    layers:
      - {type: Conv2D, name: res, filters: 3, kernel_size: 1}
      - {block: unit, name: res}
      - {type: Flatten, inputs: [res]}
    """)
    assert found == [("m.yaml:7:25: error: layers[1] 'res': duplicate name 'res' (also layers[0] at line 6)\n"
                     "m.yaml:6:26: note: 'res' is first defined here")]


def test_an_automatic_use_name_that_collides_says_so_once(write_spec):
    found = errors(write_spec, HEAD + """
    blocks:
      unit: {layers: [{type: ReLU}, {type: ReLU}, {type: ReLU}]}
    layers:
      - {type: Conv2D, name: unit, filters: 3, kernel_size: 1}
      - {block: unit}
    """)
    assert found == [("m.yaml:7:5: error: layers[1]: duplicate name 'unit' (the automatic name of this use of block "
                     "'unit'; give the use a name:) (also layers[0] at line 6)\n"
                     "m.yaml:6:26: note: 'unit' is first defined here")]


def test_a_block_reading_the_same_input_twice_is_refused(write_spec):
    found = errors(write_spec, HEAD + """
    blocks:
      pair:
        inputs: [a, a]
        layers: [{type: Add, inputs: [a, a]}]
    layers:
      - {block: pair, inputs: [input, input]}
    """)
    assert found == [("m.yaml:5:13: error: blocks.pair.inputs: 'a' is listed more than once; each input of a "
                     "block needs its own name")]


@pytest.mark.parametrize("inputs, received", [("3", "3"), ("abc", "'abc'"), ("[]", "[]")])
def test_a_dropped_layers_inputs_are_still_checked(write_spec, inputs, received):
    found = errors(write_spec, HEAD + f"""
    blocks:
      unit:
        layers:
          - {{type: ReLU, name: r}}
          - {{type: Conv2D, filters: 3, kernel_size: 1, inputs: {inputs}, when: false}}
    layers:
      - {{block: unit}}
    """)
    assert len(found) == 1 and f"inputs: expected a list of layer names, received {received}" in found[0], found


RESIDUAL_BLOCK = HEAD + """
    blocks:
      unit:
        params: {shortcut: true}
        layers:
          - {type: Conv2D, name: project, filters: 3, kernel_size: 1}
          - {type: Add, name: add, inputs: OPERANDS, when: "${shortcut}"}
    layers:
      - {block: unit, shortcut: false}
      - {type: Flatten}
"""


def test_a_dropped_merge_that_would_bypass_the_block_is_an_error_with_the_fix(write_spec):
    found = errors(write_spec, RESIDUAL_BLOCK.replace("OPERANDS", "[input, project]"))
    assert found == [
        ("m.yaml:8:40: error: blocks.unit.layers[1] Add 'unit_add': when is false here, and a dropped layer "
        "stands for its first input, 'input', which would silently bypass 'project' computed in this block; "
        "list first the input that should stand for it: inputs: [project, input]\n"
        "m.yaml:10:5: note: in expansion of block 'unit' as 'unit'")]


def test_the_fixed_operand_order_keeps_the_blocks_work(write_spec):
    info = compile_text(write_spec, RESIDUAL_BLOCK.replace("OPERANDS", "[project, input]")).info
    assert [layer.name for layer in info.layers] == ["unit_project", "flatten"]
    assert info.layers[1].inputs == ("unit_project",)


DEAD_BRANCH = """
    name: m
    input: {shape: [8, 8, 1]}
    layers:
      - {type: Conv2D, name: stem, filters: 4, kernel_size: 3}
      - {type: Conv2D, name: forgotten, filters: 8, kernel_size: 3}
      - {type: Flatten, inputs: [stem]}
      - {type: Dense, units: 10}
"""


def test_totals_leave_out_dead_layers_and_the_summary_marks_them(write_spec):
    path = write_spec(textwrap.dedent(DEAD_BRANCH).lstrip("\n"), "m.yaml")
    info = compile_file(path).info
    assert info.total_params == 40 + 1450  # stem + dense; forgotten's 296 are not in the model
    assert [layer.dead for layer in info.layers] == [False, True, False, False]
    result = run_cli("check", str(path))
    assert "forgotten (Conv2D) [dead]" in result.stdout
    assert "Total params: 1,490" in result.stdout
    assert "Dead layers (1, marked [dead]) are not in the model or these totals" in result.stdout
    data = json.loads(run_cli("check", "--json", str(path)).stdout)
    assert [layer["dead"] for layer in data["layers"]] == [False, True, False, False]
    assert data["total_params"] == 1490


def test_totals_equal_the_built_keras_models(write_spec):
    from cnncompile.backend.builder import build_model

    compiled = compile_file(write_spec(textwrap.dedent(DEAD_BRANCH).lstrip("\n"), "m.yaml"))
    assert build_model(compiled.spec).count_params() == compiled.info.total_params


# --- messages that help --------------------------------------------------------------------

def test_a_block_written_as_a_type_is_told_to_use_block(write_spec):
    found = errors(write_spec, HEAD + """
    blocks:
      residual: {layers: [{type: ReLU}]}
      outer: {layers: [{type: residual}]}
    layers:
      - {type: residual}
      - {block: outer}
    """)
    assert found == [
        ("m.yaml:5:27: error: blocks.outer.layers[0] residual 'outer_residual': 'residual' is a block, not a layer type: "
        "write {block: residual, ...}\nm.yaml:8:5: note: in expansion of block 'outer' as 'outer'"),
        "m.yaml:7:5: error: layers[0]: 'residual' is a block, not a layer type: write {block: residual, ...}",
    ]


def test_a_block_named_like_a_layer_type_is_refused(write_spec):
    found = errors(write_spec, HEAD + """
    blocks:
      Conv2D: {layers: [{type: ReLU}]}
    layers:
      - {block: Conv2D}
    """)
    assert found == ["m.yaml:4:3: error: blocks.Conv2D: a block cannot be named like a layer type; choose another name"]


def test_when_on_a_top_level_layer_says_where_it_applies(write_spec):
    found = errors(write_spec, HEAD + """
    layers:
      - {type: ReLU, when: false}
    """)
    assert found == [("m.yaml:4:18: error: layers[0] ReLU 're_lu': unknown key 'when': `when` keeps or drops a layer "
                     "per use of a block, so it applies only inside blocks; here, delete the layer or move it "
                     "into a block")]


def test_unnamed_layers_skip_explicit_names_as_documented(write_spec):
    """Keras 3 would name the third Conv2D conv2d_1 and then refuse the model (two layers named
    conv2d_1); we skip taken names instead, and the reference says so."""
    info = compile_text(write_spec, """
        name: m
        input: {shape: [8, 8, 1]}
        layers:
          - {type: Conv2D, filters: 2, kernel_size: 1}
          - {type: Conv2D, name: conv2d_1, filters: 2, kernel_size: 1}
          - {type: Conv2D, filters: 2, kernel_size: 1}
    """).info
    assert [layer.name for layer in info.layers] == ["conv2d", "conv2d_1", "conv2d_2"]
    from cnncompile.language.reference import markdown

    assert "skipping names already taken" in markdown()
