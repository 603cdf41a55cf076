"""The front half of the pipeline in one call: file -> validated spec -> shape inference.

Everything `cnncompile check` needs, and nothing that imports a framework.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnncompile.analysis.inference import ModelInfo, infer
from cnncompile.language.diagnostics import SourceMap, SpecError, in_file_order
from cnncompile.language.loader import decode, load_yaml
from cnncompile.language.model import ModelSpec
from cnncompile.language.validate import recover_tree

if TYPE_CHECKING:  # weightfile loads only for a spec with `weights:`
    from cnncompile.analysis.weightfile import WeightPlan


@dataclass(frozen=True)
class CompiledSpec:
    path: Path
    spec: ModelSpec
    source: SourceMap
    info: ModelInfo
    sha256: str  # of the file's bytes: identifies the exact spec a run or export came from
    weights: WeightPlan | None = None  # what `weights:` loads (None: no weights, or not yet downloaded)


def compile_file(path: str | Path) -> CompiledSpec:
    """Read, validate and infer a spec file. Raises SpecError (located) or OSError.

    Every stage runs whatever the one before found (error recovery): a layer that fails
    validation or wiring only hides what reads it, so schema, wiring and shape errors are
    all reported in one run, each once, in file order."""
    path = Path(path)
    data = path.read_bytes()
    raw, source = load_yaml(decode(data))
    return compile_tree(raw, source, data, path)


def compile_tree(raw: Any, source: SourceMap, data: bytes, path: Path) -> CompiledSpec:
    """compile_file's work on a tree already loaded from `data` (the editor loads every edit's
    tree itself, keeping the last one that parsed). Raises SpecError with every problem of
    every stage, in file order (located)."""
    partial = recover_tree(raw, source)
    if not partial.input_known:  # no shapes to infer from: report what validation found
        raise SpecError(in_file_order(partial.problems))
    info = infer(partial.spec, source, partial.problems)
    spec = partial.spec
    if spec.training is not None and spec.training.phases:
        from cnncompile.analysis.unfreezing import check_unfreeze

        problems = check_unfreeze(spec.graph(), spec.training.phases, source)
        if problems:
            raise SpecError(problems)
    plan = None
    if spec.weights is not None:
        from cnncompile.analysis.weightfile import check_weights

        plan, warnings = check_weights(spec, info, source, path.parent)
        info = dataclasses.replace(info, warnings=(*info.warnings, *warnings))
    return CompiledSpec(path, spec, source, info, hashlib.sha256(data).hexdigest(), plan)
