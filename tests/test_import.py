"""`cnncompile import` from Keras files: faithful specs, blocks found, weights that compute the
source's function on real MNIST digits, and honest refusal (issue 18).

ONNX sources are in tests/test_import_onnx.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cnncompile.analysis.check import compile_file
from cnncompile.cli import main
from cnncompile.importer.discovery import fold
from cnncompile.importer.imported import ImportedLayer, ImportedModel
from cnncompile.importer.spec_text import render
from cnncompile.language.validate import parse_spec
from tests.conftest import ROOT, SHARED_DATA


def by_name(compiled) -> dict:
    """`check --json` keyed by layer name, without what describes the spec's text rather than
    the model: the source line, the block instances a layer was expanded from (discovery may
    fold a model differently from its author), and the listing order (any topological order)."""
    info = compiled.info.to_json()
    layers = {layer["name"]: {k: v for k, v in layer.items() if k not in ("line", "block")}
              for layer in info["layers"]}
    return {**{k: v for k, v in info.items() if k != "layers"}, "layers": layers}


def mnist_images(count: int = 64) -> np.ndarray:
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("shared MNIST not present")
    from cnncompile.data.datasets import load_dataset

    return load_dataset("mnist", data_dir=SHARED_DATA).x_test[:count].astype("float32")


# --- discovery on hand-made layer lists (no framework) ------------------------------------

def _unit(prefix: str, source: str, filters: int, strides: int, project: bool) -> list[ImportedLayer]:
    layers = [ImportedLayer(f"{prefix}_conv", "Conv2D", {"filters": filters, "kernel_size": 3, "strides": strides,
                                                         "padding": "same"}, [source])]
    shortcut = source
    if project:
        layers.append(ImportedLayer(f"{prefix}_proj", "Conv2D", {"filters": filters, "kernel_size": 1,
                                                                 "strides": strides}, [source]))
        shortcut = f"{prefix}_proj"
    layers.append(ImportedLayer(f"{prefix}_add", "Add", {}, [shortcut, f"{prefix}_conv"]))
    return layers


def _stages(counts: dict[str, tuple[int, int]], unit: str = "{stage}_block{i}", start: int = 1) -> ImportedModel:
    """Stages of residual units named like Keras Applications (s2_block1_conv, ...), or
    like PyTorch's modules with unit="{stage}_{i}", start=0 (layer2_0_conv)."""
    layers = [ImportedLayer("stem", "Conv2D", {"filters": 8, "kernel_size": 3, "padding": "same"}, ["input"])]
    first_stage = next(iter(counts))
    for stage, (filters, units) in counts.items():
        for i in range(start, units + start):
            layers += _unit(unit.format(stage=stage, i=i), layers[-1].name, filters,
                            2 if i == start and stage != first_stage else 1, project=i == start)
    layers.append(ImportedLayer("pool", "GlobalAveragePooling2D", {}, [layers[-1].name]))
    return ImportedModel("stages", [16, 16, 3], layers)


def _expanded(text: str) -> list:
    spec, _ = parse_spec(text.encode())
    return [(n.name, n.layer.model_dump(exclude={"name", "inputs"}), n.inputs) for n in spec.graph()]


def test_discovery_finds_blocks_chains_and_stages():
    model = _stages({"s2": (8, 2), "s3": (16, 3), "s4": (32, 2)})
    blocks, layers = fold(model)
    unit = blocks["block"]
    # The projection exists only in each stage's first unit: `when:`; the stride differs only there.
    proj = next(item for item in unit["layers"] if item["name"] == "proj")
    assert proj["when"].startswith("${with_proj") and proj["inputs"] == ["input"]
    assert blocks["stage"]["layers"][0]["strides"] == "${strides if index == 1 else 1}"
    assert blocks["stage"]["layers"][0]["with_proj"] == "${index == 1}"
    assert [item.get("name") for item in layers] == ["stem", "s2", "s3", "s4", "pool"]
    folded = render({"name": "m", "input": {"shape": [16, 16, 3]}, "blocks": blocks, "layers": layers}, "")
    flat = render({"name": "m", "input": {"shape": [16, 16, 3]}, "layers": model.flat_layers()}, "")
    assert _expanded(folded) == _expanded(flat)
    assert folded.count("\n") < flat.count("\n")


