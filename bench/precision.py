"""Training throughput and accuracy, float32 against mixed_bfloat16 (training.precision).

  python bench/precision.py [--specs examples/mnist_bn_dropout.yaml examples/mnist_resnet.yaml]
                            [--epochs 3] [--rounds 2] [--seeds 0] [--data-dir ../shared/data]
                            [--how train keras keras-fused] [--profile 20]

Each run is a fresh process (`train_spec` with a callback that times every epoch); the two
precisions alternate, round after round, to spread a shared machine's noise. Steady
throughput is training images / the median epoch time, leaving out the first epoch (it
traces and compiles). The fraction of the CPU's peak counts 6 FLOPs per MAC per image
(forward 2, backward 4) against the peak this CPU's vector units can reach (see `peak`).
Under a shared machine's load the wall-clock rate mostly measures the scheduler's share, so
each run also reports images per CPU-second (the process's CPU time over the same epochs)
and the fraction of one core's peak that rate reaches.

`--how` says what trains the spec's network:
  train        `cnncompile train` (run/train.py's train_spec): the default
  train-step   the same with one step per call of Keras's train function (a callback that
               watches batches, as the command line's bar on a terminal), not a whole epoch
  keras        plain Keras, the same network as a ceiling: `build_model(spec)` (Keras's own
               layers), Adam, numpy arrays into `fit`, batch 64, no augmentation, no
               determinism, no validation, no callbacks but the timer
  keras-fused  the same with BatchNormalization through the fused kernel, as train builds it

`--profile N` records N steady steps of the first epoch (steps 20 to 20+N, after tracing;
the first epoch is not in the steady rate) with TensorFlow's profiler and reports op time per
step by what the op does (`op_time`): convolutions split into forward, data gradient and
weight gradient, batch normalization, elementwise, augmentation, optimizer, input pipeline.
Op times are summed over TensorFlow's threads, so they are not a step's wall time.

`--kernels` times, instead of training, each convolution of each spec alone at the spec's
batch size: forward, data gradient (not for the first convolution: its input needs none) and
weight gradient, the ops TensorFlow runs through oneDNN in a training step, float32 against
bfloat16 in turns, the fastest of several rounds in CPU milliseconds per call. The sum over
the network is the most bfloat16 can gain if everything else in a step cost nothing.
Results go to bench/results/precision.json (not committed; docs/precision.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def epoch_timer():
    """A Keras callback that keeps each epoch's wall-clock and CPU seconds (bench/precision_bisect.py uses it too)."""
    import cnncompile.backend  # noqa: F401

    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started, self.cpu_started = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)
            self.cpu_seconds.append(time.process_time() - self.cpu_started)

    return EpochTimer()


PROFILE_FROM = 20  # the first profiled step of the first epoch: tracing and warm-up are over


