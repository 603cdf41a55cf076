"""The spec language's JSON Schema and Markdown reference, both generated from the classes.

spec/cnncompile.schema.json and spec/README.md are this module's output; tests fail
when either file differs from what the code generates, so the docs cannot drift.
Regenerate with `cnncompile schema > spec/cnncompile.schema.json` and
`cnncompile schema --format markdown > spec/README.md`.
"""

from __future__ import annotations

import inspect
import json
from typing import Annotated, Any

from pydantic import BaseModel, Field

from cnncompile.language import phases, search
from cnncompile.language.weights import WeightsFrom
from cnncompile.language import training
from cnncompile.language.blocks import Block, BlockUse
from cnncompile.language.layers import LAYER_TYPES, LayerUnion
from cnncompile.language.model import Input, ModelSpec, entry
from cnncompile.language.types import ACTIVATIONS, INITIALIZERS

SCHEMA_ID = "https://github.com/cnncompile/cnncompile/spec/cnncompile.schema.json"


class _DocumentedSpec(ModelSpec):
    # ModelSpec validates each layer with its own class only (fast start-up); the schema
    # describes every layer type, so it is generated from the eager discriminated union.
    model_config = ModelSpec.model_config | {"title": "ModelSpec"}
    __doc__ = ModelSpec.__doc__

    layers: Annotated[list[entry(LayerUnion)], Field(min_length=1)]


def json_schema() -> dict[str, Any]:
    schema = _DocumentedSpec.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "cnncompile model spec", **schema}


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


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
    if kind == "object":
        values = [*prop.get("patternProperties", {}).values(), prop.get("additionalProperties", {})]
        inner = _type_text(values[0], defs) if values[0] else "any"
        return f"mapping of names to {inner}"
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
    value = field.default_factory() if field.default_factory else field.default
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


def _blocks_section() -> list[str]:
    return [
        "## Blocks", "",
        "A structure written once and used many times with parameters: a ResNet bottleneck, a",
        "DenseNet conv block, an inverted residual. `blocks:` maps names to definitions; an entry",
        "of `layers` (or of another block's `layers`) uses one with `{block: NAME, ...}`.", "",
        "```yaml",
        "blocks:",
        "  bottleneck:",
        "    params: {filters: null, strides: 1, conv_shortcut: false}   # null: the use must give it",
        "    layers:",
        "      - {type: Conv2D, name: 0_conv, filters: \"${4 * filters}\", kernel_size: 1, strides: \"${strides}\", when: \"${conv_shortcut}\"}",
        "      - {type: BatchNormalization, name: 0_bn, when: \"${conv_shortcut}\"}",
        "      - {type: Conv2D, name: 1_conv, filters: \"${filters}\", kernel_size: 1, strides: \"${strides}\", inputs: [input]}",
        "      - {type: BatchNormalization, name: 1_bn}",
        "      - {type: Activation, name: 1_relu, activation: relu}",
        "      - {type: Conv2D, name: 2_conv, filters: \"${4 * filters}\", kernel_size: 1}",
        "      - {type: Add, name: add, inputs: [0_bn, 2_conv]}",
        "      - {type: Activation, name: out, activation: relu}",
        "layers:",
        "  - {block: bottleneck, name: \"conv2_block${index}\", repeat: 3, filters: 64, conv_shortcut: \"${index == 1}\"}",
        "```", "",
        "- **Expressions.** A value that is exactly `${...}` becomes the expression's value (a",
        "  number stays a number); `${...}` inside longer text is interpolated. Expressions use",
        "  the block's parameters and `index` (the repeat index, from 1), numbers, `+ - * / // % **`,",
        "  comparisons, `and`/`or`/`not`, `a if c else b`, and `min max abs int float round ceil floor`.",
        "  They are interpreted by cnncompile's own evaluator, never Python's `eval`: nothing else",
        "  (attributes, subscripts, other functions) is allowed.",
        "- **Names.** A layer inside a use is named `<use name>_<layer name>`: the use above makes",
        "  `conv2_block1_0_conv` ... `conv2_block3_out`, Keras Applications' own names. Unnamed layers",
        "  get `<use name>_<Keras default>`. With `repeat`, a name without `${...}` gets `_<index>`.",
        "- **Wiring.** Inside a block, `input` (or the names in the block's `inputs:`) is what the use",
        "  passes in; a use reads the layer before it unless it gives `inputs:`. Each repeated",
        "  instance reads the previous one. The block's output is its last layer. Later layers can",
        "  read an instance by its name (its output) or any expanded layer by its full name.",
        "- **`when`.** A layer (or a use) whose `when:` is false is dropped; its name then stands for",
        "  its first input, so `add` above reads the block's input when there is no projection.",
        "- **Errors** inside a block are reported at the line inside the block, with a note at each",
        "  use that expanded it (`note: in expansion of block 'bottleneck' as 'conv2_block1'`). Blocks",
        "  may use blocks; recursion is an error.", "",
        *_section(Block, level="###"),
        *_section(BlockUse, level="###"),
        "Every other key of a use sets one of the block's parameters.", "",
    ]


