"""Error recovery across stages (issue 25): schema, wiring and shape errors in one run.

A layer that fails validation or wiring stays defined as an unknown output; what reads it is
skipped without another error; everything else is still wired and inferred. Each test plants
independent mistakes of different stages and asserts each is reported exactly once, at its
line, in file order, and nothing else (no cascade).
"""

from __future__ import annotations

import textwrap

import pytest

from cnncompile.analysis.check import compile_file
from cnncompile.language.diagnostics import SpecError
from cnncompile.language.loader import load_yaml
from cnncompile.language.validate import validate_tree
from tests.conftest import run_cli


def located(write_spec, text: str) -> list[tuple[int, str]]:
    """(line, message) of every diagnostic `check` reports for `text`."""
    path = write_spec(textwrap.dedent(text).lstrip("\n"), "m.yaml")
    with pytest.raises(SpecError) as exc:
        compile_file(path)
    return [(d.mark.line, d.message) for d in exc.value.diagnostics]


def lines(found: list[tuple[int, str]]) -> list[int]:
    return [line for line, _ in found]


ISSUE_SPEC = """
    name: t
    input: {shape: [28, 28, 1]}
    layers:
      - {type: Conv2D, name: stem, filters: 32, kernel_size: 3, activation: relu}
      - {type: Conv2D, filters: 32, kernel_size: 3, padding: same}
      - {type: Add, inputs: [stem, conv2d]}
      - {type: Conv2D, filters: 8, kernel_size: 99}        # line 7: kernel larger than its input
      - {type: Conv2D, filterz: 8, kernel_size: 3}         # line 8: misspelt key
      - {type: Add, inputs: [stme, conv2d_2]}              # line 9: misspelt layer name
"""


def test_the_issue_spec_gives_its_three_errors_in_one_run(write_spec):
    found = located(write_spec, ISSUE_SPEC)
    assert lines(found) == [7, 8, 9]
    assert "kernel 99x99 does not fit the 26x26 input" in found[0][1]
    assert found[1][1] == "layers[4] Conv2D 'conv2d_2': unknown key 'filterz'; did you mean 'filters'?"
    assert found[2][1].startswith("layers[5] Add 'add_1': inputs: no layer named 'stme'")


def test_the_cli_prints_all_three_located_in_file_order(write_spec):
    path = write_spec(textwrap.dedent(ISSUE_SPEC).lstrip("\n"), "m.yaml")
    result = run_cli("check", str(path))
    assert result.returncode == 1
    heads = [line.split(": error: ")[0].rsplit(":", 2)[-2:] for line in result.stderr.splitlines()
             if ": error: " in line]
    assert heads == [["7", "45"], ["8", "20"], ["9", "26"]]
    assert "Traceback" not in result.stderr


def test_schema_and_wiring(write_spec):
    found = located(write_spec, """
        name: t
        input: {shape: [8, 8, 1]}
        layers:
          - {type: Conv2D, name: a, filters: 4, kernel_size: 3, padding: sideways}
          - {type: Conv2D, name: b, filters: 4, kernel_size: 3, inputs: [a]}
          - {type: Add, inputs: [b, nowhere]}
          - {type: Flatten, inputs: [a]}
    """)
    # b and flatten read the broken a: no error there; the unknown name is its own mistake.
    assert lines(found) == [4, 6]
    assert "padding" in found[0][1] and "no layer named 'nowhere'" in found[1][1]


def test_schema_and_shape_on_other_branches(write_spec):
    found = located(write_spec, """
        name: t
        input: {shape: [8, 8, 1]}
        layers:
          - {type: Conv2D, name: broken, filters: -1, kernel_size: 3}
          - {type: Conv2D, kernel_size: 30, filters: 2, inputs: [input]}
          - {type: MaxPooling2D, pool_size: 50, inputs: [input]}
          - {type: Add, inputs: [broken, max_pooling2d]}
    """)
    assert lines(found) == [4, 5, 6]
    assert "filters: must be >= 1" in found[0][1]
    assert "kernel 30x30 does not fit" in found[1][1]
    assert "max_pooling2d" in found[2][1]


def test_wiring_and_shape(write_spec):
    found = located(write_spec, """
        name: t
        input: {shape: [8, 8, 1]}
        layers:
          - {type: Conv2D, name: a, filters: 4, kernel_size: 3, inputs: [inptu]}
          - {type: Conv2D, filters: 4, kernel_size: 99, inputs: [a]}
          - {type: Conv2D, filters: 4, kernel_size: 9, inputs: [input]}
          - {type: Dense, units: 2, inputs: [a, conv2d_1]}
    """)
    # conv2d reads the unknown a: its kernel is not checked against an unknown shape. The
    # Dense takes two inputs: that is wrong whatever they are, so it is reported too.
    assert lines(found) == [4, 6, 7]
    assert "did you mean 'input'?" in found[0][1]
    assert "kernel 9x9 does not fit the 8x8 input" in found[1][1]
    assert "Dense reads exactly one input, received 2" in found[2][1]


