"""`weights:`, `trainable`, and the input options a pretrained network needs (issue 17).

Real Keras files (written by Keras's own model.save_weights / model.save), real h5py, the
real CLI; the zoo's MobileNetV2 against keras.applications.MobileNetV2 with seeded random
weights and randomised BatchNormalization statistics.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cnncompile.analysis.check import compile_file
from cnncompile.analysis.weightfile import IMAGENET_FILES, spec_variables
from cnncompile.cli import main
from cnncompile.language.layers import LAYER_NAMES, LAYER_TYPES
from cnncompile.language.model import ModelSpec
from tests.conftest import ROOT, run_cli
from tests.test_layer_types import example_spec

keras = pytest.importorskip("keras")

BASE = """\
name: base
input: {shape: [12, 12, 1]}
layers:
  - {type: Conv2D, name: c1, filters: 4, kernel_size: 3}
  - {type: BatchNormalization, name: bn}
  - {type: Flatten}
  - {type: Dense, name: predictions, units: 3}
"""


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def _randomised(model, seed=0):
    """Every weight random, BatchNormalization's moving variance positive: a model no default
    initialization could match by accident."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = rng.normal(0, 0.5, variable.shape).astype("float32")
        if "variance" in variable.path:
            value = rng.uniform(0.5, 1.5, variable.shape).astype("float32")
        variable.assign(value)
    return model


@pytest.fixture
def base_files(tmp_path):
    """base.weights.h5 and base.keras of the model BASE builds, with random weights."""
    from cnncompile.backend.builder import build_model

    model = _randomised(build_model(compile_file(_write(tmp_path / "base.yaml", BASE)).spec))
    model.save_weights(tmp_path / "base.weights.h5")
    model.save(tmp_path / "base.keras")
    return model


def _check(path):
    return CliRunner().invoke(main, ["check", str(path)])


@pytest.mark.parametrize("cls", LAYER_TYPES, ids=LAYER_NAMES)
def test_check_knows_every_layer_types_variables_as_keras_builds_them(cls):
    """`check` compares shapes with a file without Keras: its rule per layer type must be Keras's."""
    from cnncompile.backend.builder import build_model

    spec = ModelSpec.model_validate(example_spec(cls))
    node = spec.graph()[-1]
    theirs = [tuple(w.shape) for w in build_model(spec).get_layer(node.name).weights]
    assert spec_variables(node.layer, (8, 8, 64)) == theirs


@pytest.mark.parametrize("file", ["base.weights.h5", "base.keras"])
def test_weights_load_by_name_with_skip(tmp_path, base_files, file):
    from cnncompile.backend.builder import build_model
    from cnncompile.backend.weights import load_weights

    spec_path = _write(tmp_path / "new.yaml", f"""\
        name: new
        input: {{shape: [12, 12, 1]}}
        weights: {{from: {file}, skip: [pred*]}}
        layers:
          - {{type: Conv2D, name: c1, filters: 4, kernel_size: 3}}
          - {{type: BatchNormalization, name: bn}}
          - {{type: Flatten}}
          - {{type: Dense, name: predictions, units: 3}}
        """)
    compiled = compile_file(spec_path)
    assert compiled.weights.loaded == ("c1", "bn") and compiled.weights.fresh == ("predictions",)
    model = build_model(compiled.spec)
    fresh = [w.numpy() for w in model.get_layer("predictions").weights]
    plan = load_weights(model, compiled.spec, base_dir=tmp_path)
    assert plan.describe() == f"loaded 2 of 3 weighted layers from {file}; 1 start fresh: predictions"
    for name in ("c1", "bn"):
        for ours, theirs in zip(model.get_layer(name).weights, base_files.get_layer(name).weights):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    for ours, before in zip(model.get_layer("predictions").weights, fresh):
        np.testing.assert_array_equal(ours.numpy(), before)


