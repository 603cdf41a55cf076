"""The zoo reproduces Keras Applications through `weights:` (issue 17), for MobileNetV2 and ResNet50
at their real 224x224 size: each application built by Keras with seeded random weights and
randomised BatchNormalization statistics, saved by Keras as .weights.h5 and .keras; the zoo file
with `weights:` pointing at each, checked (`compile_file`, framework-free matching), built and
loaded by cnncompile; max |diff| of the probabilities on 8 random images, and the load time.

Usage: python bench/weights_parity.py   (tests/test_weights.py proves MobileNetV2 at 96x96)
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

import cnncompile.backend  # noqa: F401  (quiet TensorFlow)
import keras

from cnncompile.analysis.check import compile_file
from cnncompile.backend.builder import build_model
from cnncompile.backend.weights import load_weights

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"mobilenet_v2": keras.applications.MobileNetV2, "resnet50": keras.applications.ResNet50}


def randomised(model: keras.Model, seed: int) -> keras.Model:
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "variance" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
        elif "kernel" in variable.path:  # small enough that 50 layers keep activations finite
            variable.assign(rng.normal(0, 0.2 / np.sqrt(np.prod(variable.shape[:-1])), variable.shape).astype("float32"))
        else:
            variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))
    return model


def main() -> None:
    images = np.random.default_rng(0).uniform(-1, 1, (8, 224, 224, 3)).astype("float32")
    for stem, application in MODELS.items():
        reference = randomised(application(weights=None), seed=1)
        expected = np.asarray(reference(images, training=False))
        features = np.asarray(keras.Model(reference.inputs, reference.get_layer("predictions").input)(images))
        with tempfile.TemporaryDirectory() as tmp:
            reference.save_weights(Path(tmp) / "w.weights.h5")
            reference.save(Path(tmp) / "w.keras")
            for file in ("w.weights.h5", "w.keras"):
                spec = yaml.safe_load((ROOT / "examples" / "zoo" / f"{stem}.yaml").read_text())
                spec["weights"] = file
                path = Path(tmp) / f"{stem}.yaml"
                path.write_text(yaml.safe_dump(spec, sort_keys=False))
                started = time.perf_counter()
                compiled = compile_file(path)
                checked = time.perf_counter() - started
                model = build_model(compiled.spec)
                started = time.perf_counter()
                plan = load_weights(model, compiled.spec, base_dir=Path(tmp))
                loaded = time.perf_counter() - started
                diff = float(np.abs(np.asarray(model(images)) - expected).max())
                # The features the classifier reads too: softmax over 1000 classes flattens differences.
                ours_features = keras.Model(model.inputs, model.get_layer("predictions").input)(images)
                feature_diff = float(np.abs(np.asarray(ours_features) - np.asarray(features)).max())
                print(f"{stem:13s} {file:13s} {plan.describe()}: max |diff| probabilities {diff:.2g} "
                      f"(std {expected.std():.2g}), features {feature_diff:.2g} (std {np.std(features):.2g}); "
                      f"check {checked:.2f} s, load {loaded:.2f} s")
        keras.backend.clear_session()
    print(platform.processor() or platform.machine())


if __name__ == "__main__":
    main()
