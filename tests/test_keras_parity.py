"""Differential tests: shape inference must agree with Keras exactly.

Keras layers are built here straight from the raw spec dicts (not through our builder),
so a mistake shared by our builder and our inference cannot hide. Every layer's output
shape and parameter counts are compared; a spec Keras refuses must be refused by us.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

from cnncompile.diagnostics import SpecError  # noqa: E402
from cnncompile.frontend import compile_file  # noqa: E402
from cnncompile.inference import infer  # noqa: E402
from cnncompile import reference  # noqa: E402
from cnncompile.spec import layers as L  # noqa: E402
from cnncompile.spec.layers import LAYER_TYPES  # noqa: E402
from cnncompile.spec.model import ModelSpec  # noqa: E402
from tests.conftest import EXAMPLES  # noqa: E402


def _keras_arg(value):
    if isinstance(value, list):
        return tuple(_keras_arg(v) for v in value)
    return value


def keras_model(input_shape, layers):
    """Keras's own answer for raw layer dicts, or the exception it raises."""
    built = [getattr(keras.layers, d["type"])(**{k: _keras_arg(v) for k, v in d.items() if k != "type"})
             for d in layers]
    model = keras.Sequential([keras.Input(tuple(input_shape)), *built])
    model(np.zeros((1, *input_shape), "float32"))  # some checks only run when executed
    return model


def ours(input_shape, layers):
    spec = ModelSpec.model_validate({"name": "m", "input": {"shape": list(input_shape)}, "layers": layers})
    return infer(spec)


def compare(input_shape, layers):
    """Both accept with identical per-layer shapes and params, or both refuse."""
    try:
        model = keras_model(input_shape, layers)
    except Exception as keras_error:  # noqa: BLE001 - any refusal counts
        with pytest.raises((SpecError, ValueError)):
            ours(input_shape, layers)
        return f"refused: {keras_error}"
    info = ours(input_shape, layers)
    for layer, mine in zip(model.layers, info.layers, strict=True):
        trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
        assert (tuple(layer.output.shape), layer.count_params(), trainable) == (
            mine.output_shape, mine.params, mine.trainable_params), (layers, mine)
    return "accepted"


# Parity cases keyed by spec class: a layer type added to LAYER_TYPES without one fails
# test_every_layer_type_has_a_parity_case. Each case is (arguments, input shape); the class
# supplies "type", so a case cannot claim one type and test another.
WINDOWED = {  # class -> (arguments, whether it takes dilation_rate); swept over every window below
    L.Conv2D: ({"filters": 4}, True),
    L.DepthwiseConv2D: ({"depth_multiplier": 2}, True),
    L.SeparableConv2D: ({"filters": 5}, True),
    L.MaxPooling2D: ({}, False),
    L.AveragePooling2D: ({}, False),
}


@pytest.mark.parametrize("cls", WINDOWED, ids=lambda cls: cls.__name__)
def test_every_window_combination(cls):
    arguments, dilates = WINDOWED[cls]
    base = {"type": cls.__name__, **arguments}
    outcomes = set()
    window_key = "kernel_size" if "filters" in base or "depth_multiplier" in base else "pool_size"
    for window, strides, padding, dilation, shape in itertools.product(
        [1, 3, [2, 5], [5, 2]], [1, 2, [3, 1]], ["valid", "same"], [1, 2] if dilates else [None],
        [(7, 7, 3), (4, 9, 2)],
    ):
        layer = {**base, window_key: window, "strides": strides, "padding": padding}
        if dilation is not None:
            layer["dilation_rate"] = dilation
        outcomes.add(compare(shape, [layer]).split(":")[0])
    assert outcomes == {"accepted", "refused"}  # both sides of the boundary were exercised


