"""`weights:` into a built Keras model: matched by layer name, shapes checked, values assigned.

The matching is analysis/weightfile.py's (the same `check` runs without a framework); here the
expected shapes are the Keras layers' own, and imagenet files come through Keras's cache and
hash check (keras.utils.get_file), downloaded when not there and the machine is online.
"""

from __future__ import annotations

from pathlib import Path

import cnncompile.backend  # noqa: F401  (environment for TensorFlow, before it loads)
import keras

from cnncompile.analysis.weightfile import WeightPlan, WeightsProblem, imagenet_missing, match, open_layers, resolve
from cnncompile.language.model import ModelSpec
from cnncompile.language.weights import Weights, weights_source


def load_weights(model: keras.Model, spec: ModelSpec, source: Weights | str | Path | None = None, *,
                 base_dir: Path = Path("."), skip: tuple[str, ...] = ()) -> WeightPlan:
    """Assign `source`'s weights (default: the spec's `weights:`) to the model built from `spec`,
    layer by layer by name; `skip` (with the mapping form's) names layers that keep their fresh
    values. Relative paths are relative to `base_dir` (the spec file's directory). Returns what
    was loaded; WeightsProblem listing every mismatch (nothing is assigned then)."""
    where, own_skip = weights_source(spec.weights if source is None else
                                     (str(source) if isinstance(source, Path) else source))
    located = resolve(where, spec.name, base_dir)
    path = _fetch(located) if located.origin else located.path
    # Every layer the spec lists (not the input's preprocessing) that has weights, as Keras built it.
    layers = {node.name: model.get_layer(node.name) for node in spec.graph() if node.name in _names(model)}
    expected = {name: [tuple(int(n) for n in w.shape) for w in layer.weights] for name, layer in layers.items()
                if layer.weights}
    kinds = {name: type(layers[name]).__name__ for name in expected}
    with open_layers(path) as found:
        plan = match(expected, kinds, found, (*own_skip, *skip), where)
        for name in plan.loaded:
            # Keras's own loading step, which also checks the count of variables.
            layers[name].load_own_variables({str(i): variable[()] for i, variable in enumerate(found[name])})
    return plan


def _names(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.layers}


def _fetch(located) -> Path:
    """An imagenet file through keras.utils.get_file: the cached copy if its hash matches, else a
    download; offline, a WeightsProblem saying where it looked and how to place the file."""
    try:
        return Path(keras.utils.get_file(located.path.name, located.origin, cache_subdir="models",
                                         file_hash=located.file_hash))
    except Exception as exc:  # noqa: BLE001 - urllib, hash and OS errors all mean "not available"
        raise WeightsProblem([f"{imagenet_missing(located)} ({type(exc).__name__}: {exc})"]) from None
