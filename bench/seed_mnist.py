"""The seed: the classic hand-written Keras MNIST program, reading the same IDX files.

The reference that `cnncompile train examples/mnist_cnn.yaml` is timed against. Kept as
the tutorial wrote it (float32 arrays scaled in numpy, Sequential, rmsprop, batch 64);
only the data loading differs, since there is no internet here.
Usage: python bench/seed_mnist.py DATA_DIR [EPOCHS]
"""

import gzip
import sys
from pathlib import Path

import numpy as np
from keras import layers, models
from keras.utils import to_categorical


def idx(path):
    data = gzip.open(path).read()
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


folder = Path(sys.argv[1]) / "mnist"
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
train_images = idx(folder / "train-images-idx3-ubyte.gz").reshape((-1, 28, 28, 1)).astype("float32") / 255
test_images = idx(folder / "t10k-images-idx3-ubyte.gz").reshape((-1, 28, 28, 1)).astype("float32") / 255
train_labels = to_categorical(idx(folder / "train-labels-idx1-ubyte.gz"))
test_labels = to_categorical(idx(folder / "t10k-labels-idx1-ubyte.gz"))

model = models.Sequential()
model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation="relu"))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation="relu"))
model.add(layers.Flatten())
model.add(layers.Dense(64, activation="relu"))
model.add(layers.Dense(10, activation="softmax"))
model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
model.fit(train_images, train_labels, epochs=epochs, batch_size=64, verbose=0)
test_loss, test_acc = model.evaluate(test_images, test_labels, verbose=0)
print(f"test_acc {test_acc:.4f}")