OTHER = {
    L.GlobalAveragePooling2D: [({}, (5, 5, 3))],
    L.GlobalMaxPooling2D: [({"keepdims": True}, (5, 5, 3))],
    L.Flatten: [({}, (5, 5, 3))],
    L.Dense: [({"units": 7}, (5, 5, 3)), ({"units": 7, "use_bias": False}, (12,))],
    L.Dropout: [({"rate": 0.3}, (5, 5, 3))],
    L.SpatialDropout2D: [({"rate": 0.3}, (5, 5, 3))],
    L.BatchNormalization: [({}, (5, 5, 3)), ({"scale": False}, (12,))],
    L.Activation: [({"activation": "gelu"}, (5, 5, 3))],
    L.ZeroPadding2D: [({"padding": [[1, 0], [2, 3]]}, (5, 5, 3)), ({"padding": [2, 1]}, (5, 5, 3))],
    L.Cropping2D: [({"cropping": [[1, 0], [2, 1]]}, (5, 5, 3)), ({"cropping": 3}, (5, 5, 3))],
    L.Reshape: [({"target_shape": [-1, 5]}, (5, 5, 3)), ({"target_shape": [25, 3]}, (5, 5, 3)),
                ({"target_shape": [4, 4]}, (5, 5, 3))],
    L.Rescaling: [({"scale": 0.5, "offset": 1.0}, (5, 5, 3))],
    L.Conv2D: [({"filters": 6, "kernel_size": 1, "groups": 3}, (5, 5, 3)),
               ({"filters": 6, "kernel_size": 1, "groups": 2}, (5, 5, 3)),
               ({"filters": 6, "kernel_size": 3}, (12,)),
               ({"filters": 4, "kernel_size": 3, "strides": 2, "dilation_rate": 2}, (9, 9, 1))],
}


@pytest.mark.parametrize("layer, shape", [({"type": cls.__name__, **arguments}, shape)
                                          for cls, cases in OTHER.items() for arguments, shape in cases],
                         ids=lambda v: v["type"] if isinstance(v, dict) else "")
def test_other_layers(layer, shape):
    compare(shape, [layer])


def test_every_layer_type_has_a_parity_case():
    assert set(WINDOWED) | set(OTHER) == set(LAYER_TYPES)


@pytest.mark.parametrize("layer_type, example", reference.LAYER_EXAMPLES.items())
def test_reference_examples_agree_with_keras(layer_type, example):
    """Each layer's documented example gives Keras's shape and parameter count."""
    import yaml

    assert compare((8, 8, 64), [yaml.safe_load(example)]) == "accepted"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_match_keras_summary(path):
    """`check` on each example equals the Keras model summary, layer by layer and in total."""
    from cnncompile.backend.builder import build_model, cross_check

    compiled = compile_file(path)
    model = build_model(compiled.spec, preprocessing=False)
    cross_check(model, compiled.info)
    assert model.count_params() == compiled.info.total_params
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == compiled.info.trainable_params
    assert tuple(model.output.shape) == compiled.info.output_shape


# --- property-based: random chains of layers ------------------------------------------

pair = st.one_of(st.integers(1, 4), st.lists(st.integers(1, 4), min_size=2, max_size=2))
padding = st.sampled_from(["valid", "same"])
image_layer = st.one_of(
    st.fixed_dictionaries({"type": st.just("Conv2D"), "filters": st.integers(1, 6), "kernel_size": pair,
                           "strides": st.integers(1, 2), "padding": padding}),
    st.fixed_dictionaries({"type": st.just("Conv2D"), "filters": st.integers(1, 4), "kernel_size": pair,
                           "dilation_rate": st.integers(1, 3), "padding": padding,
                           "use_bias": st.booleans()}),
    st.fixed_dictionaries({"type": st.just("DepthwiseConv2D"), "kernel_size": pair, "strides": pair,
                           "padding": padding, "depth_multiplier": st.integers(1, 2)}),
    st.fixed_dictionaries({"type": st.just("SeparableConv2D"), "filters": st.integers(1, 6),
                           "kernel_size": pair, "strides": st.integers(1, 2), "padding": padding}),
    st.fixed_dictionaries({"type": st.sampled_from(["MaxPooling2D", "AveragePooling2D"]),
                           "pool_size": pair, "padding": padding}),
    st.fixed_dictionaries({"type": st.just("ZeroPadding2D"), "padding": st.integers(0, 2)}),
    st.fixed_dictionaries({"type": st.just("Cropping2D"), "cropping": st.integers(0, 2)}),
    st.fixed_dictionaries({"type": st.just("BatchNormalization"), "center": st.booleans()}),
)
head = st.one_of(
    st.fixed_dictionaries({"type": st.just("Flatten")}),
    st.fixed_dictionaries({"type": st.sampled_from(["GlobalAveragePooling2D", "GlobalMaxPooling2D"])}),
    st.fixed_dictionaries({"type": st.just("Dense"), "units": st.integers(1, 8)}),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 4)),
    body=st.lists(image_layer, min_size=1, max_size=4),
    tail=st.lists(head, max_size=2),
)
def test_random_chains_agree_with_keras(shape, body, tail):
    compare(shape, body + tail)
