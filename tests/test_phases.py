"""`training.phases`: freezing, unfreezing by name and glob, a learning rate per phase, and a kill
during phase 2 that resumes in phase 2 (a real subprocess killed, then resumed in-process, as
tests/test_train.py does it)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys

import pytest
from click.testing import CliRunner

from cnncompile.analysis.check import compile_file
from cnncompile.analysis.unfreezing import trainable_in_phase
from cnncompile.cli import main
from tests.conftest import ROOT, make_idx_dir, run_cli
from tests.test_train import kill_after_epoch, weights_hash

PHASED = """\
name: phased
input: {shape: [28, 28, 1]}
blocks:
  unit:
    params: {filters: null}
    layers:
      - {type: Conv2D, name: conv, filters: "${filters}", kernel_size: 3, activation: relu}
      - {type: BatchNormalization, name: bn}
layers:
  - {block: unit, name: conv1, filters: 4, trainable: false}
  - {block: unit, name: conv2, filters: 4, trainable: false}
  - {type: MaxPooling2D, pool_size: 2}
  - {type: Flatten}
  - {type: Dense, name: predictions, units: 10, activation: softmax}
training:
  dataset: mnist
  optimizer: adam
  batch_size: 16
  phases:
    - {epochs: 2}
    - {epochs: 4, unfreeze: ["conv2*"], learning_rate: 0.0005}
"""


def test_each_phase_trains_what_it_unfroze(tmp_path):
    (tmp_path / "phased.yaml").write_text(PHASED)
    spec = compile_file(tmp_path / "phased.yaml").spec
    nodes, phases = spec.graph(), spec.training.phases
    assert trainable_in_phase(nodes, phases, 0) == {"max_pooling2d", "flatten", "predictions"}
    assert trainable_in_phase(nodes, phases, 1) == {"conv2_conv", "conv2_bn", "max_pooling2d", "flatten",
                                                   "predictions"}
    assert spec.training.total_epochs == 6


@pytest.mark.parametrize("change, message", [
    (('["conv2*"]', '["conv3*"]'), "training.phases[1].unfreeze: 'conv3*' matches no layer or block use"),
    (("  batch_size: 16\n", "  batch_size: 16\n  epochs: 3\n"), "epochs (3) differs from the phases' sum (6)"),
    (("  batch_size: 16\n", "  batch_size: 16\n  callbacks: [{type: EarlyStopping, monitor: loss}]\n"),
     "EarlyStopping and ReduceLROnPlateau cannot be combined with phases yet"),
    (("learning_rate: 0.0005}", "learning_rate: 0.0005, optimizer: sgd}"), "not both"),
])
def test_phase_mistakes_are_located(tmp_path, change, message):
    path = tmp_path / "phased.yaml"
    path.write_text(PHASED.replace(*change))
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 1 and message in result.output
    assert f"{path}:" in result.output  # located


@pytest.mark.slow
def test_kill_in_phase_2_resumes_in_phase_2(tmp_path):
    make_idx_dir(tmp_path / "data" / "mnist", n_train=1024, n_test=64)
    (tmp_path / "phased.yaml").write_text(PHASED)

    def args(out):
        return ("train", str(tmp_path / "phased.yaml"), "--data-dir", str(tmp_path / "data"),
                "--out", str(tmp_path / out), "--quiet")

    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    # Killed in a process of its own; resumed (and the whole run) in this one, from the files alone.
    killed_at = kill_after_epoch([sys.executable, "-m", "cnncompile", *args("killed")], tmp_path, env,
                                 tmp_path / "killed", 3)
    assert 3 <= killed_at < 6  # inside phase 2 (epochs 3-6)

    resumed = run_cli(*args("killed"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    whole = run_cli(*args("whole"), cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr

    histories = [list(csv.DictReader((tmp_path / out / "history.csv").read_text().splitlines()))
                 for out in ("killed", "whole")]
    assert [row["epoch"] for row in histories[0]] == ["1", "2", "3", "4", "5", "6"]
    # Same losses and same final weights: a resume in phase 1's state (its optimizer, conv2
    # still frozen) or with a fresh phase 2 optimizer would differ from the uninterrupted run.
    assert [row["loss"] for row in histories[0]] == [row["loss"] for row in histories[1]]
    assert weights_hash(tmp_path / "killed" / "model.keras") == weights_hash(tmp_path / "whole" / "model.keras")
    metrics = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert metrics["phase_starts"] == [1, 3]
    assert "phase 1 from epoch 1; phase 2 from epoch 3" in (tmp_path / "killed" / "report.html").read_text()


def test_frozen_layers_do_not_change_in_phase_1(tmp_path):
    """Phase 1 trains only the head: the frozen block uses' weights (BatchNormalization's moving
    statistics too) end as they began; phase 2's unfrozen conv2 changes."""
    import keras
    import numpy as np

    from cnncompile.backend.builder import build_model
    from cnncompile.data.datasets import Dataset
    from cnncompile.run.train import TrainOptions, train

    (tmp_path / "phased.yaml").write_text(PHASED.replace("{epochs: 4,", "{epochs: 1,"))
    compiled = compile_file(tmp_path / "phased.yaml")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 28, 28, 1)).astype(np.uint8)
    dataset = Dataset("t", images, rng.integers(0, 10, 64), images[:8], rng.integers(0, 10, 8),
                      tuple(str(i) for i in range(10)), "generated", {})
    keras.utils.set_random_seed(0)
    initial = build_model(compiled.spec)  # the same seed builds the same initial weights
    first_phase_only = compiled.spec.model_copy(update={"training": compiled.spec.training.model_copy(
        update={"phases": compiled.spec.training.phases[:1]})})
    one = train(dataclasses.replace(compiled, spec=first_phase_only), dataset, TrainOptions(tmp_path / "one", 2, 16, 0))
    two = train(compiled, dataset, TrainOptions(tmp_path / "two", 3, 16, 0))
    after_one = keras.models.load_model(one.out / "model.keras")
    after_two = keras.models.load_model(two.out / "model.keras")
    for name in ("conv1_conv", "conv1_bn", "conv2_conv", "conv2_bn"):
        for a, b in zip(initial.get_layer(name).weights, after_one.get_layer(name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(initial.get_layer("conv2_conv").weights[0].numpy(),
                              after_two.get_layer("conv2_conv").weights[0].numpy())
    np.testing.assert_array_equal(initial.get_layer("conv1_conv").weights[0].numpy(),
                                  after_two.get_layer("conv1_conv").weights[0].numpy())
