"""Where a split's images come from: one protocol for arrays held in memory and files streamed.

A dataset is two splits (train, test); `train` slices the validation images off the end of its
training split, as model.fit's validation_split does. Every Split

  - knows its `count`, its `classes`, and its `labels()` (int64, without touching pixels);
  - gives `batches(batch_size, shuffle=, seed=, first_epoch=, epochs=)`: a tf.data pipeline of
    (uint8 images (B, H, W, C), labels) for epochs first_epoch..epochs-1 back to back, the last
    batch of each epoch smaller, epoch e in an order that is a function of (seed, e) only, so a
    run resumed at epoch e sees exactly what an uninterrupted one would;
  - gives NumPy without a framework: `take(n)` (the first n images: verification, statistics),
    `gather(indices)` (calibration samples), `numpy_batches(batch_size)` (evaluation, in order);
  - can be cut: `slice(start, stop)` (validation = the last images of the training split).

ArraySplit holds uint8 arrays (IDX, npz, built-ins, small image folders decoded once);
FileSplit streams image files through tf.data, decoding them in parallel: in the graph where
TensorFlow gives Pillow's pixels (data/ingraph.py), else with the guarded decoder
(formats.decode_image); DiskSplit reads a folder decoded once into a file on disk.
A new kind of source (TFRecord shards) subclasses Split and implements the abstract methods;
the defaults of the others stream through `batches`.

TensorFlow is imported inside the methods that build pipelines: `check` never loads it.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cnncompile.data import ingraph
from cnncompile.data.formats import DataError, decode_image

Progress = Callable[[int, int], None]  # (done, total), for a bar the CLI draws


def workers() -> int:
    """Parallel decoders: the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _pipeline_options():
    import tensorflow as tf

    # tf.data's autotuner off: these pipelines set their parallelism and prefetch themselves,
    # and the autotuner's model thread sleeps up to 60 s between optimizations without waking
    # for cancellation, so the iterator's destructor waited that long after the last epoch
    # (issue 20: 49-55 s; bench/stall.py measures it).
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def by_epoch(count: int, each, *, shuffle: bool, seed: int, first_epoch: int, epochs: int):
    """Epochs first_epoch..epochs-1 back to back, epoch e being `each(indices)` of the int64
    index dataset range(count), shuffled by (seed, e) alone (stateless) or in order."""
    import tensorflow as tf

    def epoch(e):
        order = tf.range(count, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.constant(seed, tf.int64), e]))
        return each(tf.data.Dataset.from_tensor_slices(order))

    return tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch)


def array_batches(x: np.ndarray, y: np.ndarray, *, batch_size: int, shuffle: bool, seed: int, first_epoch: int,
                  epochs: int):
    """Arrays in memory as epochs of batches (see the module docstring), gathered from two
    constants: the fastest pipeline there is for data that fits in memory."""
    import tensorflow as tf

    images, labels = tf.constant(x), tf.constant(y)

    def gather(indices):
        return tf.gather(images, indices), tf.gather(labels, indices)

    batched = by_epoch(len(x), lambda order: order.batch(batch_size), shuffle=shuffle, seed=seed,
                       first_epoch=first_epoch, epochs=epochs)
    return batched.map(gather).prefetch(2).with_options(_pipeline_options())


