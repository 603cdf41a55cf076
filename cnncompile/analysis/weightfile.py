"""`weights:` without a framework: find the file, read its layers' names and shapes, match them.

Keras files hold each layer's variables under the layer's name:

- Keras 3's `.weights.h5` (model.save_weights), also inside a `.keras` zip as model.weights.h5:
  `layers/<key>/vars/0, 1, ...`, the layer's name in the `vars` group's `name` attribute;
- the legacy HDF5 layout of Keras Applications' published files: root attribute `layer_names`,
  each layer's group listing its datasets in `weight_names`.

Matching is by layer name with shapes checked; every problem is collected and reported at once.
`check` runs this (h5py only, imported lazily when a spec has `weights:`); the backend
(cnncompile.backend.weights) runs the same matching against the built Keras model and assigns.
"""

from __future__ import annotations

import fnmatch
import io
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnncompile.language import layers as spec_layers
from cnncompile.language.diagnostics import did_you_mean
from cnncompile.language.shapes import Shape
from cnncompile.language.weights import IMAGENET

VariableShapes = list[tuple[int, ...]]


class WeightsProblem(Exception):
    """The weights cannot be used: every reason, one line each (the caller locates them; `within`
    gives, per problem, the path inside `weights:` it is about, such as ("skip", 0), or ())."""

    def __init__(self, problems: Sequence[str], within: Sequence[tuple] | None = None):
        super().__init__("\n".join(problems))
        self.problems = list(problems)
        self.within = list(within) if within is not None else [()] * len(self.problems)


# --- the spec's side: each weighted layer's variables, in Keras's order -----------------------

