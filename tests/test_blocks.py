"""Blocks: written once, expanded with parameters into namespaced layers; errors located at the
line inside the block and at the use; expressions evaluated without `eval`."""

from __future__ import annotations

import json
import textwrap

import pytest

from cnncompile.language.diagnostics import SpecError
from cnncompile.analysis.check import compile_file
from cnncompile.language.expressions import ExpressionError, evaluate, substitute
from tests.conftest import ROOT, run_cli

BOTTLENECK = """
name: blocks
input: {shape: [16, 16, 3]}
blocks:
  bottleneck:
    params: {filters: null, strides: 1, conv_shortcut: false}
    layers:
      - {type: Conv2D, name: 0_conv, filters: "${4 * filters}", kernel_size: 1, strides: "${strides}", when: "${conv_shortcut}"}
      - {type: BatchNormalization, name: 0_bn, when: "${conv_shortcut}"}
      - {type: Conv2D, name: 1_conv, filters: "${filters}", kernel_size: 3, strides: "${strides}", padding: same, inputs: [input]}
      - {type: Conv2D, name: 2_conv, filters: "${4 * filters}", kernel_size: 1}
      - {type: Add, name: add, inputs: [0_bn, 2_conv]}
      - {type: Activation, name: out, activation: relu}
  stage:
    params: {filters: null, count: null}
    layers:
      - {block: bottleneck, name: "block${index}", repeat: "${count}", filters: "${filters}", strides: "${2 if index == 1 else 1}", conv_shortcut: "${index == 1}"}
layers:
  - {type: Conv2D, name: stem, filters: 8, kernel_size: 3, padding: same}
  - {block: stage, name: conv2, filters: 4, count: 2}
  - {type: GlobalAveragePooling2D, inputs: [conv2_block2_out]}
  - {type: Dense, units: 10}
"""


def compile_text(write_spec, text: str):
    return compile_file(write_spec(textwrap.dedent(text), "m.yaml"))


def errors(write_spec, text: str) -> list[str]:
    with pytest.raises(SpecError) as exc:
        compile_text(write_spec, text)
    return [d.render("m.yaml") for d in exc.value.diagnostics]


def test_nested_blocks_expand_to_keras_style_names_and_wiring(write_spec):
    info = compile_text(write_spec, BOTTLENECK).info
    layers = {layer.name: layer for layer in info.layers}
    assert list(layers) == [
        "stem",
        "conv2_block1_0_conv", "conv2_block1_0_bn", "conv2_block1_1_conv", "conv2_block1_2_conv",
        "conv2_block1_add", "conv2_block1_out",
        "conv2_block2_1_conv", "conv2_block2_2_conv", "conv2_block2_add", "conv2_block2_out",
        "global_average_pooling2d", "dense",
    ]
    # The first unit projects its shortcut with a strided conv; the second, `when` false,
    # adds its input itself: the dropped layers' names stand for their first input.
    assert layers["conv2_block1_add"].inputs == ("conv2_block1_0_bn", "conv2_block1_2_conv")
    assert layers["conv2_block2_add"].inputs == ("conv2_block1_out", "conv2_block2_2_conv")
    assert layers["conv2_block1_0_conv"].inputs == ("stem",)
    assert layers["conv2_block1_1_conv"].output_shape == (None, 8, 8, 4)   # strides 2 on index 1
    assert layers["conv2_block2_1_conv"].output_shape == (None, 8, 8, 4)   # strides 1 after
    assert layers["conv2_block1_2_conv"].output_shape == (None, 8, 8, 16)  # 4 * filters
    assert layers["conv2_block2_out"].block == ("conv2", "conv2_block2")
    assert layers["stem"].block == ()


def test_json_layers_carry_their_block_instances(write_spec):
    path = write_spec(textwrap.dedent(BOTTLENECK), "m.yaml")
    data = json.loads(run_cli("check", "--json", str(path)).stdout)
    by_name = {layer["name"]: layer for layer in data["layers"]}
    assert by_name["conv2_block1_add"]["block"] == ["conv2", "conv2_block1"]
    assert by_name["conv2_block1_add"]["inputs"] == ["conv2_block1_0_bn", "conv2_block1_2_conv"]
    assert by_name["conv2_block1_add"]["line"] == 11  # the template's line inside the block


