"""Int8 policy, framework-free: what this CPU can do with int8 (read from /proc/cpuinfo), and
how int8 exports are calibrated and judged (the defaults the CLI shows).

Int8 inference is only fast where the CPU multiplies and accumulates 8-bit integers in one
instruction: x86 VNNI (AVX512_VNNI, AVX_VNNI) or AMX, ARM's dot-product extension. Without
it, x86 kernels fall back to VPMADDUBSW, whose 16-bit intermediate sums can saturate; that
is why onnxruntime's quantization guide asks for `reduce_range` (7-bit weights) there, and
why int8 can then be slower than float. Export reports what it found and measured, never
an assumed speed-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnncompile.cpu import cpu_features
from cnncompile.deploy import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_ACCURACY_DROP

# /proc/cpuinfo flag -> the name Intel/ARM documentation uses; the first group does int8
# multiply-accumulate in one instruction (no saturating 16-bit intermediate).
INT8_DOT_PRODUCT = {"avx512_vnni": "AVX512_VNNI", "avx_vnni": "AVX_VNNI", "amx_int8": "AMX_INT8",
                    "asimddp": "ARM dot product (SDOT/UDOT)", "i8mm": "ARM I8MM"}
INT8_OTHER = {"avx512bw": "AVX512BW", "avx2": "AVX2", "sse4_1": "SSE4.1", "asimd": "ARM NEON"}


@dataclass(frozen=True)
class Int8Capability:
    model_name: str
    dot_product: tuple[str, ...]  # one-instruction int8 multiply-accumulate features present
    other: tuple[str, ...]        # wider SIMD present, without int8 dot products
    known: bool                   # False where /proc/cpuinfo could not be read

    @property
    def vnni(self) -> bool:
        return bool(self.dot_product)

    @property
    def reduce_range(self) -> bool:
        """7-bit weights where int8 products can saturate (or where we cannot tell)."""
        return not self.vnni

    def describe(self) -> str:
        if not self.known:
            return f"{self.model_name}: int8 features unknown (no /proc/cpuinfo)"
        if self.vnni:
            return f"{self.model_name}: int8 dot-product instructions {', '.join(self.dot_product)}"
        wide = f" (has {', '.join(self.other)})" if self.other else ""
        return f"{self.model_name}: no int8 dot-product instructions (no VNNI){wide}"


def int8_capability(cpuinfo: Path = Path("/proc/cpuinfo")) -> Int8Capability:
    cpu = cpu_features(cpuinfo)
    return Int8Capability(cpu.model_name, tuple(name for flag, name in INT8_DOT_PRODUCT.items() if flag in cpu.flags),
                          tuple(name for flag, name in INT8_OTHER.items() if flag in cpu.flags), known=cpu.known)


@dataclass(frozen=True)
class Int8Options:
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    calibration_seed: int = 0
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP  # points
    measure_rounds: int = 5  # interleaved throughput rounds per batch size (median reported)