def test_check_reports_every_mismatch_at_the_weights_line(tmp_path, base_files):
    spec_path = _write(tmp_path / "new.yaml", """\
        name: new
        input: {shape: [12, 12, 1]}
        weights: base.weights.h5
        layers:
          - {type: Conv2D, name: c1, filters: 8, kernel_size: 3}
          - {type: BatchNormalization, name: bn}
          - {type: Conv2D, name: extra, filters: 2, kernel_size: 1}
          - {type: Flatten}
          - {type: Dense, name: predictions, units: 3}
        """)
    result = _check(spec_path)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if ": error: " in line]
    assert all(line.startswith(f"{spec_path}:3:10: error: weights: ") for line in lines), result.output
    assert "layer 'c1' (Conv2D): the spec's weights have shapes (3, 3, 1, 8), (8,), base.weights.h5's have " \
           "(3, 3, 1, 4), (4,)" in result.output
    assert "layer 'bn' (BatchNormalization)" in result.output  # 8 channels now: the mismatch propagates
    assert "layer 'extra' (Conv2D) is not in base.weights.h5" in result.output
    assert "layer 'predictions' (Dense)" in result.output  # 8*10*10 inputs now
    assert len(lines) == 4


def test_a_skip_that_matches_nothing_and_a_missing_file_are_located(tmp_path, base_files):
    spec_path = _write(tmp_path / "new.yaml", BASE.replace("name: base", "name: new") +
                       "weights: {from: base.keras, skip: [predictons]}\n")
    result = _check(spec_path)
    assert result.exit_code == 1
    assert f"{spec_path}:8:36: error: weights: skip: 'predictons' matches no layer with weights; " \
           "did you mean 'predictions'?" in result.output
    spec_path.write_text(spec_path.read_text().replace("base.keras", "nowhere.keras"))
    assert "error: weights: nowhere.keras: no such file or directory" in _check(spec_path).output


def test_a_run_directory_means_its_model_keras(tmp_path, base_files):
    (tmp_path / "runs" / "base").mkdir(parents=True)
    (tmp_path / "base.keras").rename(tmp_path / "runs" / "base" / "model.keras")
    spec_path = _write(tmp_path / "new.yaml", BASE.replace("name: base", "name: new") + "weights: runs/base\n")
    result = _check(spec_path)
    assert result.exit_code == 0, result.output
    assert "weights: loaded 3 of 3 weighted layers from runs/base" in result.output
    summary = json.loads(CliRunner().invoke(main, ["check", "--json", str(spec_path)]).output)
    assert summary["weights"] == {"source": "runs/base", "loaded": ["c1", "bn", "predictions"], "fresh": [],
                                  "unused": 0}


def test_without_h5py_check_warns_that_weights_were_not_checked(tmp_path, base_files, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)  # as in a framework-free install
    spec_path = _write(tmp_path / "new.yaml", BASE.replace("name: base", "name: new") + "weights: base.keras\n")
    result = CliRunner().invoke(main, ["check", str(spec_path)])
    assert result.exit_code == 0, result.output
    assert f"{spec_path}:8:10: warning: weights: not checked: h5py is not installed" in result.output


FROZEN = """\
name: frozen
input: {shape: [16, 16, 3]}
blocks:
  conv_bn:
    params: {filters: null}
    layers:
      - {type: Conv2D, name: conv, filters: "${filters}", kernel_size: 3, padding: same}
      - {type: BatchNormalization, name: bn}
      - {type: ReLU, name: relu}
layers:
  - {block: conv_bn, name: stem, filters: 8, trainable: false}
  - {block: conv_bn, name: "stage${index}", repeat: 2, filters: 8}
  - {type: SeparableConv2D, name: sep, filters: 8, kernel_size: 3, trainable: false}
  - {type: BatchNormalization, name: top_bn, trainable: false}
  - {type: GlobalAveragePooling2D}
  - {type: Dense, name: predictions, units: 4, activation: softmax}
"""