def test_discovery_reads_pytorch_module_numbers_as_stage_and_unit():
    from cnncompile.importer.discovery import STRATEGIES

    model = _stages({"layer1": (8, 3), "layer2": (16, 4), "layer3": (32, 3)}, unit="{stage}_{i}", start=0)
    whole_stages = fold(model, STRATEGIES[0])  # read as word + number: one block per whole stage
    assert "stage" not in whole_stages[0]
    blocks, layers = fold(model, STRATEGIES[1])
    assert blocks["stage"]["layers"][0]["name"] == "${index - 1}"  # layer2_0, layer2_1
    assert [item.get("name") for item in layers] == ["stem", "layer1", "layer2", "layer3", "pool"]
    folded = render({"name": "m", "input": {"shape": [16, 16, 3]}, "blocks": blocks, "layers": layers}, "")
    flat = render({"name": "m", "input": {"shape": [16, 16, 3]}, "layers": model.flat_layers()}, "")
    assert _expanded(folded) == _expanded(flat)
    other = render({"name": "m", "input": {"shape": [16, 16, 3]}, "blocks": whole_stages[0],
                    "layers": whole_stages[1]}, "")
    assert _expanded(other) == _expanded(flat) and folded.count("\n") < other.count("\n")


def test_discovery_leaves_irregular_units_flat():
    model = _stages({"s2": (8, 2)})
    # The second unit reads the stem, not the first unit: it is not a chain link, and an
    # instance read from inside (a leak) is not a unit at all.
    second = [l for l in model.layers if l.name.startswith("s2_block2")]
    second[0].inputs = ["s2_block1_conv"]
    blocks, layers = fold(model)
    assert not blocks and layers == model.flat_layers()


# --- Keras files --------------------------------------------------------------------------

@pytest.mark.parametrize("example", ["mnist_resnet.yaml", "mnist_inception.yaml"])
def test_round_trip_spec_keras_import(tmp_path, example):
    """spec -> Keras model (with trained-looking weights) -> .keras -> import: the same
    check --json, the same weights, the same outputs on real MNIST digits."""
    from cnncompile.backend.builder import build_model
    from cnncompile.importer.model_import import import_model

    original = compile_file(ROOT / "examples" / example)
    model = build_model(original.spec, preprocessing=False)
    rng = np.random.default_rng(1)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "source.keras")
    result = import_model(tmp_path / "source.keras", tmp_path / "imported.yaml", tmp_path / "imported.weights.h5")
    assert result.blocks and result.max_abs_diff <= 1e-4
    imported = compile_file(tmp_path / "imported.yaml")
    assert by_name(imported) == by_name(original)
    from cnncompile.backend.builder import cross_check

    cross_check(model, imported.info)  # the source Keras model, layer by layer: shapes and params

    rebuilt = build_model(imported.spec, preprocessing=False)
    rebuilt.load_weights(tmp_path / "imported.weights.h5")
    for layer in model.layers[1:]:
        for ours, theirs in zip(rebuilt.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    images = mnist_images()
    assert np.max(np.abs(rebuilt.predict(images, verbose=0) - model.predict(images, verbose=0))) <= 1e-4
    # The spec names its weights file (`weights:`), and the path `train`/`export` take loads it.
    from cnncompile.backend.weights import load_weights

    assert imported.spec.weights == "imported.weights.h5"
    through_spec = build_model(imported.spec, preprocessing=False)
    plan = load_weights(through_spec, imported.spec, base_dir=tmp_path)
    assert not plan.fresh and len(plan.loaded) == sum(1 for layer in model.layers if layer.weights)
    assert np.max(np.abs(through_spec.predict(images, verbose=0) - model.predict(images, verbose=0))) <= 1e-4


def _small_model(*extra):
    import keras

    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255),
                             keras.layers.Conv2D(4, 3, activation="relu", name="conv"), *extra,
                             keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax", name="out")],
                            name="small")


