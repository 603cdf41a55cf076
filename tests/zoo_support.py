"""The zoo's yardstick: which Keras Application each examples/zoo file reproduces, and how
the two are compared (issue 9).

A zoo file equals its application when `cnncompile check --json` and
`keras.applications.<Model>(weights=None)` agree on total, trainable and non-trainable
parameters and on the multiset of (layer type, output shape, params) over all layers.
Names are not compared (Keras Applications name some layers by global counters such as
`conv2d_17`), but they are shown in the diff so that a mismatch is found in seconds.

Shared by tests/test_zoo.py and the scripts in bench/; Keras is imported only by the
functions that build a Keras model.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ZOO_DIR = ROOT / "examples" / "zoo"

# zoo file stem -> (keras.applications attribute, extra arguments). MobileNetV3 is the one
# application without a default input size (it builds for (None, None, 3)); the issue fixes it
# at 224x224x3 like the others.
ZOO: dict[str, tuple[str, dict[str, Any]]] = {
    "vgg16": ("VGG16", {}),
    "resnet50": ("ResNet50", {}),
    "resnet50v2": ("ResNet50V2", {}),
    "mobilenet_v2": ("MobileNetV2", {}),
    "mobilenet_v3_small": ("MobileNetV3Small", {"input_shape": (224, 224, 3)}),
    "densenet121": ("DenseNet121", {}),
    "inception_v3": ("InceptionV3", {}),
    "xception": ("Xception", {}),
    "efficientnet_b0": ("EfficientNetB0", {}),
    "nasnet_mobile": ("NASNetMobile", {}),
}


def zoo_path(stem: str) -> Path:
    return ZOO_DIR / f"{stem}.yaml"


def keras_call(stem: str) -> str:
    """How the reference is built, as a reader would type it."""
    attribute, kwargs = ZOO[stem]
    args = ", ".join(["weights=None", *(f"{k}={v!r}" for k, v in kwargs.items())])
    return f"keras.applications.{attribute}({args})"


Key = tuple[str, tuple, int]  # (layer type, output shape with None batch, params)


@dataclass(frozen=True)
class LayerRecord:
    type: str
    output_shape: tuple
    params: int
    name: str
    line: int | None = None  # where the layer is written in the zoo file (ours only)

    @property
    def key(self) -> Key:
        return (self.type, self.output_shape, self.params)


@dataclass(frozen=True)
class Signature:
    """What the comparison looks at, from either side."""

    input_shape: tuple
    output_shape: tuple
    layers: tuple[LayerRecord, ...]
    total_params: int
    trainable_params: int
    non_trainable_params: int

    def multiset(self) -> Counter:
        return Counter(layer.key for layer in self.layers)


def _shape(shape: Iterable) -> tuple:
    return tuple(None if d is None else int(d) for d in shape)


def build_keras(stem: str):
    """keras.applications.<Model>(weights=None) for a zoo stem (imports Keras)."""
    import keras  # noqa: PLC0415 - only the Keras side needs it

    attribute, kwargs = ZOO[stem]
    return getattr(keras.applications, attribute)(weights=None, **kwargs)


# Keras Applications apply a few operations to tensors directly (MobileNetV3's hard_sigmoid is
# `ReLU(6.0)(x + 3.0) * (1.0 / 6.0)`). They are not Layer instances, so `model.layers` leaves
# them out, yet `model.summary()` shows each as a row of its own ("add (Add)"). The language
# computes `x + c` and `x * c` with Rescaling (offset c, or scale c), so such an operation is
# counted as the Rescaling that does the same arithmetic. See examples/zoo/NOTES.md.
CONSTANT_OPERATIONS = {"Add": "offset", "Multiply": "scale"}


def _operation_record(op, shape: tuple) -> LayerRecord:
    """A non-layer operation as the layer the language writes for it."""
    import keras  # noqa: PLC0415

    args = op._inbound_nodes[0].arguments.args
    tensors = [a for a in args if isinstance(a, keras.KerasTensor)]
    constants = [a for a in args if isinstance(a, (int, float))]
    kind = type(op).__name__
    if kind in CONSTANT_OPERATIONS and len(tensors) == 1 and len(constants) == 1:
        symbol = "+" if kind == "Add" else "*"
        return LayerRecord("Rescaling", shape, 0,
                           f"{op.name} (x {symbol} {constants[0]:g}: an operation, not a layer)")
    # Anything else has no counterpart yet: it shows up as missing from ours.
    return LayerRecord(f"operation {kind}", shape, 0, op.name)


def keras_signature(model) -> Signature:
    """A built Keras model's layers (InputLayer excluded), its non-layer operations counted as
    CONSTANT_OPERATIONS says, and its parameter totals."""
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    def size(weights) -> int:
        return sum(int(np.prod(weight.shape)) for weight in weights)

    records = []
    for op in model.operations:
        shape = _shape(op.output.shape) if isinstance(op, keras.layers.Layer) else \
            _shape(op._inbound_nodes[0].output_tensors[0].shape)
        if not isinstance(op, keras.layers.Layer):
            records.append(_operation_record(op, shape))
        elif type(op).__name__ != "InputLayer":
            records.append(LayerRecord(type(op).__name__, shape, int(op.count_params()), op.name))
    trainable, frozen = size(model.trainable_weights), size(model.non_trainable_weights)
    return Signature(_shape(model.input_shape), _shape(model.output_shape), tuple(records),
                     trainable + frozen, trainable, frozen)


def check_signature(check_json: str | dict) -> Signature:
    """The same facts from `cnncompile check --json` output. The model's output is the last
    layer listed (the language's rule)."""
    data = json.loads(check_json) if isinstance(check_json, str) else check_json
    records = tuple(LayerRecord(layer["type"], _shape(layer["output_shape"]), layer["params"], layer["name"],
                                layer.get("line")) for layer in data["layers"])
    return Signature(_shape(data["input_shape"]), records[-1].output_shape if records else (), records,
                     data["total_params"], data["trainable_params"], data["non_trainable_params"])


def _fmt_shape(shape: tuple) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _examples(records: list[LayerRecord], limit: int = 3) -> str:
    shown = []
    for record in records[:limit]:
        shown.append(f"{record.name} (line {record.line})" if record.line else record.name)
    more = f", ... {len(records) - limit} more" if len(records) > limit else ""
    return ", ".join(shown) + more


def differences(keras: Signature, ours: Signature) -> list[str]:
    """Readable lines, one per disagreement; empty when the zoo file equals Keras.

    Layer keys are listed in the order Keras builds them, so the first lines point at the
    earliest place in the network where the two part ways.
    """
    lines = []
    for label, theirs, mine in (
        ("input shape", _fmt_shape(keras.input_shape), _fmt_shape(ours.input_shape)),
        ("output shape", _fmt_shape(keras.output_shape), _fmt_shape(ours.output_shape)),
        ("total params", f"{keras.total_params:,}", f"{ours.total_params:,}"),
        ("trainable params", f"{keras.trainable_params:,}", f"{ours.trainable_params:,}"),
        ("non-trainable params", f"{keras.non_trainable_params:,}", f"{ours.non_trainable_params:,}"),
    ):
        if theirs != mine:
            lines.append(f"{label}: Keras {theirs}, ours {mine}")
    theirs_by_key: dict[Key, list[LayerRecord]] = {}
    mine_by_key: dict[Key, list[LayerRecord]] = {}
    for record in keras.layers:
        theirs_by_key.setdefault(record.key, []).append(record)
    for record in ours.layers:
        mine_by_key.setdefault(record.key, []).append(record)
    order = list(theirs_by_key) + [key for key in mine_by_key if key not in theirs_by_key]
    # Show first the layers whose names the other side lacks: where names follow Keras's,
    # those are the very layers to look at.
    keras_names, our_names = {r.name for r in keras.layers}, {r.name for r in ours.layers}
    missing, extra = [], []
    missing_count = extra_count = 0
    for key in order:
        theirs = sorted(theirs_by_key.get(key, []), key=lambda r: r.name in our_names)
        mine = sorted(mine_by_key.get(key, []), key=lambda r: r.name in keras_names)
        what = f"{key[0]} {_fmt_shape(key[1])} {key[2]:,} params (Keras has {len(theirs)}, ours {len(mine)}"
        if len(theirs) > len(mine):
            missing_count += len(theirs) - len(mine)
            missing.append(f"  {len(theirs) - len(mine)}x {what}; Keras: {_examples(theirs)})")
        elif len(mine) > len(theirs):
            extra_count += len(mine) - len(theirs)
            extra.append(f"  {len(mine) - len(theirs)}x {what}; ours: {_examples(mine)})")
    if missing:
        lines += [f"missing from ours ({missing_count} layers):", *missing]
    if extra:
        lines += [f"extra in ours ({extra_count} layers):", *extra]
    if missing or extra:
        lines.append(f"layer count: Keras {len(keras.layers)}, ours {len(ours.layers)}")
    return lines


# --- "written once" -------------------------------------------------------------------------

def layer_lists(spec: dict) -> Iterator[tuple[str, list]]:
    """(where, entries) for the top-level `layers` and every block's `layers`."""
    yield "layers", spec.get("layers") or []
    for block_name, block in (spec.get("blocks") or {}).items():
        if isinstance(block, dict):
            yield f"blocks.{block_name}.layers", block.get("layers") or []


def repeated_runs(entries: list, length: int) -> list[tuple[int, int]]:
    """(first, second) start indexes of two non-overlapping runs of `length` consecutive
    entries that are identical once their names are ignored: a structure written out twice
    instead of once as a block."""
    def anonymous(entry: Any) -> str:
        if isinstance(entry, dict):
            entry = {k: v for k, v in entry.items() if k != "name"}
        return json.dumps(entry, sort_keys=True, default=str)

    keys = [anonymous(entry) for entry in entries]
    seen: dict[tuple[str, ...], int] = {}
    found = []
    for start in range(len(keys) - length + 1):
        run = tuple(keys[start:start + length])
        if run in seen and start - seen[run] >= length:
            found.append((seen[run], start))
        seen.setdefault(run, start)
    return found


# --- numerical parity -----------------------------------------------------------------------

def weighted_layer_pairs(reference, ours) -> list[tuple]:
    """(reference layer, our layer) for every layer holding weights: by name where both models
    have it, the rest in graph order. Raises AssertionError naming the first pair whose types or
    weight shapes differ."""
    theirs = [layer for layer in reference.layers if layer.weights]
    mine = [layer for layer in ours.layers if layer.weights]
    assert len(theirs) == len(mine), f"{len(theirs)} layers with weights in Keras's model, {len(mine)} in ours"
    by_name = {layer.name: layer for layer in theirs}
    named = {layer.name for layer in mine} & set(by_name)
    rest = iter([layer for layer in theirs if layer.name not in named])
    pairs = [(by_name[layer.name] if layer.name in named else next(rest), layer) for layer in mine]
    for theirs_layer, mine_layer in pairs:
        shapes = ([tuple(w.shape) for w in theirs_layer.weights], [tuple(w.shape) for w in mine_layer.weights])
        assert type(theirs_layer) is type(mine_layer) and shapes[0] == shapes[1], (
            f"cannot pair Keras's {theirs_layer.name} ({type(theirs_layer).__name__} {shapes[0]}) "
            f"with our {mine_layer.name} ({type(mine_layer).__name__} {shapes[1]})")
    return pairs


def give_same_weights(reference, ours, seed: int = 0) -> None:
    """Non-trivial BatchNormalization statistics in the reference (fresh ones are the identity,
    which would hide a mixed-up pairing), then every weight copied into ours."""
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    for theirs, mine in weighted_layer_pairs(reference, ours):
        if type(theirs).__name__ == "BatchNormalization":
            theirs.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if "gamma" in w.name
                                or "variance" in w.name else rng.normal(0, 0.1, w.shape).astype("float32")
                                for w in theirs.weights])
        mine.set_weights(theirs.get_weights())


def layer_output_differences(reference, ours, images, tolerance: float = 1e-5) -> list[str]:
    """For every paired layer with weights, its output on `images` in both models; one line per
    layer whose outputs differ by more than `tolerance` times the reference's largest value, and
    one per image whose top class differs. One forward pass per model: the models' own outputs
    come out beside the layers'."""
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    pairs = weighted_layer_pairs(reference, ours)
    *theirs, their_top = keras.Model(reference.input, [*(t.output for t, _ in pairs), reference.output])(images)
    *mine, my_top = keras.Model(ours.input, [*(m.output for _, m in pairs), ours.output])(images)
    problems = []
    for (theirs_layer, mine_layer), a, b in zip(pairs, theirs, mine):
        a, b = np.asarray(a), np.asarray(b)
        diff, scale = float(np.abs(a - b).max()), float(np.abs(a).max())
        if diff > tolerance * scale:
            problems.append(f"{mine_layer.name} (Keras {theirs_layer.name}): max |diff| {diff:.3g} at scale {scale:.3g}")
    for image, (a, b) in enumerate(zip(np.asarray(their_top).argmax(-1), np.asarray(my_top).argmax(-1))):
        if a != b:
            problems.append(f"image {image}: top class {b}, Keras {a}")
    return problems