def step_profiler(steps: int, logdir: str):
    """A Keras callback that records `steps` training steps of the first epoch with TensorFlow's profiler."""
    import keras
    import tensorflow as tf

    class StepProfiler(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == PROFILE_FROM and not hasattr(self, "done"):
                tf.profiler.experimental.start(logdir)
            if batch == PROFILE_FROM + steps and not hasattr(self, "done"):
                tf.profiler.experimental.stop()
                self.done = True

    return StepProfiler()


# What an op does, from its type (after the colon in the profiler's "name:type"), first match wins.
OP_KINDS = [
    ("conv weight gradient", ("Conv2DBackpropFilter",)),
    ("conv data gradient", ("Conv2DBackpropInput",)),
    ("conv forward", ("Conv2D",)),
    ("batch normalization", ("BatchNorm",)),
    ("augmentation", ("ImageProjectiveTransform", "StatelessRandom", "RngReadAndSkip")),
    ("elementwise (ReLU, Add, AddN)", ("Relu", "AddN", "AddV2")),
    ("pooling, dense, softmax", ("Pool", "MatMul", "Softmax")),
    ("casts", ("Cast",)),
    ("variables", ("Variable",)),
    # the optimizer's update; under --how keras also Keras's BatchNormalization, made of these
    ("other arithmetic", ("Mul", "Sub", "RealDiv", "Sqrt", "Square", "Maximum", "Pow", "Sum", "Mean", "BroadcastTo")),
    ("input pipeline", ("Iterator", "Map", "Prefetch", "Batch", "FlatMap", "Root", "Gather", "Range", "Shuffle")),
]


def op_time(logdir: str, steps: int) -> dict[str, float]:
    """Milliseconds of op time per step by kind, from the profiler's trace (summed over threads)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(max(Path(logdir).rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime).read_bytes())
    totals: dict[str, float] = {}
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith(("tf_Compute", "tf_data")):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" not in name.replace("::", ""):  # the executor's own scopes (ExecutorState::Process), not ops
                    continue
                op = name.rsplit(":", 1)[1]
                kind = next((kind for kind, parts in OP_KINDS if any(part in op for part in parts)), "rest")
                totals[kind] = totals.get(kind, 0.0) + event.duration_ps / 1e9 / steps
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def plain_keras(compiled, precision: str, epochs: int, seed: int, data_dir: str, fused: bool, callbacks: list) -> dict:
    """The spec's network trained by plain Keras: the ceiling of what `train` could reach (see --how)."""
    import keras

    from cnncompile.backend.builder import build_model, dtype_policy
    from cnncompile.data.datasets import load_dataset

    keras.utils.set_random_seed(seed)
    training = compiled.spec.training
    data = load_dataset(training.dataset, data_dir=Path(data_dir))
    count = len(data.x_train) - int(len(data.x_train) * training.validation_split)  # as many images as train fits
    x, y = data.x_train[:count], keras.utils.to_categorical(data.y_train[:count], len(data.labels))
    with dtype_policy(precision):
        model = build_model(compiled.spec, training=fused)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=training.batch_size, epochs=epochs, callbacks=callbacks, verbose=0)
    x_test, y_test = data.x_test, keras.utils.to_categorical(data.y_test, len(data.labels))
    accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)["accuracy"]
    return {"train_images": count, "test_accuracy": accuracy, "precision": precision}


def child(spec: str, precision: str, epochs: int, seed: int, data_dir: str, how: str = "train",
          profile: int = 0) -> None:
    from cnncompile.analysis.check import compile_file
    from cnncompile.run.train import train_spec

    timer = epoch_timer()
    logdir = tempfile.mkdtemp(prefix="bench-precision-profile-")
    callbacks = [timer, *([step_profiler(profile, logdir)] if profile else [])]
    compiled = compile_file(spec)
    if how in ("train", "train-step"):
        import keras

        # A CallbackList has batch hooks of its own: train then runs one step per call
        # (backend/fitting.py steps_per_execution), as --profile needs and train-step asks.
        stepwise = profile or how == "train-step"
        result = train_spec(compiled, out=Path(tempfile.mkdtemp(prefix="bench-precision-")), epochs=epochs, seed=seed,
                            data_dir=Path(data_dir), force=True, precision=precision,
                            progress=keras.callbacks.CallbackList(callbacks) if stepwise else timer).metrics
    else:
        result = plain_keras(compiled, precision, epochs, seed, data_dir, how == "keras-fused", callbacks)
    print(json.dumps({"epoch_seconds": timer.seconds, "epoch_cpu_seconds": timer.cpu_seconds,
                      "train_images": result["train_images"],
                      "test_accuracy": result["test_accuracy"], "macs": compiled.info.total_macs,
                      "precision": result["precision"], "how": how,
                      **({"op_time": op_time(logdir, profile)} if profile else {})}))