def _conv(layer: Any, shape: Shape) -> VariableShapes:
    kernel = (*layer.kernel_size, shape[2] // layer.groups, layer.filters)
    return [kernel, *([(layer.filters,)] if layer.use_bias else [])]


def _conv_transpose(layer: Any, shape: Shape) -> VariableShapes:
    return [(*layer.kernel_size, layer.filters, shape[2]), *([(layer.filters,)] if layer.use_bias else [])]


def _depthwise(layer: Any, shape: Shape) -> VariableShapes:
    out = shape[2] * layer.depth_multiplier
    return [(*layer.kernel_size, shape[2], layer.depth_multiplier), *([(out,)] if layer.use_bias else [])]


def _separable(layer: Any, shape: Shape) -> VariableShapes:
    middle = shape[2] * layer.depth_multiplier
    return [(*layer.kernel_size, shape[2], layer.depth_multiplier), (1, 1, middle, layer.filters),
            *([(layer.filters,)] if layer.use_bias else [])]


def _dense(layer: Any, shape: Shape) -> VariableShapes:
    return [(shape[-1], layer.units), *([(layer.units,)] if layer.use_bias else [])]


def _normalizing(layer: Any, shape: Shape) -> VariableShapes:
    # gamma, beta (when learned), then BatchNormalization's moving mean and variance.
    channels = (shape[-1],)
    moving = [channels, channels] if isinstance(layer, spec_layers.BatchNormalization) else []
    return [channels] * layer.scale + [channels] * layer.center + moving


def _normalization(layer: Any, shape: Shape) -> VariableShapes:
    if not layer.adapted:
        return []  # given mean and variance are constants, not weights
    channels = () if layer.axis is None else (shape[-1],)
    return [channels, channels, ()]  # mean, variance, count


VARIABLES = {
    spec_layers.Conv2D: _conv,
    spec_layers.Conv2DTranspose: _conv_transpose,
    spec_layers.DepthwiseConv2D: _depthwise,
    spec_layers.SeparableConv2D: _separable,
    spec_layers.Dense: _dense,
    spec_layers.BatchNormalization: _normalizing,
    spec_layers.LayerNormalization: _normalizing,
    spec_layers.Normalization: _normalization,
}
"""Layer classes with weights -> their variables' shapes for an input shape. Every other class
has none (tests/test_weights.py checks both against Keras for every layer type)."""


def spec_variables(layer: spec_layers.LayerSpec, shape: Shape) -> VariableShapes:
    rule = VARIABLES.get(type(layer))
    return rule(layer, shape) if rule else []


# --- the file's side -------------------------------------------------------------------------

IMAGENET_FILES: dict[str, tuple[str, str, str | None]] = {
    # spec name -> (file name, origin, hash) exactly as keras/src/applications/*.py pass them to
    # keras.utils.get_file (the hash is md5, which get_file detects; MobileNetV2 gives none).
    "mobilenet_v2": ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
                     "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
                     "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5", None),
    "resnet50": ("resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                 "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                 "resnet50_weights_tf_dim_ordering_tf_kernels.h5", "2cb95161c43110f7111970584f804107"),
    "resnet50v2": ("resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
                   "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                   "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5", "3ef43a0b657b3be2300d5770ece849e0"),
    "vgg16": ("vgg16_weights_tf_dim_ordering_tf_kernels.h5",
              "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
              "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b"),
    "densenet121": ("densenet121_weights_tf_dim_ordering_tf_kernels.h5",
                    "https://storage.googleapis.com/tensorflow/keras-applications/densenet/"
                    "densenet121_weights_tf_dim_ordering_tf_kernels.h5", "9d60b8095a5708f2dcce2bca79d332c7"),
    "inception_v3": ("inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
                     "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
                     "inception_v3_weights_tf_dim_ordering_tf_kernels.h5", "9a0d58056eeedaa3f26cb7ebd46da564"),
    "xception": ("xception_weights_tf_dim_ordering_tf_kernels.h5",
                 "https://storage.googleapis.com/tensorflow/keras-applications/xception/"
                 "xception_weights_tf_dim_ordering_tf_kernels.h5", "0a58e3b7378bc2990ea3b43d5981f1f6"),
}


def keras_cache_dirs() -> list[Path]:
    """Where keras.utils.get_file(cache_subdir="models") keeps files: $KERAS_HOME or ~/.keras,
    and /tmp/.keras when that is not writable (keras/src/backend/config.py)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return [Path(home) / "models", Path("/tmp/.keras/models")]


@dataclass(frozen=True)
class Source:
    """Where `weights:` points: a file, or (imagenet) a Keras Applications file and its origin."""

    path: Path
    shown: str  # as the spec wrote it, for messages
    origin: str | None = None  # imagenet: the URL
    file_hash: str | None = None


def imagenet_missing(source: Source) -> str:
    """How to place an imagenet file by hand, where there is no internet."""
    looked = ", ".join(str(d / source.path.name) for d in keras_cache_dirs())
    return (f"imagenet: {source.path.name} is not in Keras's cache (looked at {looked}); download "
            f"{source.origin} on a machine with internet and copy it to {source.path}")


def resolve(where: str, spec_name: str, spec_dir: Path) -> Source:
    """The file `weights:` names; WeightsProblem if there is none. For imagenet, the path in
    Keras's cache (which may not exist yet: Keras downloads it, `check` only warns)."""
    if where == IMAGENET:
        if spec_name not in IMAGENET_FILES:
            raise WeightsProblem([f"imagenet weights are known for the zoo's models ({', '.join(IMAGENET_FILES)}) "
                                  f"by the spec's name; '{spec_name}' is none of them: give a .keras or "
                                  ".weights.h5 file"])
        name, origin, file_hash = IMAGENET_FILES[spec_name]
        found = [d / name for d in keras_cache_dirs() if (d / name).is_file()]
        return Source(found[0] if found else keras_cache_dirs()[0] / name, where, origin, file_hash)
    path = Path(where)
    path = path if path.is_absolute() else spec_dir / path
    if path.is_dir():
        if not (path / "model.keras").is_file():
            raise WeightsProblem([f"{where} is a directory without model.keras; a run directory has one once "
                                  "`cnncompile train` finished"])
        path = path / "model.keras"
    elif not path.is_file():
        raise WeightsProblem([f"{where}: no such file or directory ({path})"])
    if not (path.name.endswith((".keras", ".h5"))):
        raise WeightsProblem([f"{where}: expected a .keras file, a .weights.h5 file or a run directory"])
    return Source(path, where)


@contextmanager
def open_layers(path: Path) -> Iterator[dict[str, list[Any]]]:
    """The file's layers by name -> their variables as h5py datasets (`.shape`; `[()]` reads the
    values), in the order Keras saved them. WeightsProblem if it is not a Keras weights file."""
    import h5py  # lazily: only specs with `weights:` need it

    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                data = io.BytesIO(archive.read("model.weights.h5"))
            handle = h5py.File(data, "r")
        else:
            handle = h5py.File(path, "r")
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise WeightsProblem([f"{path} is not a Keras weights file ({exc})"]) from None
    with handle:
        yield _layers(handle, path)


def _layers(handle: Any, path: Path) -> dict[str, list[Any]]:
    if "layers" in handle and hasattr(handle["layers"], "keys"):  # Keras 3
        found = {}
        for key, group in handle["layers"].items():
            variables = group.get("vars")
            if variables is None:
                continue
            name = variables.attrs.get("name", key)
            found[name.decode() if isinstance(name, bytes) else str(name)] = \
                [variables[str(i)] for i in range(len(variables))]
        return found
    root = handle.get("model_weights", handle)  # a legacy whole-model .h5 keeps them in a group
    if "layer_names" in root.attrs:  # legacy HDF5 (Keras Applications' files)
        found = {}
        for raw in root.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            group = root[name]
            found[name] = [group[w.decode() if isinstance(w, bytes) else w] for w in group.attrs["weight_names"]]
        return found
    raise WeightsProblem([f"{path} holds no Keras layers (neither a Keras 3 .weights.h5 nor a legacy HDF5 file)"])


# --- matching ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightPlan:
    """What `weights:` does to a model: which weighted layers load, which start fresh."""

    source: str
    loaded: tuple[str, ...]
    fresh: tuple[str, ...]
    unused: int  # layers with weights in the file that the spec does not have

    def describe(self) -> str:
        total = len(self.loaded) + len(self.fresh)
        text = f"loaded {len(self.loaded)} of {total} weighted layers from {self.source}"
        if self.fresh:
            text += f"; {len(self.fresh)} start fresh: {', '.join(self.fresh)}"
        if self.unused:
            text += f"; {self.unused} layer{'s' if self.unused != 1 else ''} of the file unused"
        return text


def _shapes(shapes: Sequence[tuple[int, ...]]) -> str:
    return ", ".join(f"({', '.join(map(str, s))}{',' if len(s) == 1 else ''})" for s in shapes) or "none"


def match(expected: Mapping[str, VariableShapes], kinds: Mapping[str, str], found: Mapping[str, Sequence[Any]],
          skip: Sequence[str], shown: str) -> WeightPlan:
    """Compare the spec's weighted layers (name -> variable shapes, in order) with the file's.
    WeightsProblem listing every mismatch, missing layer and unused skip pattern."""
    problems, within = [], []
    for index, pattern in enumerate(skip):
        if not any(fnmatch.fnmatchcase(name, pattern) for name in expected):
            problems.append(f"skip: '{pattern}' matches no layer with weights{did_you_mean(pattern, expected)}")
            within.append(("skip", index))
    fresh = [name for name in expected if any(fnmatch.fnmatchcase(name, p) for p in skip)]
    loaded = []
    for name, shapes in expected.items():
        if name in fresh:
            continue
        if name not in found:
            problems.append(f"layer '{name}' ({kinds[name]}) is not in {shown}{did_you_mean(name, found)}; "
                            f"add it to skip (weights: {{from: ..., skip: [{name}]}}) to start it fresh")
            within.append(())
            continue
        theirs = [tuple(int(n) for n in variable.shape) for variable in found[name]]
        if [tuple(s) for s in shapes] != theirs:
            problems.append(f"layer '{name}' ({kinds[name]}): the spec's weights have shapes {_shapes(shapes)}, "
                            f"{shown}'s have {_shapes(theirs)}")
            within.append(())
            continue
        loaded.append(name)
    if problems:
        raise WeightsProblem(problems, within)
    unused = sum(1 for name, variables in found.items() if variables and name not in expected)
    return WeightPlan(shown, tuple(loaded), tuple(fresh), unused)


# --- `check` ---------------------------------------------------------------------------------

def spec_weighted_layers(spec: Any, info: Any) -> tuple[dict[str, VariableShapes], dict[str, str]]:
    """The spec's weighted layers (name -> variable shapes) and their types, from shape inference."""
    shape_of = {spec_layers.MODEL_INPUT: spec.input.tensor_shape,
                **{layer.name: layer.output_shape[1:] for layer in info.layers}}
    expected, kinds = {}, {}
    for node in spec.graph():
        if node.name in shape_of and node.inputs[0] in shape_of:
            variables = spec_variables(node.layer, shape_of[node.inputs[0]])
            if variables:
                expected[node.name], kinds[node.name] = variables, node.layer.type
    return expected, kinds


def check_weights(spec: Any, info: Any, source_map: Any, spec_dir: Path) -> tuple[WeightPlan | None, list]:
    """`check`'s part: the plan, or SpecError located at `weights:`; an imagenet file not yet in
    Keras's cache is a warning (train and export download it)."""
    from cnncompile.language.diagnostics import Diagnostic, SpecError
    from cnncompile.language.weights import weights_source

    where, skip = weights_source(spec.weights)
    at = ("weights", "from") if not isinstance(spec.weights, str) else ("weights",)
    mark = source_map.value(at)
    try:
        source = resolve(where, spec.name, spec_dir)
        if source.origin and not source.path.is_file():
            return None, [Diagnostic("warning", f"weights: {imagenet_missing(source)} (train and export "
                                     "download it from there when online)", mark)]
        expected, kinds = spec_weighted_layers(spec, info)
        with open_layers(source.path) as found:
            return match(expected, kinds, found, skip, where), []
    except ModuleNotFoundError as exc:  # h5py: in cnncompile[train], not in the framework-free core
        return None, [Diagnostic("warning", f"weights: not checked: {exc.name} is not installed "
                                 f"(pip install {exc.name}, or cnncompile[train])", mark)]
    except WeightsProblem as exc:
        raise SpecError([Diagnostic("error", f"weights: {problem}", source_map.value(("weights", *sub)) if sub else mark)
                         for problem, sub in zip(exc.problems, exc.within)]) from None
