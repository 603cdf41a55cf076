"""Decoding inside the tf.data graph, for the files TensorFlow's own decoders turn into exactly
the pixels the guarded Pillow decoder (formats.decode_image) gives; every other file still goes
through Pillow. A streamed folder whose images already have the model's size and channels then
decodes without a Python call per image (no GIL, no numpy_function hop).

Which files, decided per file from its first bytes (tests/test_decode_speed.py compares every
pixel of both paths on real files): JPEGs whose frame is the split's height x width with the
split's channels (1 grayscale or 3 colour; 4:2:0, 4:2:2 and 4:4:4, baseline and progressive),
decoded with dct_method="INTEGER_ACCURATE": libjpeg-turbo's accurate integer IDCT and fancy
upsampling, what Pillow runs. TensorFlow's default (INTEGER_FAST) differs from Pillow by up to
10 levels, so it is never used. Resizing, channel conversion, CMYK, and PNG (whose in-graph
header checks cost more CPU than they saved) stay with Pillow, whose resize and conversions
TensorFlow does not reproduce.

The hostile-image guard is not bypassed: the scan (folders.scan_folder) checked every file's
format, header size against the pixel limit and end marker before the split exists, and a file
takes this path only if its header announces exactly the split's size. A file TensorFlow's
decoder refuses is handed to Pillow by `checked_batches`, which raises the same named DataError a
Pillow-decoded file would (`train` shows it as `training.dataset: FILE: reason`).

TensorFlow is imported by the callers (pipelines only): `check` never loads this module's work.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cnncompile.data.formats import SIGNATURES

JPEG_MAGIC = next(magic for magic, name in SIGNATURES if name == "JPEG")


def _stand_in_jpeg() -> bytes:
    """A valid 1x1 JPEG, parsed instead of a file that is not one (extract_jpeg_shape fails on
    anything else, and a tf.cond around it cost 0.1 ms of CPU per image)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (1, 1)).save(out, "JPEG")
    return out.getvalue()


def _jpeg_fits(data, is_jpeg, shape: tuple[int, int, int]):
    import tensorflow as tf

    frame = tf.io.extract_jpeg_shape(tf.where(is_jpeg, data, _stand_in_jpeg()), output_type=tf.int64)
    return is_jpeg & tf.reduce_all(frame == tf.constant(shape, tf.int64))


def decoder(paths, shape: tuple[int, int, int], pillow: Callable[[bytes], np.ndarray]):
    """file index (int64 scalar into the tf.string tensor `paths`; -1 for padding: zeros) ->
    uint8 image of `shape`: in the graph for the files described in the module docstring,
    `pillow(path)` through tf.numpy_function for every other one. Few ops and one
    tf.switch_case: every op or nested cond in here costs CPU per image (in-graph PNG checks and
    a tf.case made it 0.1 ms more, a third of the JPEG's decoding)."""
    import tensorflow as tf

    channels = shape[-1]

    def decode(index):
        path = tf.gather(paths, tf.maximum(index, 0))
        data = tf.io.read_file(path)
        is_jpeg = tf.strings.substr(data, 0, len(JPEG_MAGIC)) == JPEG_MAGIC
        branch = tf.where(index < 0, 2, tf.cast(_jpeg_fits(data, is_jpeg, shape), tf.int32))
        image = tf.switch_case(branch, [
            lambda: tf.numpy_function(pillow, [path], tf.uint8, stateful=False),
            lambda: tf.io.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE"),
            lambda: tf.zeros(shape, tf.uint8)])
        image.set_shape(shape)
        return image

    return decode


def padded(order, count: int, batch_size: int):
    """An epoch's file indices (int64 dataset) followed by -1s up to a whole number of batches:
    batching the stream of all epochs then never mixes two epochs in a batch, though the decoding
    runs outside the per-epoch datasets (decoding inside tf.data's flat_map cost 0.2 ms more CPU per
    image)."""
    import tensorflow as tf

    return order.concatenate(tf.data.Dataset.from_tensors(tf.constant(-1, tf.int64)).repeat(-count % batch_size))


def checked_batches(indices, decode, *, batch_size: int, shape: tuple[int, int, int], parallel: int, paths, labels,
                    explain: Callable[[bytes], np.ndarray]):
    """Batches of (uint8 images, labels) of the file-index dataset `indices` (padded: -1 is no
    file, dropped from its batch), decoded by `decode(index)` in `parallel` calls, in order.

    An image whose decoding fails is noticed and `explain(path)` (a numpy function raising the
    file's DataError) called for it: TensorFlow's decoders say "Invalid JPEG data" without a file
    name, Pillow says which file and why. The decoded stream drops failures (ignore_errors) and
    each element carries its place in the stream; the batch holding the first failure is the
    first whose places differ from the expected ones. Checked per batch, not per image: a
    per-image check cost as much CPU as decoding the image."""
    import tensorflow as tf

    expected = indices.enumerate()  # (place in the stream, file index)

    def one(place, index):
        return place, decode(index)

    # One element after the last, so that a failure at the very end shows as a difference too.
    after = tf.data.Dataset.from_tensors((tf.constant(-2, tf.int64), tf.zeros(shape, tf.uint8)))
    got = expected.map(one, num_parallel_calls=parallel, deterministic=True).ignore_errors().concatenate(after)

    def check(expected, got):
        (places, files), (got_places, images) = expected, got
        n = tf.shape(places)[0]
        got_places = got_places[:n]
        got_places = tf.pad(got_places, [[0, n - tf.shape(got_places)[0]]], constant_values=-3)
        keep = files >= 0

        def refuse():
            first = tf.argmax(tf.cast(got_places != places, tf.int32))
            # Its result stands for the batch (a result nobody used would be pruned); it raises.
            refused = tf.numpy_function(explain, [tf.gather(paths, files[first])], tf.uint8, stateful=False)
            refused.set_shape((None, *shape))
            return refused

        images = tf.cond(tf.reduce_all(got_places == places), lambda: images[:n], refuse)
        return tf.boolean_mask(images, keep), tf.gather(labels, tf.boolean_mask(files, keep))

    return tf.data.Dataset.zip(expected.batch(batch_size), got.batch(batch_size)).map(check)