def test_frozen_layers_and_block_uses_count_as_keras_counts(tmp_path):
    from cnncompile.backend.builder import build_model, cross_check

    compiled = compile_file(_write(tmp_path / "frozen.yaml", FROZEN))
    model = build_model(compiled.spec)
    cross_check(model, compiled.info)  # per layer, trainable counts included
    info = compiled.info
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert (info.trainable_params, info.non_trainable_params) == (trainable, frozen)
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {
        "stage1_conv", "stage1_bn", "stage2_conv", "stage2_bn", "predictions"}
    # Frozen BatchNormalization (gamma and beta too) normalizes with its moving statistics even
    # when the model is called in training mode; a trainable one uses the batch's.
    _randomised(model)
    features = np.random.default_rng(1).normal(0, 2, (4, 16, 16, 8)).astype("float32")
    frozen, trainable = model.get_layer("top_bn"), model.get_layer("stage1_bn")
    np.testing.assert_allclose(frozen(features, training=True), frozen(features, training=False), atol=1e-6)
    assert np.abs(trainable(features, training=True) - trainable(features, training=False)).max() > 1e-3


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_preprocessing_modes_equal_keras_applications(mode):
    from keras.applications import imagenet_utils

    from cnncompile.backend.builder import build_model

    spec = ModelSpec.model_validate({"name": "p", "input": {"shape": [5, 5, 3], "preprocessing": mode},
                                     "layers": [{"type": "Identity"}]})
    images = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    expected = imagenet_utils.preprocess_input(images.copy(), mode=mode)
    np.testing.assert_allclose(build_model(spec)(images), expected, atol=2e-5)


def test_grayscale_to_rgb_then_resize_and_crop():
    from cnncompile.analysis.inference import infer
    from cnncompile.backend.builder import build_model, cross_check

    spec = ModelSpec.model_validate({
        "name": "g", "input": {"shape": [28, 28, 1], "channels": 3, "scale": 1},
        "layers": [{"type": "Resizing", "height": 40, "width": 40}, {"type": "CenterCrop", "height": 32, "width": 32}]})
    info = infer(spec)
    assert info.output_shape == (None, 32, 32, 3)
    model = build_model(spec)
    cross_check(model, info)
    image = np.random.default_rng(0).uniform(0, 255, (1, 28, 28, 1)).astype("float32")
    out = np.asarray(model(image))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    expected = keras.layers.CenterCrop(32, 32)(keras.layers.Resizing(40, 40)(np.repeat(image, 3, axis=-1)))
    np.testing.assert_allclose(out, expected, atol=1e-4)


@pytest.mark.parametrize("bad, message", [
    ({"shape": [28, 28, 3], "channels": 3}, "channels: 3 repeats a single channel"),
    ({"shape": [28, 28, 1], "preprocessing": "tf", "scale": 1}, "preprocessing: tf replaces scale and offset"),
])
def test_input_options_are_checked(write_spec, bad, message):
    text = f"name: x\ninput: {json.dumps(bad)}\nlayers:\n  - {{type: Flatten}}\n"
    result = _check(write_spec(text))
    assert result.exit_code == 1 and message in result.output


FROZEN_PREFIXES = ("Conv1", "bn_Conv1", "expanded_conv_", "block_1_", "block_2_")


def _zoo_mobilenet(tmp_path, size, weights, frozen=False):
    """The zoo's MobileNetV2 at `size` (the file is unchanged but for the input size), with weights;
    `frozen`: the stem layers and the first two block uses (three instances) trainable: false."""
    spec = yaml.safe_load((ROOT / "examples" / "zoo" / "mobilenet_v2.yaml").read_text())
    spec["input"]["shape"] = [size, size, 3]
    spec["weights"] = weights
    if frozen:
        for entry in spec["layers"][:5]:  # Conv1, bn_Conv1, Conv1_relu, expanded_conv, block_1..2
            entry["trainable"] = False
    path = tmp_path / "mobilenet_v2.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.slow
