"""The batches `train` feeds model.fit: tf.data's autotuner stays off (its model thread made the
iterator's destructor wait up to 60 s after the last epoch, issue 20; bench/stall.py)."""

from __future__ import annotations

import numpy as np


def test_training_batches_run_without_tf_data_autotuning():
    from cnncompile.data.sources import array_batches as batches

    x, y = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2, 1), np.arange(10)
    data = batches(x, y, batch_size=4, shuffle=True, seed=0, first_epoch=1, epochs=3)
    assert data.options().autotune.enabled is False
    sizes = [len(labels) for _, labels in data]
    assert sizes == [4, 4, 2, 4, 4, 2]  # epochs 1 and 2, each ending with the remainder