def test_cli_import_flat_legacy_h5_checks(tmp_path):
    _small_model(keras_max_pool()).save(tmp_path / "small.h5")
    result = CliRunner().invoke(main, ["import", str(tmp_path / "small.h5"), "-o", str(tmp_path / "s.yaml"),
                                       "--weights", str(tmp_path / "s.weights.h5"), "--flat"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "max |diff|" in result.output
    text = (tmp_path / "s.yaml").read_text()
    assert "blocks:" not in text
    layer_lines = [line for line in text.splitlines() if line.startswith("  - {type:")]
    assert [line.split(",")[0] for line in layer_lines] == [
        "  - {type: Rescaling", "  - {type: Conv2D", "  - {type: MaxPooling2D", "  - {type: Flatten",
        "  - {type: Dense"]
    check = CliRunner().invoke(main, ["check", "--json", str(tmp_path / "s.yaml")])
    assert json.loads(check.output)["total_params"] == 4 * 10 + 13 * 13 * 4 * 10 + 10


def keras_max_pool():
    import keras

    return keras.layers.MaxPooling2D(name="pool")


def test_refusal_lists_every_unsupported_layer_and_writes_nothing(tmp_path):
    import keras

    model = _small_model(keras.layers.GaussianNoise(0.1, name="noise"),
                         keras.layers.Conv2D(4, 3, kernel_constraint="non_neg", name="constrained"))
    model.save(tmp_path / "bad.keras")
    out, weights = tmp_path / "bad.yaml", tmp_path / "bad.weights.h5"
    result = CliRunner().invoke(main, ["import", str(tmp_path / "bad.keras"), "-o", str(out), "--weights", str(weights)])
    assert result.exit_code == 1
    assert "layer 'noise' (GaussianNoise): no layer of this type in the language" in result.output
    assert "layer 'constrained' (Conv2D): argument kernel_constraint=" in result.output
    assert "2 unsupported parts" in result.output and "nothing written" in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not weights.exists()


def test_unreadable_file_is_one_clean_error(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"not a zip file")
    result = CliRunner().invoke(main, ["import", str(bad), "-o", str(tmp_path / "m.yaml")])
    assert result.exit_code == 1 and result.output.startswith("error: cannot load")
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "m.yaml").exists()


@pytest.mark.slow
def test_resnet50_imports_within_twice_the_zoo_lines(tmp_path):
    import keras

    from cnncompile.importer.model_import import import_model

    keras.applications.ResNet50(weights=None).save(tmp_path / "resnet50.keras")
    result = import_model(tmp_path / "resnet50.keras", tmp_path / "resnet50.yaml")
    zoo = ROOT / "examples" / "zoo" / "resnet50.yaml"
    assert result.blocks and result.text.count("\n") <= 2 * zoo.read_text().count("\n")
    assert by_name(compile_file(tmp_path / "resnet50.yaml")) == by_name(compile_file(zoo))


def test_a_model_cnncompile_built_gives_back_its_input_scaling(tmp_path):
    """A run's model.keras scales raw pixels in its first layer: that is input.scale again."""
    from cnncompile.backend.builder import PREPROCESSING, build_model
    from cnncompile.importer import model_import

    assert model_import.PREPROCESSING == PREPROCESSING
    original = compile_file(ROOT / "examples" / "mnist_cnn.yaml")
    build_model(original.spec).save(tmp_path / "model.keras")
    result = model_import.import_model(tmp_path / "model.keras", tmp_path / "m.yaml", tmp_path / "m.weights.h5")
    imported = compile_file(tmp_path / "m.yaml")
    assert imported.spec.input == original.spec.input and "scale" not in result.text
    assert by_name(imported) == by_name(original) and result.max_abs_diff <= 1e-4


def test_keras_tensor_and_number_operations_become_rescaling(tmp_path):
    """MobileNetV3's hard-sigmoid, `ReLU(6)(x + 3.0) * (1 / 6)`: Keras 3 operations, not layers."""
    import keras

    from cnncompile.importer.model_import import import_model

    x = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3, name="conv")(x)
    gate = keras.layers.ReLU(6.0, name="relu6")(h + 3.0) * (1.0 / 6.0)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(h * gate)
    reshaped = keras.layers.Reshape((1, 1, 4), name="se_reshape")(pooled)  # EfficientNet's: a tuple in Keras
    y = keras.layers.Dense(3, name="out")(keras.layers.Flatten(name="flat")(reshaped))
    model = keras.Model(x, y)
    model.save(tmp_path / "hs.keras")
    result = import_model(tmp_path / "hs.keras", tmp_path / "hs.yaml", tmp_path / "hs.weights.h5")
    types = {layer.name: layer.type for layer in compile_file(tmp_path / "hs.yaml").info.layers}
    assert list(types.values()).count("Rescaling") == 2 and types["multiply_1"] == "Multiply"
    assert "{type: Rescaling, name: add, scale: 1.0, offset: 3.0}" in result.text
    assert "{type: Reshape, name: se_reshape, target_shape: [1, 1, 4]}" in result.text

    from cnncompile.backend.builder import build_model

    rebuilt = build_model(compile_file(tmp_path / "hs.yaml").spec)
    rebuilt.load_weights(tmp_path / "hs.weights.h5")
    images = mnist_images(16)
    assert np.max(np.abs(rebuilt.predict(images, verbose=0) - model.predict(images, verbose=0))) <= 1e-4
