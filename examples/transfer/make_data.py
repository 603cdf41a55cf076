"""The transfer example's data, from real MNIST (CNNCOMPILE_DATA_DIR or ~/.cnncompile/data):

- digits0to4.npz: every training and test image of the digits 0-4 (labels 0-4);
- digits5to9_50.npz: 50 training images of each digit 5-9 (a fixed, seeded sample), and every
  test image of 5-9; labels 5-9 become 0-4 (the new task's classes);
- digits5to9_10.npz: the same with 10 images of each (the first 10 of each class's 50), for
  bench/transfer.py's second row.

Usage: python examples/transfer/make_data.py   (writes next to this file)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cnncompile.data.datasets import load_dataset

PER_CLASS = (50, 10)


def main(out: Path = Path(__file__).parent) -> None:
    mnist = load_dataset("mnist", image_shape=(28, 28, 1))
    old_train, old_test = mnist.y_train < 5, mnist.y_test < 5
    np.savez_compressed(out / "digits0to4.npz", x_train=mnist.x_train[old_train], y_train=mnist.y_train[old_train],
                        x_test=mnist.x_test[old_test], y_test=mnist.y_test[old_test])
    rng = np.random.default_rng(0)
    chosen = [rng.choice(np.flatnonzero(mnist.y_train == digit), max(PER_CLASS), replace=False)
              for digit in range(5, 10)]
    new_test = mnist.y_test >= 5
    print(f"wrote {out}/digits0to4.npz ({old_train.sum()} train, {old_test.sum()} test)")
    for count in PER_CLASS:
        few = np.sort(np.concatenate([indices[:count] for indices in chosen]))
        np.savez_compressed(out / f"digits5to9_{count}.npz", x_train=mnist.x_train[few],
                            y_train=mnist.y_train[few] - 5, x_test=mnist.x_test[new_test],
                            y_test=mnist.y_test[new_test] - 5)
        print(f"wrote {out}/digits5to9_{count}.npz ({len(few)} train, {new_test.sum()} test)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
