"""How fast an image folder's pixels reach training (issue 23): one pass over a generated folder
of JPEGs, images per second, by four readers.

  python bench/stream_decode.py [--images 1000] [--size 224] [--rounds 3]

  serial     the loader before streaming: formats.read_image per file, one after the other
  streamed   FileSplit.batches (data/sources.py): the guarded Pillow decoder in tf.numpy_function,
             one call per core in parallel, batched, prefetched; what `train` streams
  tf.io      tf.io.decode_jpeg + tf.image.resize in the same pipeline shape: what a pure
             TensorFlow decoder would give (not used: its resizing and grayscale conversion
             differ from Pillow's, and it skips the hostile-image guard)
  keras      keras.utils.image_dataset_from_directory, the reference the issue names

The folder (random-noise JPEGs at quality 90, 10 classes, 256x256 resized to --size) is made
in a temporary directory and removed afterwards. Each reader's best of --rounds is printed:
images per second of wall time, and CPU milliseconds per image (all of the process's threads),
which a busy machine distorts far less than wall time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_folder(root: Path, images: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        # Smooth noise compresses like a photo more than white noise does.
        small = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize((256, 256), Image.Resampling.BILINEAR).save(folder / f"{i:06d}.jpg", quality=90)


def best(seconds: list[float], images: int) -> float:
    return images / min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import cnncompile.backend  # noqa: F401  (TensorFlow's environment)
    import keras
    import tensorflow as tf

    from cnncompile.data.folders import scan_folder
    from cnncompile.data.formats import read_image
    from cnncompile.data.sources import FileSplit, workers

    shape = (args.size, args.size, 3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "folder"
        make_folder(root, args.images)
        scan = scan_folder(root, test_split=0.01, seed=0)
        split = FileSplit(np.concatenate([scan.train[0], scan.test[0]]), np.concatenate([scan.train[1], scan.test[1]]),
                          scan.classes, shape)
        results = {}

        def timed(name, one_pass):
            seconds, cpu = [], []
            for _ in range(args.rounds):
                start, start_cpu = time.perf_counter(), time.process_time()
                one_pass()
                seconds.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            results[name] = (best(seconds, split.count), 1000 * min(cpu) / split.count)

        timed("serial", lambda: [read_image(Path(p), shape[:2], 3) for p in split.paths])
        timed("streamed", lambda: [None for _ in split.batches(64)])

        def tf_io():
            def load(path):
                image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
                return tf.cast(tf.image.resize(image, shape[:2]), tf.uint8)

            data = tf.data.Dataset.from_tensor_slices(split.paths).map(load, num_parallel_calls=workers()) \
                .batch(64).prefetch(2)
            return [None for _ in data]

        timed("tf.io", tf_io)
        timed("keras", lambda: [None for _ in keras.utils.image_dataset_from_directory(
            root, image_size=shape[:2], batch_size=64, shuffle=False, verbose=False)])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"{split.count:,} JPEGs 256x256 -> {args.size}x{args.size}x3, {workers()} cores ({cpu}), "
          f"load {os.getloadavg()[0]:.1f}; best of {args.rounds}:")
    print(f"  {'reader':9s} {'images/s':>9s} {'CPU ms/image':>13s}")
    for name, (rate, cpu_ms) in results.items():
        print(f"  {name:9s} {rate:9,.0f} {cpu_ms:13.2f}")


if __name__ == "__main__":
    main()