def test_expanded_graph_builds_in_keras_exactly_as_inferred(write_spec):
    from cnncompile.backend.builder import build_model, cross_check

    compiled = compile_text(write_spec, BOTTLENECK)
    model = build_model(compiled.spec)
    cross_check(model, compiled.info)
    assert model.get_layer("conv2_block2_out") is not None
    assert model.count_params() == compiled.info.total_params


def test_an_error_inside_a_block_points_at_the_block_line_and_each_use(write_spec):
    found = errors(write_spec, """
        name: m
        input: {shape: [8, 8, 3]}
        blocks:
          unit:
            params: {filters: null, k: 3}
            layers:
              - {type: Conv2D, filters: "${filters}", kernel_size: "${k}"}
        layers:
          - {block: unit, name: a, filters: 4}
          - {block: unit, name: b, filters: 4, k: 9}
    """)
    assert found == [
        "m.yaml:7:60: error: blocks.unit.layers[0] Conv2D 'b_conv2d': kernel 9x9 does not fit the 6x6 input "
        "(padding 'valid'): output would be -2x-2; use padding: same or a smaller kernel_size "
        "(input shape (None, 6, 6, 4))\nm.yaml:10:5: note: in expansion of block 'unit' as 'b'"]


def test_a_template_that_is_not_a_valid_layer_is_located_in_the_block(write_spec):
    found = errors(write_spec, """
        name: m
        input: {shape: [8, 8, 3]}
        blocks:
          unit:
            params: {filters: null}
            layers:
              - {type: Conv2D, filters: "${filters}", kernel_size: 3, padding: "${'no'}"}
        layers:
          - {block: unit, name: a, filters: 4}
    """)
    assert found == [
        "m.yaml:7:72: error: blocks.unit.layers[0] Conv2D 'a_conv2d': padding: expected 'valid' or 'same', "
        "received 'no'\nm.yaml:9:5: note: in expansion of block 'unit' as 'a'"]


def test_use_errors_are_all_reported_with_did_you_mean(write_spec):
    found = errors(write_spec, """
        name: m
        input: {shape: [8, 8, 3]}
        blocks:
          unit:
            params: {filters: null, k: 3}
            layers:
              - {type: Conv2D, filters: "${filtres}", kernel_size: "${k}"}
          a: {layers: [{block: b}]}
          b: {layers: [{block: a}]}
        layers:
          - {block: unit, name: x, filters: 4, kk: 2}
          - {block: unit, name: y}
          - {block: unti, name: z, filters: 4}
          - {block: unit, filters: 4, repeat: 2}
          - {block: a}
    """)
    assert found == [  # in file order
        "m.yaml:7:33: error: blocks.unit.layers[0]: filters: in '${filtres}': unknown name 'filtres'; did you "
        "mean 'filters'? (known here: filters, index, k)\nm.yaml:14:5: note: in expansion of block 'unit' as 'unit_1'",
        "m.yaml:9:24: error: blocks.b.layers[0]: block 'a' uses itself (a -> b -> a); blocks cannot be recursive\n"
        "m.yaml:8:16: note: in expansion of block 'b' as 'a_b'\nm.yaml:15:5: note: in expansion of block 'a' as 'a'",
        "m.yaml:11:44: error: layers[0] 'x': block 'unit' has no parameter 'kk'; did you mean 'k'?",
        "m.yaml:12:5: error: layers[1] 'y': block 'unit' needs filters (no default)",
        "m.yaml:13:13: error: layers[2] 'z': unknown block 'unti'; did you mean 'unit'?",
    ]


