"""Malformed specs get located, readable errors; hostile YAML is refused cheaply."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from cnncompile.language.diagnostics import SpecError
from cnncompile.analysis.check import compile_file
from cnncompile.language.validate import parse_spec
from tests.conftest import spec_text

TRAIN = """
training:
  dataset: mnist
  loss: categorical_crossentropy
"""


def errors_of(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(SpecError) as exc:
        parse_spec(data)
    return [d.render("m.yaml") for d in exc.value.diagnostics]


def compile_errors(write_spec, text: str) -> list[str]:
    path = write_spec(text)
    with pytest.raises(SpecError) as exc:
        compile_file(path)
    return [d.render("m.yaml") for d in exc.value.diagnostics]


@pytest.mark.parametrize("layers, expected", [
    ("{type: Conv2d, filters: 8, kernel_size: 3}",
     "m.yaml:5:5: error: layers[0]: unknown layer type 'Conv2d'; did you mean 'Conv2D'?"),
    ("{type: Conv2D, filter: 8, kernel_size: 3}",
     "m.yaml:5:20: error: layers[0] Conv2D 'conv2d': unknown key 'filter'; did you mean 'filters'?"),
    ("{type: Conv2D, filters: 8, kernel_size: 3, padding: no}",
     "m.yaml:5:57: error: layers[0] Conv2D 'conv2d': padding: expected 'valid' or 'same', received 'no'"),
    ("{type: Conv2D, filters: '8', kernel_size: 3}",
     "m.yaml:5:29: error: layers[0] Conv2D 'conv2d': filters: expected an integer, received '8'"),
    ("{type: Dense, units: 10, activation: softmx}",
     "m.yaml:5:42: error: layers[0] Dense 'dense': activation: unknown value 'softmx'; did you mean 'softmax'?"),
    ("{type: Dense, units: 10, use_bias: yes}",
     "m.yaml:5:40: error: layers[0] Dense 'dense': use_bias: expected true or false, received 'yes'"),
    ("{type: Dropout, rate: 1.5, name: drop}",
     "m.yaml:5:27: error: layers[0] Dropout 'drop': rate: must be < 1.0, received 1.5"),
    ("{type: Dense}", "m.yaml:5:5: error: layers[0] Dense 'dense': missing required key 'units'"),
    ("{units: 3}", "m.yaml:5:5: error: layers[0]: missing 'type': say which layer type this is"),
    ("{type: Dense, units: 3, kernel_regularizer: l3}",
     "m.yaml:5:49: error: layers[0] Dense 'dense': kernel_regularizer: expected 'l1', 'l2' or 'l1_l2', received 'l3'"),
])
def test_located_schema_errors(layers, expected):
    assert expected in errors_of(spec_text(layers))


def test_all_problems_reported_in_one_run():
    text = spec_text("""
        {type: Conv2d, filters: 8, kernel_size: 3}
        {type: Dense, unit: 10}
        {type: Dropout, rate: -0.1}
    """, training="training: {dataset: mnst, optimizer: adamm}\n")
    found = errors_of(text)
    # `unit: 10` is one mistake (unknown key, did you mean 'units'), not also a missing 'units'.
    assert len(found) == 5, found
    assert [line.split(":")[1] for line in found] == ["5", "6", "7", "8", "8"]
    assert any("training.dataset: unknown value 'mnst'; did you mean 'mnist'?" in e for e in found)
    assert any("training.optimizer: unknown optimizer 'adamm'; did you mean 'adam'?" in e for e in found)


@pytest.mark.parametrize("layers, expected", [
    ("""{type: Conv2D, filters: 8, kernel_size: 3}
        {type: MaxPooling2D, pool_size: 2}
        {type: Conv2D, filters: 8, kernel_size: 3}
        {type: MaxPooling2D, pool_size: 2}
        {type: Conv2D, filters: 8, kernel_size: 7, name: big}""",
     "m.yaml:9:45: error: layers[4] Conv2D 'big': kernel 7x7 does not fit the 5x5 input (padding 'valid'): "
     "output would be -1x-1; use padding: same or a smaller kernel_size (input shape (None, 5, 5, 8))"),
    ("""{type: Flatten}
        {type: Conv2D, filters: 8, kernel_size: 3}""",
     "m.yaml:6:5: error: layers[1] Conv2D 'conv2d': expects a 4D image input"),
    ("""{type: Conv2D, filters: 4, kernel_size: 1, groups: 4}""",
     "m.yaml:5:56: error: layers[0] Conv2D 'conv2d': groups (4) must divide the 1 input channels"),
    ("""{type: Reshape, target_shape: [27, 27]}""",
     "m.yaml:5:35: error: layers[0] Reshape 'reshape': cannot reshape (None, 28, 28, 1) (784 values) "
     "into (None, 27, 27) (729 values)"),
])
def test_located_shape_errors(write_spec, layers, expected):
    found = compile_errors(write_spec, spec_text(layers))
    assert any(expected in e for e in found), found


def test_dense_after_conv_without_flatten_is_blamed_on_the_dense(write_spec):
    found = compile_errors(write_spec, spec_text("""
        {type: Conv2D, filters: 8, kernel_size: 3}
        {type: Dense, units: 10, activation: softmax}
    """, training=TRAIN))
    assert found == ["m.yaml:6:5: error: layers[1] Dense 'dense': receives (None, 26, 26, 8) and acts on the "
                     "last axis only, so the model outputs (None, 26, 26, 10); a classifier for 10 classes must "
                     "output (None, 10): add Flatten or GlobalAveragePooling2D before it"]


def test_wrong_class_count_points_at_units(write_spec):
    found = compile_errors(write_spec, spec_text("""
        {type: Flatten}
        {type: Dense, units: 12, activation: softmax}
    """, training=TRAIN))
    assert found == ["m.yaml:6:26: error: layers[1] Dense 'dense': units: 12 but mnist has 10 classes; "
                     "the model must output (None, 10)"]


def test_input_shape_must_match_dataset(write_spec):
    found = compile_errors(write_spec, spec_text("""
        {type: Flatten}
        {type: Dense, units: 10, activation: softmax}
    """, shape="[32, 32, 3]", training=TRAIN))
    assert found == ["m.yaml:3:10: error: input.shape [32, 32, 3] does not match mnist's images, which are [28, 28, 1]"]


def test_softmax_with_from_logits_warns(write_spec):
    path = write_spec(spec_text("""
        {type: Flatten}
        {type: Dense, units: 10, activation: softmax}
    """, training="training: {dataset: mnist, loss: {type: categorical_crossentropy, from_logits: true}}\n"))
    warnings = [d.render("m.yaml") for d in compile_file(path).info.warnings]
    assert warnings == ["m.yaml:6:42: warning: the last layer applies softmax but the loss has from_logits: true; "
                        "it will treat probabilities as logits. Remove the softmax or set from_logits: false"]


def test_typo_in_input_suggests_the_key():
    found = errors_of("name: t\ninput: {shap: [28, 28, 1]}\nlayers: [{type: Flatten}]\n")
    assert "m.yaml:2:9: error: input: unknown key 'shap'; did you mean 'shape'?" in found


def test_duplicate_layer_names(write_spec):
    found = errors_of(spec_text("""
        {type: Flatten, name: a}
        {type: Dense, units: 10, name: a}
    """))
    assert found == ["m.yaml:6:36: error: layers[1] Dense 'a': duplicate name 'a' (also layers[0] at line 5)\n"
                     "m.yaml:5:27: note: 'a' is first defined here"]


def test_default_names_follow_keras_and_avoid_explicit_ones():
    spec, _ = parse_spec(spec_text("""
        {type: Conv2D, filters: 8, kernel_size: 3}
        {type: Conv2D, filters: 8, kernel_size: 3, name: conv2d_1}
        {type: Conv2D, filters: 8, kernel_size: 3}
        {type: MaxPooling2D}
        {type: Flatten}
    """).encode())
    assert spec.layer_names() == ["conv2d", "conv2d_1", "conv2d_2", "max_pooling2d", "flatten"]


# --- the loader: YAML that is hostile, odd or broken ---------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("", "m.yaml:1:1: error: the file is empty"),
    ("# only a comment\n", "m.yaml:1:1: error: the file is empty"),
    ("- 1\n- 2\n", "m.yaml:1:1: error: the top level must be a mapping with name, input and layers, received a list"),
    ("name: a\nname: b\n", "m.yaml:2:1: error: duplicate key 'name' (first defined at line 1)"),
    ("name: !!python/object/apply:os.system ['echo hi']\n", "m.yaml:1:7: error: YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed"),
    ("name: a\ninput: {shape: [28, 28, 1}\n", "m.yaml:2:26: error: invalid YAML"),
    ("name: a\n---\nname: b\n", "m.yaml:2:1: error: expected a single YAML document, found 2"),
    ("a: &x {b: 1}\nc:\n  <<: *x\n", "m.yaml:3:3: error: YAML merge keys (<<) are not supported"),
    ("name: 99999999999999999999999\n", "m.yaml:1:7: error: integer 999999999999… is too large"),
    ("name: " + "9" * 5000 + "\n", "m.yaml:1:7: error: integer 999999999999… is too large"),
    ("name: 1e999\n", "m.yaml:1:7: error: number 1e999 is too large for a float"),
    ("name: *nowhere\n", "m.yaml:1:7: error: alias *nowhere refers to no anchor"),
    ("[" * 200 + "]" * 200, "m.yaml:1:65: error: nesting is deeper than 64 levels"),
])
def test_loader_errors(text, expected):
    found = errors_of(text)
    assert any(line.startswith(expected) for line in found), found


def test_non_utf8_bytes_are_located():
    found = errors_of(b"name: ok\ninput: {shape: [28, 28, 1]}\nlayers: [{type: Fl\xffatten}]\n")
    assert found == ["m.yaml:3:19: error: file is not valid UTF-8: byte 0xff cannot be decoded"]


def test_billion_laughs_is_refused_quickly_with_little_memory():
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    text = "\n".join(lines) + "\nname: boom\n"
    tracemalloc.start()
    started = time.perf_counter()
    found = errors_of(text)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "aliases repeat more than 100,000 values" in found[0]
    assert elapsed < 1.0 and peak < 50 * 2**20, (elapsed, peak)


def test_yaml_11_booleans_and_octals_stay_strings_or_ints():
    spec, _ = parse_spec(spec_text("{type: Dense, units: 010, name: 'on'}").encode())
    assert spec.layers[0].units == 10  # YAML 1.2: a leading zero is not octal
    assert spec.layers[0].name == "on"


def test_a_keras_summary_example_the_issue_quotes(write_spec):
    """The README/issue example: kernel 7x7 on a 6x6 input, error at the kernel_size value."""
    found = compile_errors(write_spec, spec_text("""
        {type: Conv2D, filters: 8, kernel_size: 3}
        {type: Conv2D, filters: 8, kernel_size: 3}
        {type: MaxPooling2D}
        {type: Conv2D, filters: 8, kernel_size: 7}
    """, shape="[16, 16, 1]"))
    assert found == ["m.yaml:8:45: error: layers[3] Conv2D 'conv2d_2': kernel 7x7 does not fit the 6x6 input "
                     "(padding 'valid'): output would be 0x0; use padding: same or a smaller kernel_size "
                     "(input shape (None, 6, 6, 8))"]


@pytest.mark.parametrize("loc, raw, kind, path, labels", [
    # A tagged union's tag and a plain union's member labels are not keys in the data.
    (("layers", 0, "Conv2D", "padding"), {"layers": [{"type": "Conv2D", "padding": "no"}]}, "literal_error",
     ("layers", 0, "padding"), ((2, "Conv2D"),)),
    (("layers", 0, "Dense", "kernel_regularizer", "L1L2"), {"layers": [{"kernel_regularizer": "l3"}]},
     "model_type", ("layers", 0, "kernel_regularizer"), ((2, "Dense"), (3, "L1L2"))),
    (("layers", 0, "Dense", "units"), {"layers": [{"type": "Dense"}]}, "missing", ("layers", 0, "units"),
     ((2, "Dense"),)),
    # A callable Discriminator's Tag may equal a key of the mapping ({block: ...}); the
    # reading that follows the data to the end wins.
    (("layers", 0, "block", "repeat"), {"layers": [{"block": "res", "repeat": 0}]}, "greater_than_equal",
     ("layers", 0, "repeat"), ((2, "block"),)),
    (("layers", 0, "block", "block"), {"layers": [{"block": 3}]}, "string_type",
     ("layers", 0, "block"), ((2, "block"),)),
])
def test_pydantic_locations_map_onto_the_data(loc, raw, kind, path, labels):
    from cnncompile.language.validate import _data_path

    assert _data_path(loc, raw, kind) == (path, labels)
