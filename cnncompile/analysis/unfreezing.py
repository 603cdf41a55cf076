"""Which layers train in each phase of `training.phases` (cnncompile.language.phases).

A layer trains in phase k when the spec leaves it trainable, or when `unfreeze` in phase k or
an earlier one names it: its name, a block use it was expanded from, or a glob over either.
Pure: `check` locates patterns that match nothing; `train` sets Keras's flags from the same sets.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from cnncompile.language.diagnostics import Diagnostic, SourceMap, did_you_mean
from cnncompile.language.graph import Node


def _matches(node: Node, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for name in (node.name, *node.block))


def trainable_in_phase(nodes: Sequence[Node], phases: Sequence, index: int) -> frozenset[str]:
    """Names of the layers that train in phase `index` (0-based)."""
    patterns = [pattern for phase in phases[:index + 1] for pattern in phase.unfreeze]
    return frozenset(node.name for node in nodes
                     if node.trainable or any(_matches(node, pattern) for pattern in patterns))


def check_unfreeze(nodes: Sequence[Node], phases: Sequence, source: SourceMap) -> list[Diagnostic]:
    """A pattern that matches no layer and no block use is a mistake (a typo, a renamed layer)."""
    names = sorted({name for node in nodes for name in (node.name, *node.block)})
    problems = []
    for i, phase in enumerate(phases):
        for j, pattern in enumerate(phase.unfreeze):
            if not any(_matches(node, pattern) for node in nodes):
                problems.append(Diagnostic(
                    "error", f"training.phases[{i}].unfreeze: '{pattern}' matches no layer or block use"
                    f"{did_you_mean(pattern, names)}", source.value(("training", "phases", i, "unfreeze", j))))
    return problems
