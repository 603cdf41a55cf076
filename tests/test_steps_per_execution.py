"""`train` runs a whole epoch per call of Keras's train function unless a callback watches
single batches (backend/fitting.py steps_per_execution): same weights, fewer calls."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TINY, make_idx_dir

keras = pytest.importorskip("keras")


class EpochsOnly(keras.callbacks.Callback):
    """Watches epochs only; records how many steps each call of the train function ran."""

    def on_train_begin(self, logs=None):
        self.steps_per_execution = self.model.steps_per_execution


class WatchesBatches(EpochsOnly):
    def on_train_batch_end(self, batch, logs=None):
        self.batches = getattr(self, "batches", 0) + 1


def test_whole_epoch_per_call_unless_a_callback_watches_batches(tmp_path):
    from cnncompile.backend.fitting import steps_per_execution
    from cnncompile.run.checkpoint import Checkpoint

    epoch_callbacks = [EpochsOnly(), keras.callbacks.EarlyStopping(), keras.callbacks.ReduceLROnPlateau(),
                       Checkpoint(tmp_path, "sha", [])]
    assert steps_per_execution(epoch_callbacks, 79) == 79
    assert steps_per_execution([], 79) == 79
    assert steps_per_execution([*epoch_callbacks, WatchesBatches()], 79) == 1
    assert steps_per_execution([keras.callbacks.TensorBoard(str(tmp_path / "tb"))], 79) == 1
    assert steps_per_execution([keras.callbacks.CallbackList([EpochsOnly()])], 79) == 1  # hooks of its own


def test_the_command_line_watches_batches_only_where_it_draws_a_bar():
    from rich.console import Console

    from cnncompile.backend.fitting import steps_per_execution
    from cnncompile.run.progress import training_progress

    assert steps_per_execution([training_progress(Console(force_terminal=False))], 79) == 79  # epoch lines only
    assert steps_per_execution([training_progress(Console(force_terminal=True))], 79) == 1  # a bar per batch


def test_a_whole_epoch_per_call_trains_the_same_weights(tmp_path):
    from cnncompile.analysis.check import compile_file
    from cnncompile.run.train import train_spec

    make_idx_dir(tmp_path / "data" / "mnist", n_train=160, n_test=32)
    # 120 training images in batches of 32: 4 steps an epoch, the last one short
    (tmp_path / "tiny.yaml").write_text(TINY.replace("epochs: 1", "epochs: 2"))
    compiled = compile_file(tmp_path / "tiny.yaml")
    weights = {}
    for watcher in (EpochsOnly(), WatchesBatches()):
        name = type(watcher).__name__
        result = train_spec(compiled, out=tmp_path / name, data_dir=tmp_path / "data", seed=3, progress=watcher)
        assert result.metrics["epochs"] == 2
        weights[name] = keras.saving.load_model(tmp_path / name / "model.keras").get_weights()
        expected = 4 if name == "EpochsOnly" else 1
        assert watcher.steps_per_execution == expected
    assert all(np.array_equal(a, b) for a, b in zip(weights["EpochsOnly"], weights["WatchesBatches"], strict=True))