def test_zoo_mobilenet_v2_reproduces_keras_through_weights_and_onnx(tmp_path):
    """keras.applications.MobileNetV2 with random weights and BatchNormalization statistics, saved
    by Keras; the zoo file pointing at it, through `export --untrained` (the CLI), gives the same
    probabilities (ONNX) and in Keras (max |diff| <= 1e-5)."""
    import onnxruntime

    from cnncompile.backend.builder import build_model
    from cnncompile.backend.weights import load_weights

    size = 96  # the architecture at 96x96 (Keras accepts it), for speed: same layers, same weights
    reference = _randomised(keras.applications.MobileNetV2(input_shape=(size, size, 3), weights=None), seed=3)
    # Random weights overflow a 53-block network; scale kernels down so activations stay O(1).
    for layer in reference.layers:
        for variable in layer.weights:
            if "kernel" in variable.path:
                variable.assign(variable.numpy() * 0.2)
    reference.save_weights(tmp_path / "reference.weights.h5")
    reference.save(tmp_path / "reference.keras")
    images = np.random.default_rng(0).uniform(-1, 1, (4, size, size, 3)).astype("float32")
    expected = np.asarray(reference(images, training=False))
    assert expected.std() > 1e-4  # not a flat output that anything would match

    spec_path = _zoo_mobilenet(tmp_path, size, "reference.keras")
    compiled = compile_file(spec_path)
    assert compiled.weights.describe() == "loaded 105 of 105 weighted layers from reference.keras"
    ours = build_model(compiled.spec)
    load_weights(ours, compiled.spec, base_dir=tmp_path)
    assert np.abs(np.asarray(ours(images)) - expected).max() <= 1e-5

    # Frozen layers and frozen block uses: check's counts are Keras's with the same layers frozen.
    frozen_info = compile_file(_zoo_mobilenet(tmp_path, size, "reference.keras", frozen=True)).info
    for layer in reference.layers:
        layer.trainable = not layer.name.startswith(FROZEN_PREFIXES)
    count = lambda weights: sum(int(np.prod(w.shape)) for w in weights)  # noqa: E731
    assert (frozen_info.trainable_params, frozen_info.non_trainable_params) == (
        count(reference.trainable_weights), count(reference.non_trainable_weights))
    assert frozen_info.non_trainable_params > compiled.info.non_trainable_params  # the freezing took

    spec_path = _zoo_mobilenet(tmp_path, size, "reference.weights.h5")
    result = run_cli("export", str(spec_path), "--onnx", "--untrained", "-o", str(tmp_path / "m.onnx"))
    assert result.returncode == 0, result.stderr
    assert "untrained" not in result.stdout
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    assert np.abs(got - expected).max() <= 1e-5


def _legacy_h5(model, path):
    """A file in the legacy HDF5 layout of Keras Applications' published weights."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)


IMAGENET_SPEC = """\
name: mobilenet_v2
input: {shape: [8, 8, 3], preprocessing: tf}
weights: imagenet
layers:
  - {type: Conv2D, name: Conv1, filters: 4, kernel_size: 3, use_bias: false}
  - {type: GlobalAveragePooling2D}
  - {type: Dense, name: predictions, units: 5, activation: softmax}
