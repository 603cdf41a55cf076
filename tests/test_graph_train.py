"""Graph specs end to end in real subprocesses: train (Normalization adapted from the data),
then export to ONNX with verified parity."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.conftest import make_idx_dir

GRAPH = """\
name: tiny_graph
input: {shape: [28, 28, 1]}
blocks:
  unit:
    params: {filters: null}
    layers:
      - {type: Conv2D, name: conv, filters: "${filters}", kernel_size: 3, padding: same, activation: relu}
      - {type: Add, name: add, inputs: [input, conv]}
layers:
  - {type: Normalization, name: norm}
  - {type: Conv2D, name: stem, filters: 4, kernel_size: 3, strides: 2, padding: same}
  - {block: unit, name: res, filters: 4}
  - {type: Conv2D, name: side, filters: 4, kernel_size: 1, inputs: [stem]}
  - {type: Concatenate, inputs: [res, side]}
  - {type: GlobalAveragePooling2D}
  - {type: Dense, units: 10, activation: softmax}
training:
  dataset: mnist
  optimizer: adam
  epochs: 1
  batch_size: 32
"""


@pytest.mark.slow
def test_a_graph_with_blocks_trains_adapts_normalization_and_exports(tmp_path):
    import keras

    from cnncompile.data.formats import read_idx

    make_idx_dir(tmp_path / "data" / "mnist", n_train=128, n_test=64)
    (tmp_path / "graph.yaml").write_text(GRAPH)
    trained = run_cli("train", "graph.yaml", "--data-dir", "data", "--out", "run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "norm: Normalization mean and variance adapted from 128 training images" in trained.stdout

    model = keras.models.load_model(tmp_path / "run" / "model.keras", safe_mode=True)
    assert model.get_layer("res_add").input[0] is model.get_layer("stem").output  # the block read stem
    # The adapted statistics are those of the images as the layer sees them: scaled to 0-1.
    pixels = read_idx(next((tmp_path / "data" / "mnist").glob("train-images*"))).astype("float64") / 255
    mean, variance = (np.asarray(w).ravel() for w in model.get_layer("norm").get_weights()[:2])
    assert mean == pytest.approx([pixels.mean()], rel=1e-4)
    assert variance == pytest.approx([pixels.var()], rel=1e-3)

    exported = run_cli("export", "graph.yaml", "--onnx", "--run", "run", "--data-dir", "data", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "argmax agreement 100%" in exported.stdout
    assert (tmp_path / "run" / "model.onnx").stat().st_size > 0
