"""How fast an image folder's pixels reach training (issue 23): one pass over a generated folder
of JPEGs, images per second, by several readers, in two cases side by side.

  python bench/stream_decode.py [--images 1000] [--size 224] [--rounds 5]

  resize     JPEGs 256x256 read at --size: every reader resizes
  as-is      JPEGs already --size x --size: the issue's case, nothing to resize

  serial        the loader before streaming: formats.read_image per file, one after the other
  streamed      FileSplit.batches (data/sources.py), what `train` streams: files TensorFlow
                decodes to Pillow's pixels in the graph (data/ingraph.py), the rest by the
                guarded Pillow decoder in tf.numpy_function; parallel calls = cores, batched,
                prefetched. Also at 1 parallel call (streamed/1).
  pillow        the same pipeline with every file through Pillow (the reader before data/ingraph.py),
                at 2 and 1 parallel calls: whether Pillow's calls overlap (it releases the GIL)
  tf.io         tf.io.decode_jpeg + tf.image.resize in the same pipeline shape (no guard, other
                pixels when resizing)
  keras         keras.utils.image_dataset_from_directory, the reference the issue names (it
                always resizes, to float32)

The folders (random-noise JPEGs at quality 90, 10 classes) are made in a temporary directory and
removed afterwards. Each reader's pipeline is built once (as `train` builds one for all its
epochs) and iterated --rounds times after a first pass, the readers taking turns; the median
is printed: images per second of wall time, and CPU milliseconds per image (all of the
process's threads), which a busy machine distorts far less than wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_folder(root: Path, images: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        # Smooth noise compresses like a photo more than white noise does.
        small = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{i:06d}.jpg", quality=90)


def readers(root: Path, shape: tuple[int, int, int]) -> dict:
    """name -> a function making one pass over the folder."""
    import keras
    import tensorflow as tf

    from cnncompile.data import sources
    from cnncompile.data.folders import scan_folder
    from cnncompile.data.formats import read_image

    scan = scan_folder(root, test_split=0.01, seed=0)
    split = sources.FileSplit(np.concatenate([scan.train[0], scan.test[0]]),
                              np.concatenate([scan.train[1], scan.test[1]]), scan.classes, shape)
    cores = sources.workers()

    def streamed(parallel: int, pillow_only: bool):
        decoder, workers = sources.ingraph.decoder, sources.workers
        if pillow_only:  # the reader before data/ingraph.py: every file through Pillow
            def pillow(paths, shape, decode):
                def load(index):  # index -1 pads the epoch to whole batches
                    image = tf.cond(index < 0, lambda: tf.zeros(shape, tf.uint8), lambda: tf.numpy_function(
                        decode, [tf.gather(paths, tf.maximum(index, 0))], tf.uint8, stateful=False))
                    image.set_shape(shape)
                    return image
                return load
            sources.ingraph.decoder = pillow
        sources.workers = lambda: parallel
        try:
            return split.batches(64)
        finally:
            sources.ingraph.decoder, sources.workers = decoder, workers

    def tf_io():
        def load(path):
            image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
            return tf.cast(tf.image.resize(image, shape[:2]), tf.uint8)

        return tf.data.Dataset.from_tensor_slices(split.paths).map(load, num_parallel_calls=cores).batch(64).prefetch(2)

    def passes(data):
        return lambda: [None for _ in data]

    # Each pipeline is built once, as `train` builds one for all its epochs; a pass iterates it.
    return {
        "serial": lambda: [read_image(Path(p), shape[:2], 3) for p in split.paths],
        f"streamed/{cores}": passes(streamed(cores, False)),
        "streamed/1": passes(streamed(1, False)),
        f"pillow/{cores}": passes(streamed(cores, True)),
        "pillow/1": passes(streamed(1, True)),
        "tf.io": passes(tf_io()),
        "keras": passes(keras.utils.image_dataset_from_directory(root, image_size=shape[:2], batch_size=64,
                                                                   shuffle=False, verbose=False)),
    }, split.count


def measure(passes: dict, images: int, rounds: int) -> dict[str, tuple[float, float]]:
    """name -> (median images/s of wall time, median CPU ms per image) over rounds passes, the
    readers taking turns round by round, so that a change in the machine's load hits them all."""
    seconds, cpu = {name: [] for name in passes}, {name: [] for name in passes}
    for _ in range(rounds):
        for name, one_pass in passes.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            one_pass()
            seconds[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (images / statistics.median(seconds[name]), 1000 * statistics.median(cpu[name]) / images)
            for name in passes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import cnncompile.backend  # noqa: F401  (TensorFlow's environment)

    shape = (args.size, args.size, 3)
    results, loads = {}, []
    for case, stored in (("resize", 256), ("as-is", args.size)):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "folder"
            make_folder(root, args.images, stored)
            passes, count = readers(root, shape)
            for one_pass in passes.values():
                one_pass()  # warm: graph tracing, page cache
            loads.append(os.getloadavg()[0])
            for name, result in measure(passes, count, args.rounds).items():
                results.setdefault(name, {})[case] = result
            loads.append(os.getloadavg()[0])
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    print(f"{count:,} JPEGs, 256x256 (resize) or {args.size}x{args.size} (as-is) -> {args.size}x{args.size}x3, "
          f"{os.cpu_count()} cores ({cpu}), load {min(loads):.1f}-{max(loads):.1f}; median of {args.rounds}:")
    print(f"  {'reader':11s} {'resize img/s':>13s} {'CPU ms':>7s} {'as-is img/s':>12s} {'CPU ms':>7s}")
    for name, cases in results.items():
        cells = "".join(f" {cases[case][0]:13,.0f} {cases[case][1]:7.2f}" if i == 0 else
                        f" {cases[case][0]:12,.0f} {cases[case][1]:7.2f}" for i, case in enumerate(("resize", "as-is")))
        print(f"  {name:11s}{cells}")


if __name__ == "__main__":
    main()