def markdown() -> str:
    out = [
        "# The cnncompile spec language",
        "",
        "<!-- Generated by `cnncompile schema --format markdown`; edit the classes in",
        "     cnncompile/language/, not this file. A test fails when the two differ. -->",
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
        "## weights",
        "",
        "Start from trained weights. Layers are matched **by name** (as Keras 3 stores them), shapes",
        "checked; `check` reports every mismatch at once, located here, without a framework. Every",
        "spec layer with weights must be in the file unless `skip` names it (names or globs).",
        "",
        "```yaml",
        "weights: imagenet                 # a zoo file: Keras Applications' file, via Keras's cache",
        "weights: runs/mnist_resnet        # a run directory: its model.keras",
        "weights: base.weights.h5          # or a .keras file; relative to the spec file",
        "weights: {from: base.keras, skip: [predictions]}   # a new head starts fresh",
        "```",
        "",
        *_section(WeightsFrom, level="###")[2:],
        "Freeze layers with `trainable: false` on any layer or block use; train them later with",
        "`training.phases` (see Phases). `export --untrained` of a spec with weights exports them.",
        "",
        "## Layers",
        "",
        "Each entry of `layers` is a mapping with `type` and that layer's arguments. Every layer",
        "also takes `name` (unique; default: Keras's, e.g. `conv2d`, `conv2d_1`), `inputs`, and",
        "`trainable` (false freezes it; a frozen BatchNormalization also runs in inference mode).",
        "Shapes exclude the batch axis; `cnncompile check` prints every layer's output shape,",
        "parameters and MACs.",
        "",
        "### Graphs: `inputs`",
        "",
        "A layer reads the layer listed before it (the first reads the model input), unless it",
        "names its inputs: `inputs: [stem, conv2d_3]`. `input` is the model input; any other",
        "name must be a layer listed **earlier** in the file, so the listing order is always a",
        "valid execution order and a cycle cannot be written. Merge layers (Add, Subtract,",
        "Multiply, Average, Maximum, Minimum, Concatenate) take two or more inputs; every other",
        "layer takes one. The model's output is the last layer listed; a layer whose output",
        "never reaches it gets a warning (a dead branch is almost always a wiring mistake).",
        "",
        "```yaml",
        "layers:",
        "  - {type: Conv2D, name: stem, filters: 32, kernel_size: 3, padding: same, activation: relu}",
        "  - {type: Conv2D, filters: 32, kernel_size: 3, padding: same, activation: relu}",
        "  - {type: Conv2D, filters: 32, kernel_size: 3, padding: same}",
        "  - {type: Add, inputs: [stem, conv2d_1]}          # the residual connection",
        "  - {type: Activation, activation: relu}",
        "```",
        "",
        "Element-wise merges broadcast like Keras: shapes are aligned from the right and each",
        "axis must be equal or 1, so Multiply of (H, W, C) and (1, 1, C) scales every pixel",
        "(squeeze-and-excitation). Concatenate needs equal ranks and equal sizes on every axis",
        "but its `axis`. Tensors are channels last; `data_format: channels_last` is accepted",
        "where Keras takes it, `channels_first` is refused.",
        "",
    ]
    for cls in LAYER_TYPES:
        out += _section(cls, example=cls.example)
    out += _blocks_section()
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
    out += ["### Phases", "", *_section(phases.Phase, level="####")[2:],
            "```yaml", "training:", "  phases:", "    - {epochs: 3}                                 # the head, base frozen",
            "    - {epochs: 5, unfreeze: [\"conv5_*\"], learning_rate: 1.0e-5}", "```", "",
            "Epochs are numbered across phases; each phase starts a fresh optimizer. A run killed in",
            "phase 2 resumes in phase 2; the curves and the report mark where each phase starts.", ""]
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
