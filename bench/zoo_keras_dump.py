"""What the zoo has to reproduce: a survey of the ten Keras Applications (issue 9).

  python bench/zoo_keras_dump.py [STEM ...]      (default: all ten; NASNet takes ~15 s)

For each `keras.applications.<Model>(weights=None)` it prints:
- build time, layer count, and every operation in the functional graph that is NOT a Layer
  (e.g. MobileNetV3's `x + 3.0`), with whether `model.summary()` lists it;
- per-type layer counts;
- per type, every argument whose value differs from Keras's default somewhere, with its
  distinct values (the layer configs the YAML must write);
- the layers holding non-trainable weights that are not BatchNormalization's, and what they are;
- which of those arguments and types cnncompile's spec classes (this checkout's) lack.

Results also go to bench/results/zoo_keras_dump.json. examples/zoo/NOTES.md summarizes them.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cnncompile.language.layers import LAYER_TYPES  # noqa: E402
from tests.zoo_support import ZOO, build_keras, keras_call  # noqa: E402

IGNORED = {"name", "trainable", "dtype", "autocast"}  # bookkeeping, not architecture


def _plain(value):
    """A config value as short JSON-able text (initializer dicts become their class name + config)."""
    if isinstance(value, dict) and "class_name" in value:
        config = {k: v for k, v in (value.get("config") or {}).items() if v is not None and k != "seed"}
        return f"{value['class_name']}({', '.join(f'{k}={_plain(v)}' for k, v in sorted(config.items()))})"
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def default_config(layer) -> dict:
    """The config of the same layer type built with only its required arguments."""
    cls = type(layer)
    config = layer.get_config()
    required = {name: config[name] for name, parameter in inspect.signature(cls.__init__).parameters.items()
                if parameter.default is inspect.Parameter.empty and name in config}
    try:
        return cls(**required).get_config()
    except Exception:  # noqa: BLE001 - a survey: fall back to "everything differs"
        return {}


def survey(stem: str) -> dict:
    import keras  # noqa: PLC0415

    started = time.perf_counter()
    model = build_keras(stem)
    build_seconds = time.perf_counter() - started
    lines: list[str] = []
    model.summary(print_fn=lambda text, **_: lines.append(text), line_length=250)
    summary = "\n".join(lines)

    operations = []
    for op in model.operations:
        if isinstance(op, keras.layers.Layer):
            continue
        node = op._inbound_nodes[0]
        operations.append({
            "operation": type(op).__name__, "name": op.name,
            "reads": [t._keras_history[0].name for t in node.input_tensors],
            "output_shape": list(node.output_tensors[0].shape),
            "in_summary": f"\u2502 {op.name} (" in summary,  # a row of its own: "│ add (Add)  │ ..."
        })

    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    counts = Counter(type(layer).__name__ for layer in layers)
    defaults = {}
    non_default: dict[str, dict[str, set]] = {}
    for layer in layers:
        kind = type(layer).__name__
        if kind not in defaults:
            defaults[kind] = default_config(layer)
        for key, value in layer.get_config().items():
            if key in IGNORED or defaults[kind].get(key, object()) == value:
                continue
            shown = json.dumps(_plain(value), default=str)
            non_default.setdefault(kind, {}).setdefault(key, set()).add(shown)

    ours = {cls.__name__: set(cls.model_fields) for cls in LAYER_TYPES}
    lacking = {kind: sorted(set(args) - ours[kind]) for kind, args in non_default.items() if kind in ours}
    lacking = {kind: args for kind, args in lacking.items() if args}
    frozen_weights = [
        {"layer": layer.name, "type": type(layer).__name__,
         "weights": [f"{w.name}{tuple(w.shape)}" for w in layer.non_trainable_weights]}
        for layer in layers if layer.non_trainable_weights and type(layer).__name__ != "BatchNormalization"]
    return {
        "stem": stem, "keras": keras_call(stem), "build_seconds": round(build_seconds, 2),
        "input_shape": list(model.input_shape), "layers": len(layers), "operations": len(model.operations),
        "params": model.count_params(), "non_layer_operations": operations,
        "type_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "non_default_arguments": {kind: {k: sorted(v) for k, v in sorted(args.items())}
                                  for kind, args in sorted(non_default.items())},
        "non_trainable_outside_batchnorm": frozen_weights,
        "types_we_lack": sorted(kind for kind in counts if kind not in ours),
        "arguments_we_lack": lacking,
    }


def render(report: dict) -> str:
    out = [f"## {report['stem']}: {report['keras']}",
           f"built in {report['build_seconds']} s; input {tuple(report['input_shape'])}; "
           f"{report['layers']} layers, {report['operations']} operations, {report['params']:,} params"]
    ops = report["non_layer_operations"]
    if ops:
        listed = sum(op["in_summary"] for op in ops)
        out.append(f"operations that are not layers ({len(ops)}; not in model.layers; rows of their own "
                   f"in summary(): {listed}):")
        for op in ops[:6]:
            out.append(f"  {op['operation']} '{op['name']}' reads {op['reads']} -> {tuple(op['output_shape'])}")
        if len(ops) > 6:
            out.append(f"  ... {len(ops) - 6} more")
    out.append("types: " + ", ".join(f"{k} {v}" for k, v in report["type_counts"].items()))
    for kind, args in report["non_default_arguments"].items():
        out.append(f"  {kind}: " + "; ".join(f"{k}={'|'.join(v)}" for k, v in args.items()))
    for entry in report["non_trainable_outside_batchnorm"]:
        out.append(f"non-trainable weights in {entry['type']} '{entry['layer']}': {', '.join(entry['weights'])}")
    if report["types_we_lack"]:
        out.append("types this checkout lacks: " + ", ".join(report["types_we_lack"]))
    for kind, args in report["arguments_we_lack"].items():
        out.append(f"arguments this checkout's {kind} lacks: {', '.join(args)}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stems", nargs="*", choices=[[], *ZOO], default=[])
    args = parser.parse_args()
    reports = []
    for stem in args.stems or list(ZOO):
        report = survey(stem)
        reports.append(report)
        print(render(report) + "\n", flush=True)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "zoo_keras_dump.json").write_text(json.dumps(reports, indent=2, default=str))


if __name__ == "__main__":
    main()
