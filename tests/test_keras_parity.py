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

from cnncompile.language.diagnostics import SpecError  # noqa: E402
from cnncompile.analysis.check import compile_file  # noqa: E402
from cnncompile.analysis.inference import infer  # noqa: E402
from cnncompile.language import layers as L  # noqa: E402
from cnncompile.language.layers import LAYER_TYPES  # noqa: E402
from cnncompile.language.model import ModelSpec  # noqa: E402
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


OTHER = {  # class -> (arguments, input shape) cases, compared with Keras one layer at a time
    L.GlobalAveragePooling2D: [({}, (5, 5, 3)), ({"keepdims": True}, (5, 5, 3))],
    L.GlobalMaxPooling2D: [({"keepdims": True}, (5, 5, 3))],
    L.Flatten: [({}, (5, 5, 3))],
    L.Dense: [({"units": 7}, (5, 5, 3)), ({"units": 7, "use_bias": False}, (12,))],
    L.Dropout: [({"rate": 0.3}, (5, 5, 3))],
    L.SpatialDropout2D: [({"rate": 0.3}, (5, 5, 3))],
    L.BatchNormalization: [({}, (5, 5, 3)), ({"scale": False}, (12,)), ({"axis": 3}, (5, 5, 3))],
    L.Activation: [({"activation": "gelu"}, (5, 5, 3))],
    L.ZeroPadding2D: [({"padding": [[1, 0], [2, 3]]}, (5, 5, 3)), ({"padding": [2, 1]}, (5, 5, 3))],
    L.Cropping2D: [({"cropping": [[1, 0], [2, 1]]}, (5, 5, 3)), ({"cropping": 3}, (5, 5, 3))],
    L.Reshape: [({"target_shape": [-1, 5]}, (5, 5, 3)), ({"target_shape": [25, 3]}, (5, 5, 3)), ({"target_shape": [4, 4]}, (5, 5, 3))],
    L.Rescaling: [({"scale": 0.5, "offset": 1.0}, (5, 5, 3))],
    L.Resizing: [({"height": 7, "width": 3}, (5, 5, 3)), ({"height": 4, "width": 6, "crop_to_aspect_ratio": True}, (5, 5, 3)),
                 ({"height": 3, "width": 3}, (12,))],
    L.CenterCrop: [({"height": 3, "width": 2}, (5, 5, 3)), ({"height": 8, "width": 8}, (5, 5, 3)), ({"height": 2, "width": 2}, (12,))],
    L.Conv2D: [({"filters": 6, "kernel_size": 1, "groups": 3}, (5, 5, 3)), ({"filters": 6, "kernel_size": 1, "groups": 2}, (5, 5, 3)), ({"filters": 6, "kernel_size": 3}, (12,)), ({"filters": 4, "kernel_size": 3, "strides": 2, "dilation_rate": 2}, (9, 9, 1))],
    L.Conv2DTranspose: [({"filters": 4, "kernel_size": 3, "strides": 2}, (5, 5, 3)), ({"filters": 4, "kernel_size": [3, 2], "strides": [2, 3], "padding": "same"}, (5, 4, 3)), ({"filters": 2, "kernel_size": 4, "strides": 3, "output_padding": [1, 2]}, (5, 5, 3)), ({"filters": 2, "kernel_size": 3, "strides": 2, "output_padding": [1, 0], "padding": "same"}, (5, 6, 3)), ({"filters": 2, "kernel_size": 3, "dilation_rate": 2}, (5, 5, 3)), ({"filters": 2, "kernel_size": 3, "strides": 2, "output_padding": 2}, (5, 5, 3))],
    L.UpSampling2D: [({"size": [2, 3]}, (5, 5, 3)), ({"interpolation": "bilinear"}, (5, 4, 3)), ({}, (12,))],
    L.LayerNormalization: [({}, (5, 5, 3)), ({"center": False}, (12,))],
    L.Normalization: [({}, (5, 5, 3)), ({"axis": None}, (5, 5, 3)), ({"mean": [1.0, 2.0, 3.0], "variance": [1.0, 4.0, 9.0]}, (5, 5, 3)), ({"mean": 0.5, "variance": 2.0}, (12,))],
    L.ReLU: [({"max_value": 6.0}, (5, 5, 3)), ({"negative_slope": 0.1, "threshold": 0.5}, (12,))],
    L.LeakyReLU: [({}, (5, 5, 3))],
    L.Softmax: [({}, (5, 5, 3)), ({"axis": 1}, (12,))],
    L.Identity: [({}, (5, 5, 3))],
    L.MaxPooling2D: [({"data_format": "channels_last"}, (5, 5, 3))],
}


@pytest.mark.parametrize("layer, shape", [({"type": cls.__name__, **arguments}, shape)
                                          for cls, cases in OTHER.items() for arguments, shape in cases],
                         ids=lambda v: v["type"] if isinstance(v, dict) else "")
def test_other_layers(layer, shape):
    compare(shape, [layer])


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


# --- property-based: random graphs (skips, merges, concatenations) ---------------------