def peak(policy: str) -> tuple[float, int, str]:
    """FLOP/s this CPU's vector units can reach: cores x clock x FLOPs per cycle per core. AVX-512
    FMA: 2 pipes x 16 float32 lanes x 2 FLOPs = 64 per cycle; AVX512_BF16's VDPBF16PS does twice
    the multiply-adds per instruction. Zen 4 runs 512-bit operations on 256-bit pipes (half of
    this); the figure is the upper bound the instruction set allows, so fractions are conservative."""
    from cnncompile.cpu import cpu_features

    info = Path("/proc/cpuinfo").read_text()
    cores = sum(line.startswith("processor") for line in info.splitlines())
    mhz = max(float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz"))
    flags = cpu_features().flags
    per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags else 8
    if policy == "mixed_bfloat16" and "avx512_bf16" in flags:
        per_cycle *= 2
    return cores * mhz * 1e6 * per_cycle, cores, f"{cores} cores x {mhz:.0f} MHz x {per_cycle} FLOP/cycle"


def conv_ops(dtype: str, x_shape, kernel_shape, y_shape, strides: list[int], padding: str) -> dict:
    """A convolution's three training ops on random tensors of `dtype`, as functions of nothing."""
    import tensorflow as tf

    x, kernel, dy = (tf.cast(tf.random.normal(shape), dtype) for shape in (x_shape, kernel_shape, y_shape))
    return {
        "forward": tf.function(lambda: tf.nn.conv2d(x, kernel, strides, padding)),
        "data gradient": tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=x_shape, filter=kernel, out_backprop=dy, strides=strides, padding=padding)),
        "weight gradient": tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=kernel_shape, out_backprop=dy, strides=strides, padding=padding)),
    }


