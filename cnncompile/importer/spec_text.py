"""A spec as YAML text in the zoo's style: one flow mapping per layer, one line each."""

from __future__ import annotations

from typing import Any

import yaml



def _flow(value: Any) -> str:
    """One value in YAML flow style on one line (PyYAML quotes what needs quoting, and writes
    floats so that they read back as floats: 1e-05 as 1.0e-05)."""
    # Inside a one-item list, so that a plain scalar gets no document-end marker ("...").
    return yaml.safe_dump([value], default_flow_style=True, sort_keys=False, width=10**9).strip()[1:-1]


def _line(item: dict[str, Any], indent: str) -> str:
    return f"{indent}- {_flow(item)}\n"


def render(spec: dict[str, Any], comment: str) -> str:
    """`spec` (name, input, blocks, layers, and any other top-level keys) as text."""
    out = [f"# {line}\n" if line else "#\n" for line in comment.splitlines()]
    out.append(f"name: {_flow(spec['name'])}\n")
    out.append(f"input: {_flow(spec['input'])}\n")
    for key, value in spec.items():
        if key not in ("name", "input", "blocks", "layers"):
            out.append(f"{key}: {_flow(value)}\n")
    if spec.get("blocks"):
        out.append("\nblocks:\n")
        for name, block in spec["blocks"].items():
            out.append(f"  {name}:\n")
            if block.get("params"):
                out.append(f"    params: {_flow(block['params'])}\n")
            if block.get("inputs"):
                out.append(f"    inputs: {_flow(block['inputs'])}\n")
            out.append("    layers:\n")
            out.extend(_line(item, "      ") for item in block["layers"])
    out.append("\nlayers:\n")
    out.extend(_line(item, "  ") for item in spec["layers"])
    return "".join(out)
