"""The front half of the pipeline in one call: file -> validated spec -> shape inference.

Everything `cnncompile check` needs, and nothing that imports a framework.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cnncompile.language.diagnostics import SourceMap, SpecError
from cnncompile.analysis.inference import ModelInfo, infer
from cnncompile.analysis.weightfile import WeightPlan
from cnncompile.language.model import ModelSpec
from cnncompile.language.validate import parse_spec


@dataclass(frozen=True)
class CompiledSpec:
    path: Path
    spec: ModelSpec
    source: SourceMap
    info: ModelInfo
    sha256: str  # of the file's bytes: identifies the exact spec a run or export came from
    weights: WeightPlan | None = None  # what `weights:` loads (None: no weights, or not yet downloaded)


def compile_file(path: str | Path) -> CompiledSpec:
    """Read, validate and infer a spec file. Raises SpecError (located) or OSError."""
    path = Path(path)
    data = path.read_bytes()
    spec, source = parse_spec(data)
    info = infer(spec, source)
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
