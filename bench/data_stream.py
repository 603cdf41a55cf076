"""Issue 23's measurements: memory of `train` on a JPEG folder, input pipeline throughput against
Keras's image_dataset_from_directory, the pipeline against MobileNetV2's training speed, memory
against images seen. The folder comes from bench/data_generate.py (never committed).

  python bench/data_stream.py memory     FOLDER [--repo PATH] [--epochs 1]
      peak RSS (the child's high-water mark, getrusage RUSAGE_CHILDREN) of a whole
      `cnncompile train` of a small net on FOLDER (image folder or packed shards), run from the
      repository at --repo (main's work tree for "before", a branch's worktree for "after")
  python bench/data_stream.py throughput FOLDER SHARDS [--passes 3] [--images N]
      images/s of one pass over the training images: Keras's image_dataset_from_directory,
      the folder streamed (FileSplit), the shards (ShardSplit); alternating, medians
  python bench/data_stream.py mobilenet  SHARDS [--steps 20]
      MobileNetV2 (examples/zoo) training steps/s at batch 32 on arrays in memory, against
      the shard pipeline alone in batches of 32 per second
  python bench/data_stream.py flat       SOURCE [--images N] [--every N]
      RSS of a process streaming SOURCE (folder or shards) through `batches`, against images seen

Each subcommand prints one JSON line; the CPU, its features and the load average are included:
on a shared machine, say so beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = 32

SMALL_NET = """\
name: small_{size}
input: {{shape: [{size}, {size}, 3]}}
layers:
  - {{type: Conv2D, filters: 8, kernel_size: 3, strides: 4, activation: relu}}
  - {{type: MaxPooling2D, pool_size: 4}}
  - {{type: Flatten}}
  - {{type: Dense, units: 10, activation: softmax}}
training:
  dataset: {{path: {folder}{cache}}}
  optimizer: {{type: adam, learning_rate: 0.001}}
  loss: sparse_categorical_crossentropy
  epochs: {epochs}
  batch_size: 32
  validation_split: 0.0
"""


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    return {"cpu": cpu, "cores": os.cpu_count(), "features": [f for f in ("avx2", "avx512f", "avx512_bf16",
                                                                         "avx512_vnni", "amx_tile") if f in flags],
            "load_average": [round(x, 1) for x in os.getloadavg()], "python": platform.python_version()}


def memory(args) -> dict:
    """Peak RSS of one whole `cnncompile train` process, from the kernel's accounting."""
    repo = Path(args.repo).resolve()
    with tempfile.TemporaryDirectory(dir=args.tmp) as scratch:
        spec = Path(scratch) / "small.yaml"
        cache = f", cache: {args.cache}" if args.cache else ""
        spec.write_text(SMALL_NET.format(size=224, folder=Path(args.folder).resolve(), cache=cache, epochs=args.epochs))
        env = {**os.environ, "PYTHONPATH": str(repo), "NO_COLOR": "1"}
        load = os.getloadavg()[0]
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "cnncompile", "train", str(spec), "--out",
                                 str(Path(scratch) / "run"), "--quiet"], cwd=repo, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kilobytes on Linux
    return {"what": "memory", "repo": str(repo), "commit": _commit(repo), "folder": args.folder,
            "cache": args.cache, "returncode": result.returncode, "peak_rss_gb": round(peak / 1e9, 2),
            "seconds": round(elapsed, 1), "stdout": result.stdout.strip()[-300:], "stderr": result.stderr.strip()[-600:],
            "load_before": round(load, 1), **machine()}