def test_a_multi_input_block_and_references_into_expansions(write_spec):
    info = compile_text(write_spec, """
        name: m
        input: {shape: [8, 8, 3]}
        blocks:
          mix:
            inputs: [x, skip]
            layers:
              - {type: Conv2D, name: conv, filters: 3, kernel_size: 1, inputs: [x]}
              - {type: Add, name: sum, inputs: [conv, skip]}
        layers:
          - {type: Conv2D, name: stem, filters: 3, kernel_size: 1}
          - {block: mix, name: m1, inputs: [stem, input]}
          - {block: mix, name: m2, inputs: [m1, m1_conv]}
          - {type: Flatten}
    """).info
    inputs = {layer.name: layer.inputs for layer in info.layers}
    assert inputs["m1_sum"] == ("m1_conv", "input")
    assert inputs["m2_conv"] == ("m1_sum",)
    assert inputs["m2_sum"] == ("m2_conv", "m1_conv")


def test_every_zoo_and_example_file_with_blocks_is_checked_elsewhere():
    """The residual MNIST example is written with a block (no unrolled listing)."""
    text = (ROOT / "examples" / "mnist_resnet.yaml").read_text()
    assert "blocks:" in text and text.count("{block: residual") == 3


# --- the expression evaluator ------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("4 * filters", 256),
    ("filters // 3 + 1", 22),
    ("2 if index == 1 else 1", 2),
    ("max(8, int(filters * 0.25 + 4) // 8 * 8)", 16),
    ("ceil(1.2 * index)", 2),
    ("index > 1 and filters < 100", False),
    ("not flag", True),
    ("-filters ** 2", -4096),
    ("[filters, 3]", [64, 3]),
])
def test_expressions_evaluate(text, expected):
    assert evaluate(text, {"filters": 64, "index": 1, "flag": False}) == expected


@pytest.mark.parametrize("text, message", [
    ("__import__('os')", "function '__import__' is not allowed"),
    ("__import__('os').system('true')", "function '__import__('os').system' is not allowed"),
    ("filters.__class__", "attribute is not allowed"),
    ("filters[0]", "subscript is not allowed"),
    ("(lambda: 1)()", "function 'lambda: 1' is not allowed"),
    ("open('/etc/passwd')", "function 'open' is not allowed"),
    ("10 ** 10 ** 10", "exponent 10000000000 is too large"),
    ("9 ** 64", "out of range"),
    ("1 / 0", "division by zero"),
    ("filters +", "cannot parse"),
    ("undefined_name", "unknown name 'undefined_name'"),
])
def test_expressions_refuse_everything_but_arithmetic(text, message):
    with pytest.raises(ExpressionError) as exc:
        evaluate(text, {"filters": 64})
    assert message in str(exc.value)


def test_substitution_keeps_numbers_numbers_and_interpolates_text():
    values = {"k": 3, "index": 2}
    assert substitute({"kernel_size": ["${k}", "${k}"], "name": "block${index}_conv"}, values) == \
        {"kernel_size": [3, 3], "name": "block2_conv"}
    assert substitute("${index == 2}", values) is True
    with pytest.raises(ExpressionError) as exc:
        substitute({"layers": [{"filters": "${nope}"}]}, values)
    assert exc.value.path == ("layers", 0, "filters")


def test_default_and_repeated_instance_names_and_a_dropped_use(write_spec):
    info = compile_text(write_spec, """
        name: m
        input: {shape: [8, 8, 3]}
        blocks:
          unit:
            layers:
              - {type: Conv2D, filters: 3, kernel_size: 1}
              - {type: ReLU}
          pair:
            params: {second: true}
            layers:
              - {block: unit}
              - {block: unit, when: "${second}"}
        layers:
          - {block: unit}
          - {block: unit, name: stage, repeat: 2}
          - {block: pair, second: false}
          - {type: Flatten, inputs: [stage]}
    """).info
    assert [layer.name for layer in info.layers] == [
        "unit_conv2d", "unit_re_lu",
        "stage_1_conv2d", "stage_1_re_lu", "stage_2_conv2d", "stage_2_re_lu",
        "pair_unit_conv2d", "pair_unit_re_lu",
        "flatten",
    ]
    # `stage` (a repeated use without ${index}) names the whole chain's output.
    assert info.layers[-1].inputs == ("stage_2_re_lu",)
