"""The spec language's JSON Schema and Markdown reference, both generated from the classes.

spec/cnncompile.schema.json and spec/README.md are this module's output; tests fail
when either file differs from what the code generates, so the docs cannot drift.
Regenerate with `cnncompile schema > spec/cnncompile.schema.json` and
`cnncompile schema --format markdown > spec/README.md`.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from pydantic import BaseModel

from cnncompile.spec import search, training
from cnncompile.spec.layers import LAYER_TYPES
from cnncompile.spec.model import Input, ModelSpec
from cnncompile.spec.types import ACTIVATIONS, INITIALIZERS

SCHEMA_ID = "https://github.com/cnncompile/cnncompile/spec/cnncompile.schema.json"


def json_schema() -> dict[str, Any]:
    schema = ModelSpec.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "cnncompile model spec", **schema}


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


# One example per layer type, shown in the reference and checked by the test suite.
LAYER_EXAMPLES = {
    "Conv2D": "{type: Conv2D, filters: 32, kernel_size: 3, activation: relu}",
    "DepthwiseConv2D": "{type: DepthwiseConv2D, kernel_size: 3, padding: same}",
    "SeparableConv2D": "{type: SeparableConv2D, filters: 64, kernel_size: 3, activation: relu}",
    "MaxPooling2D": "{type: MaxPooling2D, pool_size: 2}",
    "AveragePooling2D": "{type: AveragePooling2D, pool_size: 2, strides: 2}",
    "GlobalAveragePooling2D": "{type: GlobalAveragePooling2D}",
    "GlobalMaxPooling2D": "{type: GlobalMaxPooling2D}",
    "Flatten": "{type: Flatten}",
    "Dense": "{type: Dense, units: 10, activation: softmax}",
    "Dropout": "{type: Dropout, rate: 0.5}",
    "SpatialDropout2D": "{type: SpatialDropout2D, rate: 0.2}",
    "BatchNormalization": "{type: BatchNormalization}",
    "Activation": "{type: Activation, activation: relu}",
    "ZeroPadding2D": "{type: ZeroPadding2D, padding: [[1, 2], [1, 2]]}",
    "Cropping2D": "{type: Cropping2D, cropping: 2}",
    "Reshape": "{type: Reshape, target_shape: [-1, 32]}",
    "Rescaling": "{type: Rescaling, scale: 2.0, offset: -1.0}",
}


def _type_text(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        target = defs.get(name, {})
        if "enum" in target:
            return _type_text(target, defs)
        return f"mapping ({name})"
    if "anyOf" in prop:
        parts = [_type_text(p, defs) for p in prop["anyOf"]]
        return " or ".join(dict.fromkeys(p for p in parts if p != "null")) + (
            " or null" if any(p.get("type") == "null" for p in prop["anyOf"]) else "")
    if "oneOf" in prop:
        return " or ".join(_type_text(p, defs) for p in prop["oneOf"])
    if "enum" in prop:
        values = prop["enum"]
        if tuple(values) == ACTIVATIONS:
            return "[activation](#activations)"
        if tuple(values) == INITIALIZERS:
            return "[initializer](#initializers)"
        if len(values) > 8:
            return "one of " + ", ".join(f"`{v}`" for v in values)
        return " \\| ".join(f"`{v}`" for v in values)
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = prop.get("type")
    bounds = []
    for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in prop:
            bounds.append(f"{op} {prop[key]}")
    suffix = f" ({', '.join(bounds)})" if bounds else ""
    if kind == "array":
        items = _type_text(prop.get("items", {}), defs)
        count = prop.get("minItems")
        size = f"{count} " if count is not None and count == prop.get("maxItems") else ""
        return f"list of {size}{items}"
    return {"integer": "int", "number": "float", "boolean": "bool", "string": "string", "object": "mapping",
            "null": "null", "layer": "[layer](#layers)"}.get(kind, "any") + suffix


def _default_text(field: Any) -> str:
    if field.is_required():
        return "**required**"
    value = field.default
    if isinstance(value, tuple):
        value = json.dumps(value).replace('"', "")
    elif isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, float) and value == 1 / 255:
        return "1/255"
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def _fields_table(cls: type[BaseModel], skip: tuple[str, ...] = ("type",)) -> list[str]:
    schema = cls.model_json_schema()
    defs = schema.get("$defs", {})
    lines = ["| argument | type | default | meaning |", "| --- | --- | --- | --- |"]
    # Required arguments first, then the rest as declared, the common `name` last.
    order = sorted(cls.model_fields.items(), key=lambda item: (not item[1].is_required(), item[0] == "name"))
    for name, field in order:
        if name in skip:
            continue
        name = field.alias or name  # as written in YAML (`int:` for IntRange.bounds)
        prop = schema["properties"][name]
        if name == "layers":
            prop = {"type": "array", "items": {"type": "layer"}}
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {_type_text(prop, defs)} | {_default_text(field)} | {description} |")
    return lines


def _section(cls: type[BaseModel], level: str = "###", example: str | None = None) -> list[str]:
    out = [f"{level} {cls.__name__}", "", inspect.cleandoc(cls.__doc__ or ""), ""]
    out += _fields_table(cls) + [""]
    if example:
        out += ["```yaml", f"- {example}", "```", ""]
    return out


def markdown() -> str:
    out = [
        "# The cnncompile spec language",
        "",
        "<!-- Generated by `cnncompile schema --format markdown`; edit the classes in",
        "     cnncompile/spec/, not this file. A test fails when the two differ. -->",
        "",
        "A spec is one YAML mapping. Layer types, argument names and defaults are Keras 3's own;",
        "an int where Keras takes a pair means the pair (`kernel_size: 3` is `[3, 3]`). Values are",
        "strict: unknown keys are errors, `'3'` is not `3`, and only `true`/`false` are booleans",
        "(`padding: no` is the string 'no', which is rejected). Editors validate and autocomplete",
        "with the JSON Schema in `cnncompile.schema.json` via the modeline",
        "`# yaml-language-server: $schema=../spec/cnncompile.schema.json`.",
        "",
        "```yaml",
        "name: mnist_cnn",
        "input: {shape: [28, 28, 1]}",
        "layers:",
        "  - {type: Conv2D, filters: 32, kernel_size: 3, activation: relu}",
        "  - {type: Flatten}",
        "  - {type: Dense, units: 10, activation: softmax}",
        "training: {dataset: mnist, optimizer: rmsprop, epochs: 5, batch_size: 64}",
        "```",
        "",
        "## Top level",
        "",
        *_fields_table(ModelSpec),
        "",
        "## input",
        "",
        (Input.__doc__ or "").strip(),
        "",
        *_fields_table(Input),
        "",
        "## Layers",
        "",
        "Each entry of `layers` is a mapping with `type` and that layer's arguments. Every layer",
        "also takes `name` (unique; default: Keras's, e.g. `conv2d`, `conv2d_1`). Shapes exclude",
        "the batch axis; `cnncompile check` prints every layer's output shape, parameters and MACs.",
        "",
    ]
    for cls in LAYER_TYPES:
        out += _section(cls, example=LAYER_EXAMPLES[cls.__name__])
    out += ["## training", "", (training.Training.__doc__ or "").strip(), "",
            *_fields_table(training.Training), "",
            "`batch_size` is the number of images per training step. With `distribute` it is the",
            "global batch, split evenly across all replicas on all workers.", "",
            "### Optimizers", "", "`optimizer: adam` means Adam with Keras's defaults; a mapping sets arguments:",
            "`optimizer: {type: adam, learning_rate: 0.0005}`.", ""]
    for cls in (training.SGD, training.RMSprop, training.Adam, training.AdamW, training.Nadam):
        out += _section(cls, level="####")
    out += ["### Learning-rate schedules", "", "Any optimizer's `learning_rate` may be a schedule:", ""]
    for cls in (training.CosineDecay, training.ExponentialDecay):
        out += _section(cls, level="####")
    out += ["### Loss", "", *_fields_table(training.Loss, skip=()), "",
            "### Callbacks", ""]
    for cls in (training.EarlyStopping, training.ReduceLROnPlateau, training.TensorBoard):
        out += _section(cls, level="####")
    out += ["### Augmentation", "", "Applied to training batches only; the saved and exported model never contains them.", ""]
    for cls in (training.RandomTranslation, training.RandomRotation, training.RandomZoom):
        out += _section(cls, level="####")
    out += ["### Distributed training", "", *_section(training.Distribute, level="####")[2:],
            "```yaml", "training:", "  distribute: {strategy: multi_worker, timeout_seconds: 120}", "```", "",
            "Every worker runs the same command with its own `TF_CONFIG`; only worker 0 (the chief)",
            "writes the run directory. See the README for a cluster walk-through.", ""]
    out += ["### dataset: {path: ...}", "", *_section(training.DatasetPath, level="####")[2:]]
    out += ["## search", "", inspect.cleandoc(search.Search.__doc__ or ""), "", *_fields_table(search.Search), "",
            "```yaml", "search:", "  metric: val_accuracy", "  trials: 20", "  max_params: 150000", "  space:",
            "    layers.conv1.filters: {choice: [16, 32, 64]}         # the layer named conv1",
            "    layers.conv2.kernel_size: {choice: [3, 5, [7, 3]]}",
            "    layers.hidden.units: {int: [32, 256], step: 32}",
            "    training.optimizer.learning_rate: {float: [0.0001, 0.01], log: true}",
            "    training.batch_size: {choice: [32, 64, 128]}", "```", "",
            "A path names a layer by its `name` (layers without one cannot be varied: give them a",
            "name), then an argument; anything else by its keys from the top (`input.shape`,",
            "`training.optimizer.learning_rate`, also when `optimizer` is a bare name or left out).",
            "`cnncompile check` validates every value a range can take at its ends against the",
            "field itself, and reports the space's size and the parameter and MAC range over it.", "",
            "### Ranges", ""]
    for cls in (search.Choice, search.IntRange, search.FloatRange):
        out += _section(cls, level="####")
    out += ["## Activations", "", "By Keras name: " + ", ".join(f"`{a}`" for a in ACTIVATIONS) + ".", "",
            "## Initializers", "", "By Keras name: " + ", ".join(f"`{i}`" for i in INITIALIZERS) + ".", ""]
    return "\n".join(out).rstrip() + "\n"
