"""Adding a layer type is its class, its shape function and one builder row; these tests
name whatever else is missing. Everything else (the union, the names, the reference, the
examples) is derived from LAYER_TYPES."""

from __future__ import annotations

import typing

import pytest
import yaml

from cnncompile.language.reference import markdown
from cnncompile.language.layers import _BY_NAME, LAYER_NAMES, LAYER_TYPES, LayerSpec, LayerUnion
from cnncompile.language.model import ModelSpec

# Layers the reference examples read by name, each an (8, 8, 64) image (se_gate is (1, 1, 64)).
CONTEXT = [
    {"type": "Identity", "name": name, "inputs": ["input"]}
    for name in ("stem", "conv2d_1", "a", "b", "features", "branch_a", "branch_b")
] + [{"type": "GlobalAveragePooling2D", "name": "se_gate", "keepdims": True, "inputs": ["input"]}]


def example_spec(cls: type[LayerSpec]) -> dict:
    """A whole spec around the class's reference example, as a user would write it."""
    example = yaml.safe_load(cls.example)
    layers = [*CONTEXT, example]
    if "inputs" not in example:
        layers.insert(len(CONTEXT), {"type": "Identity", "name": "pixels", "inputs": ["input"]})
    return {"name": "example", "input": {"shape": [8, 8, 64], "scale": 1}, "layers": layers}


def test_the_union_is_derived_from_the_one_list():
    members = typing.get_args(typing.get_args(LayerUnion)[0])
    assert members == LAYER_TYPES
    assert set(_BY_NAME.values()) == set(LAYER_TYPES)  # what validate_layer dispatches to
    assert LAYER_NAMES == tuple(cls.__name__ for cls in LAYER_TYPES)
    assert len(set(LAYER_NAMES)) == len(LAYER_NAMES)


@pytest.mark.parametrize("cls", LAYER_TYPES, ids=LAYER_NAMES)
def test_every_layer_type_has_its_own_shape_rule(cls):
    """No silent inherited `output = input`: a class either says it preserves the shape or
    defines output_shape."""
    assert cls.preserves_shape or "output_shape" in {
        name for klass in cls.__mro__[:-1] if klass is not LayerSpec for name in vars(klass)}, \
        f"{cls.__name__}: define output_shape or set preserves_shape = True"


@pytest.mark.parametrize("cls", LAYER_TYPES, ids=LAYER_NAMES)
def test_every_layer_type_has_an_example_that_checks(cls):
    from cnncompile.analysis.inference import infer

    assert "example" in vars(cls), f"{cls.__name__} has no example"
    spec = ModelSpec.model_validate(example_spec(cls))
    assert type(spec.layers[-1]) is cls
    info = infer(spec)
    assert info.layers[-1].type == cls.__name__
    assert f"- {cls.example}" in markdown()


def test_every_layer_type_has_a_builder():
    from cnncompile.backend.builder import BUILDERS

    missing = [cls.__name__ for cls in LAYER_TYPES if cls not in BUILDERS]
    assert not missing, f"no builder row for {missing} in cnncompile/backend/builder.py BUILDERS"
    assert set(BUILDERS) == set(LAYER_TYPES)


@pytest.mark.parametrize("cls", LAYER_TYPES, ids=LAYER_NAMES)
def test_every_example_builds_in_keras_as_inferred(cls):
    from cnncompile.backend.builder import build_model, cross_check
    from cnncompile.analysis.inference import infer

    spec = ModelSpec.model_validate(example_spec(cls))
    cross_check(build_model(spec), infer(spec))
