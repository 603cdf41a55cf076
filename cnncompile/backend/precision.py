"""`training.precision`: which Keras dtype policy a run trains under, and why.

Mixed policies compute in 16 bits and keep every variable in float32 (Keras's mixed-precision
guide), so checkpoints hold float32 values whatever the policy; the output layer computes in
float32 too (softmax and the loss keep their precision), and the model that is saved and
exported is rebuilt in float32 around the trained weights (`float32_inference`).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from cnncompile.backend.batchnorm import FusedBatchNormalization
from cnncompile.backend.builder import build_model, dtype_policy
from cnncompile.cpu import cpu_features
from cnncompile.language.model import ModelSpec

# /proc/cpuinfo flags of CPUs that multiply bfloat16 in hardware; elsewhere it is emulated (slower).
BF16_FLAGS = {"avx512_bf16": "AVX512_BF16", "amx_bf16": "AMX_BF16"}
TENSOR_CORES = (7, 0)  # CUDA compute capability of Volta, the first GPU with float16 tensor cores


@dataclass(frozen=True)
class Precision:
    policy: str  # a Keras dtype policy name: float32, mixed_bfloat16 or mixed_float16
    reason: str

    def describe(self) -> str:
        return f"precision: {self.policy} ({self.reason})"


def choose(requested: str, cpu=None, gpus: list | None = None) -> Precision:
    """The policy for `requested` (a training.precision value); `auto` decides from the hardware."""
    if requested != "auto":
        return Precision(requested, "as asked")
    if gpus is None:
        import tensorflow as tf

        gpus = [tf.config.experimental.get_device_details(gpu) for gpu in tf.config.list_physical_devices("GPU")]
    capable = [g for g in gpus if tuple(g.get("compute_capability") or (0, 0)) >= TENSOR_CORES]
    if capable:
        return Precision("mixed_float16", f"auto: GPU {capable[0].get('device_name', '')} has float16 tensor cores")
    cpu = cpu or cpu_features()
    found = [name for flag, name in BF16_FLAGS.items() if flag in cpu.flags]
    if found:
        return Precision("mixed_bfloat16", f"auto: {cpu.model_name} has {', '.join(found)}")
    if gpus:
        return Precision("float32", "auto: the GPU has no float16 tensor cores")
    if not cpu.known:
        return Precision("float32", "auto: CPU features unknown (no /proc/cpuinfo)")
    return Precision("float32", f"auto: {cpu.model_name} has no bfloat16 instructions (AVX512_BF16 or AMX)")


def loss_scaled(optimizer: keras.optimizers.Optimizer, policy: str) -> keras.optimizers.Optimizer:
    """float16 gradients underflow without loss scaling; bfloat16 has float32's exponent range."""
    return keras.optimizers.LossScaleOptimizer(optimizer) if policy == "mixed_float16" else optimizer


def float32_inference(model: keras.Model, spec: ModelSpec) -> keras.Model:
    """The same model computing in float32 with Keras's own layers (train builds a few layers
    its faster training way, backend/batchnorm.py), sharing nothing: what is saved and exported."""
    if all(layer.dtype_policy.name == "float32" and not isinstance(layer, FusedBatchNormalization)
           for layer in model.layers):
        return model
    with dtype_policy("float32"):
        plain = build_model(spec)
    plain.set_weights(model.get_weights())
    return plain