"""


def test_imagenet_resolves_through_keras_cache_or_says_how_to_place_the_file(tmp_path):
    from cnncompile.backend.builder import build_model

    spec_path = _write(tmp_path / "mobilenet_v2.yaml", IMAGENET_SPEC)
    env = {"KERAS_HOME": str(tmp_path / "keras_home")}
    file_name = IMAGENET_FILES["mobilenet_v2"][0]
    cached = tmp_path / "keras_home" / "models" / file_name

    # Offline and not cached: check warns, export refuses, both say where they looked and how to fix it.
    # check runs in this process (it reads KERAS_HOME when it looks, analysis/weightfile.py);
    # export in a fresh one, as keras.utils.get_file reads KERAS_HOME once, at Keras's import.
    result = run_cli("check", str(spec_path), env=env, in_process=True)
    assert result.returncode == 0 and f"warning: weights: imagenet: {file_name} is not in Keras's cache" \
        in result.stderr and str(cached) in result.stderr
    result = run_cli("export", str(spec_path), "--onnx", "--untrained", "-o", str(tmp_path / "m.onnx"), env=env)
    assert result.returncode == 1 and f"copy it to {cached}" in result.stderr, result.stderr

    cached.parent.mkdir(parents=True, exist_ok=True)
    model = _randomised(build_model(compile_file(spec_path).spec))
    _legacy_h5(model, cached)
    result = run_cli("check", str(spec_path), env=env, in_process=True)
    assert result.returncode == 0 and "weights: loaded 2 of 2 weighted layers from imagenet" in result.stdout
    result = run_cli("export", str(spec_path), "--onnx", "--untrained", "-o", str(tmp_path / "m.onnx"), env=env)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_train_starts_from_a_run_directory_and_says_what_it_loaded(tmp_path):
    """The CLI path end to end: train a base, then a spec whose `weights:` is that run with a new
    head; `train` prints what it loaded and its model starts from the base's convolution."""
    from tests.conftest import make_idx_dir

    make_idx_dir(tmp_path / "data" / "mnist", n_train=64, n_test=16)
    layers = """\
layers:
  - {type: Conv2D, name: conv, filters: 4, kernel_size: 3, activation: relu, trainable: false}
  - {type: Normalization, name: norm}
  - {type: Flatten}
  - {type: Dense, name: predictions, units: 10, activation: softmax}
training: {dataset: mnist, epochs: 1}
"""
    _write(tmp_path / "base.yaml", "name: base\ninput: {shape: [28, 28, 1]}\n" + layers)
    _write(tmp_path / "new.yaml", "name: new\ninput: {shape: [28, 28, 1]}\n"
           "weights: {from: runs/base, skip: [predictions]}\n" + layers)
    for name in ("base", "new"):
        result = run_cli("train", str(tmp_path / f"{name}.yaml"), "--data-dir", str(tmp_path / "data"),
                         "--out", str(tmp_path / "runs" / name), "--seed", "1" if name == "new" else "0", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert "loaded 2 of 3 weighted layers from runs/base; 1 start fresh: predictions" in result.stdout
    assert "norm: Normalization mean and variance adapted" not in result.stdout  # loaded, not re-adapted
    base, new = (keras.models.load_model(tmp_path / "runs" / name / "model.keras") for name in ("base", "new"))
    for layer in ("conv", "norm"):  # frozen conv: still exactly the base's after training
        for ours, theirs in zip(new.get_layer(layer).weights, base.get_layer(layer).weights):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_exports_carry_the_input_preprocessing(tmp_path, fmt):
    """Grayscale to RGB, caffe's BGR flip and means, Resizing: all in the exported file, which the
    export verifies against Keras on raw pixels before writing it."""
    path = _write(tmp_path / "pre.yaml", """\
        name: pre
        input: {shape: [8, 8, 1], channels: 3, preprocessing: caffe}
        layers:
          - {type: Resizing, height: 12, width: 12}
          - {type: CenterCrop, height: 10, width: 10}
          - {type: Conv2D, filters: 4, kernel_size: 3}
          - {type: GlobalAveragePooling2D}
          - {type: Dense, units: 3, activation: softmax}
        """)
    result = run_cli("export", str(path), f"--{fmt}", "--untrained", "-o", str(tmp_path / f"m.{fmt}"))
    assert result.returncode == 0, result.stderr
    assert "argmax agreement 100%" in result.stdout
