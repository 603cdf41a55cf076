"""Why mixed_bfloat16 gains less in `train` than in plain Keras (issue 20): steady training
throughput of one configuration at a time, float32 against mixed_bfloat16, in fresh processes.

  python bench/precision_bisect.py --configs plain plain+determinism ours ours-determinism \
                                   [--epochs 4] [--rounds 3] [--data-dir ../shared/data]

A configuration is a model plus what our train path adds, named by `+`/`-` parts:

  plain        the issue's net: three stages of conv-BN-ReLU pairs (32/64/128 filters, max
               pooling between), global average pooling, Dense(10) in float32; numpy arrays
               into model.fit, batch 64, Adam; nothing else
  ours         examples/mnist_bn_dropout.yaml as `train` runs it (run/train.py's train_spec)
  +determinism tf.config.experimental.enable_op_determinism() (train and tune set it)
  +pipeline    data/sources.array_batches (what train feeds fit) instead of numpy arrays
  +augment     the spec's augmentation layers in front (float32, as train has them)
  +fused       BatchNormalization through TensorFlow's fused kernel (backend/batchnorm.py)
  -determinism `ours` with determinism off (TrainOptions cannot turn it off: patched here)
  -augment     `ours` without the spec's augmentation
  -fused       `ours` with Keras's own BatchNormalization (as train had it before)

Each process trains EPOCHS epochs of the 4,500 training images and reports the median epoch
time after the first (which traces and compiles). float32 and bfloat16 alternate inside each
round, the order swapping every round; results are medians over rounds. Results go to
bench/results/precision_bisect.json (not committed; docs/precision.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from precision import epoch_timer  # noqa: E402  (bench/precision.py, beside this script)
SPEC = "examples/mnist_bn_dropout.yaml"


def plain_net(policy: str, fused: bool = False):
    """The issue's network, built under `policy` with the output in float32."""
    import keras

    from cnncompile.backend.batchnorm import FusedBatchNormalization

    batch_norm = FusedBatchNormalization if fused else keras.layers.BatchNormalization

    keras.config.set_dtype_policy(policy)
    layers = [keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255)]
    for stage, filters in enumerate((32, 64, 128)):
        if stage:
            layers.append(keras.layers.MaxPooling2D())
        for _ in range(2):
            layers += [keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
                       batch_norm(), keras.layers.ReLU()]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation="softmax", dtype="float32")]
    model = keras.Sequential(layers)
    keras.config.set_dtype_policy("float32")
    return model


def child(config: str, policy: str, epochs: int, data_dir: str) -> dict:
    parts = config.replace("-", " -").replace("+", " +").split()
    base, changes = parts[0], set(parts[1:])
    import cnncompile.backend  # noqa: F401

    import keras
    import tensorflow as tf

    from cnncompile.analysis.check import compile_file
    from cnncompile.data.datasets import load_dataset

    compiled = compile_file(ROOT / SPEC)
    timer = epoch_timer()
    if base == "ours":
        from cnncompile.run import train

        if "-determinism" in changes:  # train sets it unconditionally: patch it out for this process
            tf.config.experimental.enable_op_determinism = lambda: None
        if "-augment" in changes:
            train.kt.augmentation = lambda training, seed: []
        if "-fused" in changes:
            from cnncompile.backend import builder

            builder.TRAINING_BUILDERS.clear()
        result = train.train_spec(compiled, out=Path(tempfile.mkdtemp(prefix="bench-bisect-")), epochs=epochs,
                                  seed=0, data_dir=Path(data_dir), force=True, precision=policy, progress=timer)
        return {"epoch_seconds": timer.seconds, "epoch_cpu_seconds": timer.cpu_seconds,
                "train_images": result.metrics["train_images"]}

    from cnncompile.backend import fitting

    keras.utils.set_random_seed(0)
    if "+determinism" in changes:
        tf.config.experimental.enable_op_determinism()
    data = load_dataset("mnist", data_dir=Path(data_dir))
    x, y = data.x_train[:4500], keras.utils.to_categorical(data.y_train[:4500], 10)
    model = plain_net(policy, fused="+fused" in changes)
    if "+augment" in changes:
        model = keras.Sequential([keras.Input((28, 28, 1)), *fitting.augmentation(compiled.spec.training, 0), model])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    if "+pipeline" in changes:
        from cnncompile.data.sources import array_batches

        batches = array_batches(x, y, batch_size=64, shuffle=True, seed=0, first_epoch=0, epochs=epochs)
        model.fit(batches, epochs=epochs, steps_per_epoch=-(-len(x) // 64), callbacks=[timer], verbose=0)
    else:
        model.fit(x, y, batch_size=64, epochs=epochs, callbacks=[timer], verbose=0)
    return {"epoch_seconds": timer.seconds, "epoch_cpu_seconds": timer.cpu_seconds, "train_images": len(x)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", nargs="+", default=["plain", "ours"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=os.environ.get("CNNCOMPILE_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "POLICY", "EPOCHS"))
    args = parser.parse_args()
    if args.child:
        config, policy, epochs = args.child
        print(json.dumps(child(config, policy, int(epochs), args.data_dir)))
        return
    from cnncompile.cpu import cpu_features

    print("CPU:", cpu_features().model_name, flush=True)
    runs: list[dict] = []
    for round_ in range(args.rounds):
        for config in args.configs:
            order = ["float32", "mixed_bfloat16"]
            for policy in order if round_ % 2 == 0 else order[::-1]:
                out = subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--child", config, policy,
                                      str(args.epochs)], cwd=ROOT, capture_output=True, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
                if out.returncode != 0:
                    sys.exit(out.stderr[-3000:])
                run = json.loads(out.stdout.strip().splitlines()[-1])
                steady = statistics.median(run["epoch_seconds"][1:])
                steady_cpu = statistics.median(run["epoch_cpu_seconds"][1:])
                run.update(config=config, policy=policy, round=round_, images_per_second=run["train_images"] / steady,
                           images_per_cpu_second=run["train_images"] / steady_cpu, load=os.getloadavg()[0])
                runs.append(run)
                print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in run.items()
                                  if not k.startswith("epoch_")}), flush=True)
    summary = {}
    for config in args.configs:
        summary[config] = {}
        for measure in ("images_per_second", "images_per_cpu_second"):
            rate = {p: statistics.median(r[measure] for r in runs if r["config"] == config and r["policy"] == p)
                    for p in ("float32", "mixed_bfloat16")}
            summary[config][measure] = {**{p: round(v) for p, v in rate.items()},
                                        "speedup": round(rate["mixed_bfloat16"] / rate["float32"], 2)}
    print(json.dumps(summary, indent=2))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "precision_bisect.json").write_text(json.dumps({"summary": summary, "runs": runs},
                                                                                 indent=2))


if __name__ == "__main__":
    main()