MERGES = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"]


def keras_graph(input_shape, layers):
    """Keras's functional answer for raw layer dicts wired by name, or the exception it raises."""
    inputs = keras.Input(tuple(input_shape))
    tensors = {"input": inputs}
    for index, d in enumerate(layers):
        args = {k: _keras_arg(v) for k, v in d.items() if k not in ("type", "inputs")}
        operands = [tensors[name] for name in d.get("inputs", [layers[index - 1]["name"] if index else "input"])]
        layer = getattr(keras.layers, d["type"])(**args)
        tensors[d["name"]] = layer(operands if d["type"] in MERGES else operands[0])
    model = keras.Model(inputs, tensors[layers[-1]["name"]])
    model(np.zeros((1, *input_shape), "float32"))
    return model


def compare_graph(input_shape, layers):
    try:
        model = keras_graph(input_shape, layers)
    except Exception as keras_error:  # noqa: BLE001 - any refusal counts
        with pytest.raises(SpecError):
            ours(input_shape, layers)
        return f"refused: {keras_error}"
    info = ours(input_shape, layers)
    live = info.live_layers()
    assert {layer.name for layer in model.layers[1:]} == {layer.name for layer in live}
    for mine in live:
        layer = model.get_layer(mine.name)
        trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
        assert (tuple(layer.output.shape), layer.count_params(), trainable) == (
            mine.output_shape, mine.params, mine.trainable_params), (layers, mine)
    return "accepted"


@pytest.mark.parametrize("merge, shapes", [
    ("Add", [(5, 5, 3), (5, 5, 3)]),
    ("Add", [(5, 5, 3), (5, 5, 4)]),
    ("Multiply", [(5, 5, 3), (1, 1, 3)]),
    ("Multiply", [(5, 5, 3), (5, 1, 1), (1, 5, 3)]),
    ("Subtract", [(5, 5, 3), (5, 5, 1)]),
    ("Average", [(5, 5, 3), (5, 5, 3), (5, 5, 3)]),
    ("Maximum", [(5, 5, 3), (4, 5, 3)]),
    ("Minimum", [(5, 5, 3), (1, 5, 3)]),
    ("Concatenate", [(5, 5, 3), (5, 5, 4)]),
    ("Concatenate", [(5, 5, 3), (5, 4, 3)]),
    ("Concatenate", [(5, 5, 3), (5, 4, 3), (5, 1, 3)]),
])
def test_merges(merge, shapes):
    """Each operand reshaped from one flat input (so any shape can be made), then merged."""
    size = 300
    layers = [{"type": "Dense", "name": f"o{i}", "units": int(np.prod(s)), "inputs": ["input"]}
              for i, s in enumerate(shapes)]
    layers += [{"type": "Reshape", "name": f"r{i}", "target_shape": list(s), "inputs": [f"o{i}"]}
               for i, s in enumerate(shapes)]
    merge_args = {"axis": 2} if merge == "Concatenate" and shapes[1][1] != shapes[0][1] else {}
    layers.append({"type": merge, "name": "merged", "inputs": [f"r{i}" for i in range(len(shapes))], **merge_args})
    compare_graph((size,), layers)


node_kind = st.sampled_from(["Conv2D", "Conv2D", "MaxPooling2D", "BatchNormalization", "Activation",
                             "GlobalAveragePooling2D", *MERGES])


@st.composite
def graphs(draw):
    """A random DAG: each layer reads one or more earlier layers (or the input)."""
    shape = (draw(st.integers(4, 9)), draw(st.integers(4, 9)), draw(st.integers(1, 4)))
    layers = []
    for index in range(draw(st.integers(1, 7))):
        earlier = ["input", *(layer["name"] for layer in layers)]
        kind = draw(node_kind)
        layer = {"type": kind, "name": f"l{index}"}
        if kind in MERGES:
            count = 2 if kind == "Subtract" else draw(st.integers(2, 3))
            layer["inputs"] = draw(st.lists(st.sampled_from(earlier), min_size=count, max_size=count))
            if kind == "Concatenate":
                layer["axis"] = draw(st.sampled_from([-1, 1, 2, 3]))
        else:
            layer["inputs"] = [draw(st.sampled_from(earlier))]
        if kind == "Conv2D":
            layer.update(filters=draw(st.sampled_from([2, 3, 4])), kernel_size=draw(st.sampled_from([1, 3])),
                         strides=draw(st.sampled_from([1, 2])), padding=draw(padding))
        elif kind == "MaxPooling2D":
            layer.update(pool_size=2, padding=draw(padding))
        elif kind == "Activation":
            layer["activation"] = "relu"
        elif kind == "GlobalAveragePooling2D":
            layer["keepdims"] = True
        layers.append(layer)
    return shape, layers


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_random_graphs_agree_with_keras(graph):
    shape, layers = graph
    compare_graph(shape, layers)


def test_every_layer_type_has_a_parity_case():
    merges = {getattr(L, name) for name in MERGES}
    assert set(WINDOWED) | set(OTHER) | merges == set(LAYER_TYPES)
