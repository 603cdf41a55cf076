"""The front half of the pipeline in one call: file -> validated spec -> shape inference.

Everything `cnncompile check` needs, and nothing that imports a framework.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnncompile.language.diagnostics import SourceMap
from cnncompile.analysis.inference import ModelInfo, infer
from cnncompile.language.loader import decode, load_yaml
from cnncompile.language.model import ModelSpec
from cnncompile.language.validate import validate_tree


@dataclass(frozen=True)
class CompiledSpec:
    path: Path
    spec: ModelSpec
    source: SourceMap
    info: ModelInfo
    sha256: str  # of the file's bytes: identifies the exact spec a run or export came from


def compile_file(path: str | Path) -> CompiledSpec:
    """Read, validate and infer a spec file. Raises SpecError (located) or OSError."""
    path = Path(path)
    data = path.read_bytes()
    raw, source = load_yaml(decode(data))
    return compile_tree(raw, source, data, path)


def compile_tree(raw: Any, source: SourceMap, data: bytes, path: Path) -> CompiledSpec:
    """compile_file's work on a tree already loaded from `data` (the editor loads every edit's
    tree itself, keeping the last one that parsed). Raises SpecError (located)."""
    spec = validate_tree(raw, source)
    return CompiledSpec(path, spec, source, infer(spec, source), hashlib.sha256(data).hexdigest())