def _commit(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def throughput(args) -> dict:
    import cnncompile.backend  # noqa: F401  (TensorFlow quietly)
    import keras

    from cnncompile.data.folders import scan_folder
    from cnncompile.data.shards import ShardSplit, read_manifest
    from cnncompile.data.sources import FileSplit

    shape = (224, 224, 3)
    scan = scan_folder(Path(args.folder), test_split=0.2, seed=0)
    files = FileSplit(*scan.train, scan.classes, shape)
    manifest = read_manifest(Path(args.shards))
    shards = ShardSplit.open(Path(args.shards), manifest, "train", shape)
    limit = args.images or min(files.count, shards.count)
    keras_data = keras.utils.image_dataset_from_directory(args.folder, image_size=shape[:2], batch_size=BATCH,
                                                          shuffle=True, seed=0, verbose=False)
    pipelines = {
        "keras image_dataset_from_directory": lambda: keras_data,
        "folder (FileSplit)": lambda: files.batches(BATCH, shuffle=True, seed=0),
        "shards (ShardSplit)": lambda: shards.batches(BATCH, shuffle=True, seed=0),
    }
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.passes):
        for name, make in pipelines.items():
            seen, started = 0, time.perf_counter()
            for images, _ in make():
                seen += int(images.shape[0])
                if seen >= limit:
                    break
            rates[name].append(seen / (time.perf_counter() - started))
    return {"what": "throughput", "images_per_pass": limit, "batch_size": BATCH,
            "median_images_per_second": {k: round(statistics.median(v)) for k, v in rates.items()},
            "passes": {k: [round(r) for r in v] for k, v in rates.items()}, **machine()}


def mobilenet(args) -> dict:
    import cnncompile.backend  # noqa: F401
    import numpy as np
    import tensorflow as tf

    from cnncompile.analysis.check import compile_file
    from cnncompile.backend.builder import build_model
    from cnncompile.data.shards import ShardSplit, read_manifest

    model = build_model(compile_file(ROOT / "examples" / "zoo" / "mobilenet_v2.yaml").spec)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 256, (BATCH, 224, 224, 3), np.uint8).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, BATCH)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)  # traced, warmed up
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0)
    train_steps = args.steps / (time.perf_counter() - started)
    shards = ShardSplit.open(Path(args.shards), read_manifest(Path(args.shards)), "train", (224, 224, 3))
    iterator = iter(shards.batches(BATCH, shuffle=True, seed=0))
    next(iterator)
    started, batches = time.perf_counter(), 0
    while batches < args.pipeline_steps:
        next(iterator)
        batches += 1
    pipeline_steps = batches / (time.perf_counter() - started)
    return {"what": "mobilenet", "batch_size": BATCH, "mobilenet_v2_train_steps_per_second": round(train_steps, 2),
            "shard_pipeline_batches_per_second": round(pipeline_steps, 2),
            "pipeline_over_training": round(pipeline_steps / train_steps, 1), **machine()}


def flat(args) -> dict:
    """RSS against images seen while a process streams a source: flat means bounded memory."""
    import cnncompile.backend  # noqa: F401

    from cnncompile.data.folders import scan_folder
    from cnncompile.data.shards import ShardSplit, is_shard_folder, read_manifest
    from cnncompile.data.sources import FileSplit

    shape, source = (224, 224, 3), Path(args.source)
    if is_shard_folder(source):
        split = ShardSplit.open(source, read_manifest(source), "train", shape)
    else:
        scan = scan_folder(source, test_split=0.2, seed=0)
        split = FileSplit(*scan.train, scan.classes, shape)
    limit, seen, points = args.images or split.count, 0, []
    started = time.perf_counter()
    for images, _ in split.batches(BATCH, shuffle=True, seed=0, epochs=100):
        seen += int(images.shape[0])
        if seen // args.every != (seen - int(images.shape[0])) // args.every or seen >= limit:
            points.append((seen, round(_rss() / 1e9, 3)))
        if seen >= limit:
            break
    return {"what": "flat", "source": str(source), "images": split.count, "seen": seen,
            "images_per_second": round(seen / (time.perf_counter() - started)),
            "rss_gb_by_images_seen": points, **machine()}


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    m = commands.add_parser("memory")
    m.add_argument("folder")
    m.add_argument("--repo", default=str(ROOT))
    m.add_argument("--epochs", type=int, default=1)
    m.add_argument("--cache", choices=["auto", "memory", "disk", "none"])
    m.add_argument("--tmp", default=None)
    t = commands.add_parser("throughput")
    t.add_argument("folder")
    t.add_argument("shards")
    t.add_argument("--passes", type=int, default=3)
    t.add_argument("--images", type=int)
    b = commands.add_parser("mobilenet")
    b.add_argument("shards")
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--pipeline-steps", type=int, default=100)
    f = commands.add_parser("flat")
    f.add_argument("source")
    f.add_argument("--images", type=int)
    f.add_argument("--every", type=int, default=2000)
    args = parser.parse_args()
    result = {"memory": memory, "throughput": throughput, "mobilenet": mobilenet, "flat": flat}[args.command](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