def test_an_error_upstream_of_another_reports_both_and_nothing_between(write_spec):
    found = located(write_spec, """
        name: t
        input: {shape: [8, 8, 1]}
        layers:
          - {type: Conv2D, name: a, filters: 4, kernel_size: 3, strides: 0}
          - {type: Conv2D, name: b, filters: 4, kernel_size: 3, inputs: [a], paddin: same}
          - {type: Conv2D, name: c, filters: 4, kernel_size: 3, inputs: [b]}
          - {type: Add, inputs: [c, a]}
          - {type: Flatten}
          - {type: Dense, units: 10}
    """)
    assert lines(found) == [4, 5]
    assert "strides" in found[0][1] and "unknown key 'paddin'" in found[1][1]


def test_a_broken_use_keeps_its_names_defined(write_spec):
    found = located(write_spec, """
        name: t
        input: {shape: [8, 8, 3]}
        blocks:
          unit:
            params: {filters: null}
            layers:
              - {type: Conv2D, name: conv, filters: "${filters}", kernel_size: 3, padding: same}
        layers:
          - {block: unit, name: first, filters: 4, repeat: [2]}
          - {block: unt, name: second, filters: 4}
          - {type: Add, inputs: [first_conv, second_conv]}
          - {type: Conv2D, filters: 4, kernel_size: 20, inputs: [input]}
    """)
    assert lines(found) == [9, 10, 12]
    assert "repeat" in found[0][1]
    assert "unknown block 'unt'; did you mean 'unit'?" in found[1][1]
    assert "kernel 20x20" in found[2][1]


def test_a_broken_block_is_reported_at_its_definition_only(write_spec):
    found = located(write_spec, """
        name: t
        input: {shape: [8, 8, 3]}
        blocks:
          unit:
            params: {filters: null}
            inputs: [x, x]
            layers:
              - {type: Conv2D, filters: "${filters}", kernel_size: 3}
        layers:
          - {block: unit, name: u, filters: 4}
          - {type: Flatten, inputs: [u_conv2d]}
          - {type: Dense, units: 10, activation: sigmoid, inputs: [nothing]}
    """)
    assert lines(found) == [6, 12]
    assert found[0][1] == "blocks.unit.inputs: 'x' is listed more than once; each input of a block needs its own name"
    assert "no layer named 'nothing'" in found[1][1]


def test_inside_blocks_schema_wiring_and_shape_once_each_however_often_used(write_spec):
    found = located(write_spec, """
        name: t
        input: {shape: [16, 16, 3]}
        blocks:
          unit:
            params: {filters: null, k: 3}
            layers:
              - {type: Conv2D, name: bad, filters: "${filters}", kernel_size: 3, activation: rleu}
              - {type: Conv2D, name: good, filters: "${filters}", kernel_size: "${k}", inputs: [input]}
              - {type: Add, inputs: [bad, good, missing]}
              - {type: ReLU, inputs: [good]}
        layers:
          - {block: unit, name: u1, filters: 4}
          - {block: unit, name: u2, filters: 4}
          - {block: unit, name: u3, filters: 4, k: 40}
          - {type: Flatten}
    """)
    assert lines(found) == [7, 8, 9]
    assert "activation" in found[0][1] and "did you mean 'relu'?" in found[0][1]
    assert "kernel 40x40 does not fit" in found[1][1] and "'u3_good'" in found[1][1]
    assert "no layer named 'missing'" in found[2][1]


def test_a_broken_input_still_reports_wiring(write_spec):
    found = located(write_spec, """
        name: t
        input: {shape: [8, 8, 0]}
        layers:
          - {type: Conv2D, filters: 4, kernel_size: 3, inputs: [imput]}
    """)
    assert lines(found) == [2, 4]


def test_an_unknown_top_level_key_and_a_shape_error(write_spec):
    found = located(write_spec, """
        name: t
        input: {shape: [8, 8, 1]}
        trainig: {epochs: 1}
        layers:
          - {type: Conv2D, filters: 4, kernel_size: 9}
    """)
    assert lines(found) == [3, 5]
    assert "unknown key 'trainig'; did you mean 'training'?" in found[0][1]


def test_validate_tree_still_refuses_what_check_recovers_from():
    raw, source = load_yaml(textwrap.dedent(ISSUE_SPEC).lstrip("\n"))
    with pytest.raises(SpecError) as exc:
        validate_tree(raw, source)
    # Validation and wiring (no shapes): the misspelt key and the misspelt name.
    assert [d.mark.line for d in exc.value.diagnostics] == [8, 9]


def test_two_mistakes_in_one_template_are_both_reported_once(write_spec):
    found = located(write_spec, """
        name: t
        input: {shape: [8, 8, 3]}
        blocks:
          unit:
            layers: [{type: Conv2D}]
        layers:
          - {block: unit, name: a}
          - {block: unit, name: b}
    """)
    assert sorted(message.split(": ", 1)[1] for _, message in found) == [
        "missing required key 'filters'", "missing required key 'kernel_size'"]


def test_the_input_against_the_dataset_is_checked_beside_layer_errors(write_spec):
    found = located(write_spec, """
        name: t
        input: {shape: [32, 32, 3]}
        layers:
          - {type: Conv2D, filters: 4, kernel_size: 3, activation: relu, paddng: same}
          - {type: Flatten}
          - {type: Dense, units: 10, activation: softmax}
        training: {dataset: mnist}
    """)
    assert lines(found) == [2, 4]
    assert found[0][1] == "input.shape [32, 32, 3] does not match mnist's images, which are [28, 28, 1]"
