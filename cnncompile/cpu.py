"""What this CPU is and which instruction-set features it has, from /proc/cpuinfo. Framework-free.

Int8 export (deploy/int8.py) and training precision (backend/precision.py) both decide from it:
the features are read, never assumed from the vendor or the model name.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuFeatures:
    model_name: str
    flags: frozenset[str]  # lower case, as the kernel spells them (avx512_bf16, amx_bf16, asimddp, ...)
    known: bool            # False where /proc/cpuinfo could not be read


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuFeatures:
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return CpuFeatures(platform.processor() or platform.machine(), frozenset(), known=False)
    flags: set[str] = set()
    model_name = platform.machine()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):  # x86 says flags, ARM says Features
            flags |= set(value.split())
        elif key in ("model name", "cpu model") and model_name == platform.machine():
            model_name = value.strip()
    return CpuFeatures(model_name, frozenset(flags), known=True)