def kernels(spec: str, batch: int | None, calls: int = 20, rounds: int = 5) -> dict:
    """CPU milliseconds per call of every convolution's three training ops, by dtype (see --kernels)."""
    import keras
    import tensorflow as tf

    from cnncompile.analysis.check import compile_file
    from cnncompile.backend.builder import build_model

    compiled = compile_file(spec)
    batch = batch or compiled.spec.training.batch_size
    model = build_model(compiled.spec)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    rows = []
    for index, layer in enumerate(convs):
        x_shape = (batch, *layer.input.shape[1:])
        kernel_shape = (*layer.kernel_size, x_shape[-1], layer.filters)
        y_shape = (batch, *layer.output.shape[1:])
        strides, padding = [1, *layer.strides, 1], layer.padding.upper()
        row = {"layer": layer.name, "input": x_shape, "kernel": kernel_shape, "strides": layer.strides[0],
               "macs": batch * int(layer.output.shape[1] * layer.output.shape[2]) * int(tf.reduce_prod(kernel_shape))}
        ops = {(dtype, kind): op for dtype in ("float32", "bfloat16")
               for kind, op in conv_ops(dtype, x_shape, kernel_shape, y_shape, strides, padding).items()
               if index or kind != "data gradient"}  # the first convolution reads the input: no gradient to it
        best = {key: float("inf") for key in ops}
        for op in ops.values():
            op().numpy()  # trace and create oneDNN's primitive
        for _ in range(rounds):  # the dtypes in turns: a load change hits both
            for key, op in ops.items():
                started = time.process_time()
                for _ in range(calls):
                    result = op()
                result.numpy()
                best[key] = min(best[key], (time.process_time() - started) / calls * 1e3)
        row["cpu_ms"] = {f"{dtype} {kind}": ms for (dtype, kind), ms in best.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    totals = {}
    for kind in ("forward", "data gradient", "weight gradient"):
        f32, bf16 = (sum(row["cpu_ms"].get(f"{dtype} {kind}", 0.0) for row in rows) for dtype in ("float32", "bfloat16"))
        totals[kind] = {"float32": f32, "bfloat16": bf16, "bfloat16 speed-up": f32 / bf16}
    f32, bf16 = (sum(t[dtype] for t in totals.values()) for dtype in ("float32", "bfloat16"))
    totals["all convolutions"] = {"float32": f32, "bfloat16": bf16, "bfloat16 speed-up": f32 / bf16}
    return {"spec": spec, "batch": batch, "layers": rows, "totals": totals}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--specs", nargs="+", default=["examples/mnist_bn_dropout.yaml", "examples/mnist_resnet.yaml"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--how", nargs="+", default=["train"], choices=["train", "train-step", "keras", "keras-fused"])
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS")
    parser.add_argument("--kernels", action="store_true", help="time each convolution alone instead of training")
    parser.add_argument("--data-dir", default=os.environ.get("CNNCOMPILE_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--child", nargs=5, metavar=("SPEC", "PRECISION", "EPOCHS", "SEED", "HOW"))
    args = parser.parse_args()
    if args.child:
        spec, precision, epochs, seed, how = args.child
        child(spec, precision, int(epochs), int(seed), args.data_dir, how, args.profile)
        return
    from cnncompile.cpu import cpu_features

    print("CPU:", cpu_features().model_name, flush=True)
    if args.kernels:
        import cnncompile.backend  # noqa: F401  (TensorFlow, quietly)

        found = [kernels(spec, None) for spec in args.specs]
        print(json.dumps({result["spec"]: result["totals"] for result in found}, indent=2))
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        (ROOT / "bench" / "results" / "precision_kernels.json").write_text(json.dumps(found, indent=2))
        return
    runs: list[dict] = []
    for spec in args.specs:
        for round_ in range(args.rounds):
            for seed in args.seeds:
                for how in args.how:
                    order = ["float32", "mixed_bfloat16"]
                    for precision in order if round_ % 2 == 0 else order[::-1]:
                        runs.append(run_child(args, spec, precision, seed, how))
    summary = {}
    for spec in args.specs:
        for how in args.how:
            key = spec if how == "train" else f"{spec} ({how})"
            summary[key] = {}
            for measure in ("images_per_second", "images_per_cpu_second", "test_accuracy"):
                value = {p: statistics.median(r[measure] for r in runs
                                              if r["spec"] == spec and r["how"] == how and r["precision"] == p)
                         for p in ("float32", "mixed_bfloat16")}
                summary[key][measure] = {**value, "bfloat16/float32": value["mixed_bfloat16"] / value["float32"]}
    print(json.dumps(summary, indent=2))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "precision.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))


def run_child(args, spec: str, precision: str, seed: int, how: str) -> dict:
    """One fresh process training `spec`; its rates, accuracy and peak fractions."""
    out = subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--profile", str(args.profile),
                          "--child", spec, precision, str(args.epochs), str(seed), how], cwd=ROOT,
                         capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    run = json.loads(out.stdout.strip().splitlines()[-1])
    steady = statistics.median(run["epoch_seconds"][1:] or run["epoch_seconds"])
    steady_cpu = statistics.median(run["epoch_cpu_seconds"][1:] or run["epoch_cpu_seconds"])
    run.update(spec=spec, seed=seed, images_per_second=run["train_images"] / steady,
               images_per_cpu_second=run["train_images"] / steady_cpu, load=os.getloadavg()[0])
    flops, cores, how_peak = peak(precision)
    # The wall-clock rate against every core, and the rate per CPU-second against one core (the
    # fair one on a shared machine: a CPU-second is one core busy for a second).
    run.update(peak_fraction=6 * run["macs"] * run["images_per_second"] / flops,
               core_peak_fraction=6 * run["macs"] * run["images_per_cpu_second"] / (flops / cores), peak=how_peak)
    print(json.dumps({k: run[k] for k in ("spec", "how", "precision", "seed", "images_per_second",
                                          "images_per_cpu_second", "peak_fraction", "core_peak_fraction",
                                          "test_accuracy", "load", *(["op_time"] if "op_time" in run else []))}),
          flush=True)
    return run


if __name__ == "__main__":
    main()