class Split(ABC):
    """One split of a dataset; see the module docstring for the protocol."""

    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, C) of every image it gives
    # Whether each worker of a multi-worker run can read its own files of this split
    # (worker_batches; run/distributed.by_file) instead of all workers slicing arrays in memory.
    reads_by_file: bool = False

    @property
    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def labels(self) -> np.ndarray:
        """int64 (count,) class indices, in the split's own (unshuffled) order."""

    @abstractmethod
    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, first_epoch: int = 0,
                epochs: int = 1, one_hot: bool = False):
        """tf.data of (uint8 (B, H, W, C), labels) batches; one_hot gives float labels over
        len(classes) (categorical losses) instead of int64 indices."""

    @abstractmethod
    def slice(self, start: int, stop: int) -> Split:
        """Images start..stop-1 of this split, as a split."""

    @property
    def in_memory(self) -> bool:
        return False

    def describe(self) -> str:
        return "in memory" if self.in_memory else "streamed"

    def one_pass(self, batch_size: int, one_hot: bool = False):
        """One epoch in the split's order, for Keras's evaluate and validation, with its length
        declared: a streamed pipeline's length is unknown to tf.data (files are decoded in a
        flat_map), so Keras would find each pass's end by running out and warn "Your input ran
        out of data" every time."""
        import tensorflow as tf

        batches = -(-self.count // batch_size)
        return self.batches(batch_size, one_hot=one_hot).apply(tf.data.experimental.assert_cardinality(batches))

    def numpy_batches(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(images, int64 labels) in the split's order, batch by batch."""
        yield from self.batches(batch_size).as_numpy_iterator()

    def gather(self, indices: np.ndarray) -> np.ndarray:
        """The images at these indices (in that order), streaming the split once and keeping
        only them."""
        indices = np.asarray(indices, np.int64)
        out = np.zeros((len(indices), *self.image_shape), np.uint8)
        wanted = np.argsort(indices, kind="stable")
        position, start = 0, 0
        for images, _ in self.numpy_batches():
            stop = start + len(images)
            while position < len(wanted) and indices[wanted[position]] < stop:
                out[wanted[position]] = images[indices[wanted[position]] - start]
                position += 1
            if position == len(wanted):
                break
            start = stop
        return out

    def take(self, n: int) -> np.ndarray:
        """The first n images (all of them if there are fewer)."""
        return self.gather(np.arange(min(n, self.count)))

    def _with_labels(self, data, one_hot: bool):
        if not one_hot:
            return data
        import tensorflow as tf

        classes = len(self.classes)
        return data.map(lambda images, labels: (images, tf.one_hot(labels, classes, dtype=tf.float64)))


class ArraySplit(Split):
    """uint8 (N, H, W, C) images and their labels, held in memory."""

    def __init__(self, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...]):
        self.x, self.y, self.classes = x, np.asarray(y), tuple(classes)
        self.image_shape = tuple(x.shape[1:])

    @property
    def count(self) -> int:
        return len(self.x)

    @property
    def in_memory(self) -> bool:
        return True

    def labels(self) -> np.ndarray:
        return self.y

    def arrays(self, one_hot: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels); one-hot labels as keras.utils.to_categorical makes them (float64)."""
        return self.x, np.eye(len(self.classes))[self.y] if one_hot else self.y

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, first_epoch: int = 0,
                epochs: int = 1, one_hot: bool = False):
        # The labels gathered like the images: the pipeline `train` always had for arrays.
        return array_batches(*self.arrays(one_hot), batch_size=batch_size, shuffle=shuffle, seed=seed,
                             first_epoch=first_epoch, epochs=epochs)

    def slice(self, start: int, stop: int) -> ArraySplit:
        return ArraySplit(self.x[start:stop], self.y[start:stop], self.classes)

    def numpy_batches(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, self.count, batch_size):
            yield self.x[start:start + batch_size], self.y[start:start + batch_size]

    def gather(self, indices: np.ndarray) -> np.ndarray:
        return self.x[np.asarray(indices, np.int64)]

    def take(self, n: int) -> np.ndarray:
        return self.x[:n]


class FileSplit(Split):
    """Image files (PNG/JPEG) and their labels, decoded when a pipeline reaches them, in
    `workers()` parallel calls: in the graph where TensorFlow gives the guarded decoder's pixels
    (JPEGs at the split's size and channels, data/ingraph.py), else by the guarded decoder itself
    (pixel limit, format sniffing, the same resizing and channel conversion as ever), and memory holds the file names plus a few
    batches, whatever the number of images."""

    def __init__(self, paths: np.ndarray, y: np.ndarray, classes: tuple[str, ...], image_shape: tuple[int, int, int]):
        self.paths, self.y, self.classes = np.asarray(paths, dtype=str), np.asarray(y, np.int64), tuple(classes)
        self.image_shape = tuple(image_shape)

    @property
    def count(self) -> int:
        return len(self.paths)

    def labels(self) -> np.ndarray:
        return self.y

    def describe(self) -> str:
        return f"streamed from {self.count:,} files"

    def decode(self, path: str | bytes) -> np.ndarray:
        """One file as uint8 (H, W, C) at this split's shape; DataError names it and says why."""
        path = Path(os.fsdecode(path))
        return decode_image(path, self.image_shape[:2], self.image_shape[-1]).pixels

    def refused(self, path: str | bytes) -> np.ndarray:
        """Raise the DataError of a file TensorFlow's decoder refused mid-stream: Pillow's, which
        names the file and says why (ingraph.checked_batches)."""
        self.decode(path)
        raise DataError(f"{os.fsdecode(path)}: TensorFlow's decoder refuses this file, Pillow reads it; "
                        "use `cache: memory` or `cache: disk` (decoded by Pillow) for this folder")

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, first_epoch: int = 0,
                epochs: int = 1, one_hot: bool = False):
        import tensorflow as tf

        paths, labels, shape = tf.constant(self.paths), tf.constant(self.y), self.image_shape
        # Files TensorFlow decodes to Pillow's pixels are decoded in the graph; the rest by the
        # guarded decoder as Python, whose Pillow calls release the GIL, so parallel calls overlap.
        # The file list is what gets shuffled (exact, and no shuffle buffer of decoded images):
        # each epoch's indices, padded to whole batches, then decoded in parallel, in order.
        indices = by_epoch(self.count, lambda order: ingraph.padded(order, self.count, batch_size), shuffle=shuffle,
                           seed=seed, first_epoch=first_epoch, epochs=epochs)
        data = ingraph.checked_batches(indices, ingraph.decoder(paths, shape, self.decode), batch_size=batch_size,
                                       shape=shape, parallel=workers(), paths=paths, labels=labels,
                                       explain=self.refused)
        return self._with_labels(data, one_hot).prefetch(2).with_options(_pipeline_options())

    def slice(self, start: int, stop: int) -> FileSplit:
        return FileSplit(self.paths[start:stop], self.y[start:stop], self.classes, self.image_shape)

    def gather(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        out = np.zeros((len(indices), *self.image_shape), np.uint8)
        with ThreadPoolExecutor(workers()) as pool:
            for i, pixels in enumerate(pool.map(self.decode, self.paths[indices])):
                out[i] = pixels
        return out

    def numpy_batches(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, self.count, batch_size):
            stop = min(start + batch_size, self.count)
            yield self.gather(np.arange(start, stop)), self.y[start:stop]

    def decode_all(self, out: np.ndarray, progress: Progress | None = None,
                   on_error: Callable[[int, Exception], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every image into `out` (an array, or a memory-mapped file), decoded in parallel, the
        images kept packed at its start; `on_error(index, error)` decides about a file that
        fails (raise to refuse, return to leave it out). Returns (out, indices kept)."""
        def one(i: int):
            try:
                return self.decode(self.paths[i])
            except DataError as exc:
                return exc

        kept = []
        every = max(1, self.count // 100)  # about a hundred progress reports
        with ThreadPoolExecutor(workers()) as pool:
            for i, result in enumerate(pool.map(one, range(self.count))):
                if isinstance(result, Exception):
                    if on_error is None:
                        raise result
                    on_error(i, result)
                else:
                    out[len(kept)] = result
                    kept.append(i)
                if progress is not None and ((i + 1) % every == 0 or i + 1 == self.count):
                    progress(i + 1, self.count)
        return out, np.asarray(kept, np.int64)
