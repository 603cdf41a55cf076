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

from cnncompile.language import phases, search, training
from cnncompile.language.weights import WeightsFrom
from cnncompile.language.blocks import Block, BlockUse
from cnncompile.language.layers import LAYER_TYPES, LayerSpec, LayerUnion
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


def default_text(field: Any) -> str:
    """A field's default as the reference shows it (Markdown): `valid`, 1/255, **required**."""
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
        lines.append(f"| `{name}` | {_type_text(prop, defs)} | {default_text(field)} | {description} |")
    return lines


def _section(cls: type[BaseModel], level: str = "###", example: str | None = None) -> list[str]:
    out = [f"{level} {cls.__name__}", "", inspect.cleandoc(cls.__doc__ or ""), ""]
    out += _fields_table(cls) + [""]
    if issubclass(cls, LayerSpec):  # how `check` counts its MACs
        out += [f"MACs per image: {' '.join(inspect.cleandoc(cls.macs.__doc__ or '').split())}", ""]
    if example:
        out += ["```yaml", f"- {example}", "```", ""]
    return out


def _kinds(types: tuple[type[BaseModel], ...]) -> list[str]:
    """One section per class of a spec section (its `type:` name in the heading when that differs)."""
    out = []
    for cls in types:
        section = _section(cls, level="####")
        name = cls.model_fields["type"].default if "type" in cls.model_fields else None
        if name and name != cls.__name__:
            section[0] += f" (`{name}`)"
        has_arguments = len(section) > 7  # heading, doc, table head (2 lines) and blanks, then rows
        out += section if has_arguments else section[:4]
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
        "  (attributes, subscripts, other functions) is allowed. Strings work as in Python",
        "  (`'conv' + kind`, `kind == 'se'`, `'x' * 3`); `%`-formatting is refused (interpolate",
        "  with `${...}` instead). Every value is bounded before it is built: numbers up to 10^15,",
        "  texts and lists up to 1,000 characters or items, 40 levels of nesting.",
        "- **`index`** belongs to each use: inside a block it is the repeat index of the use that",
        "  expanded that block, from 1. A nested use without `repeat` sees 1, not its parent's",
        "  index; pass that on as a parameter (`{block: inner, stage: \"${index}\"}`).",
        "- **Names.** A layer inside a use is named `<use name>_<layer name>`: the use above makes",
        "  `conv2_block1_0_conv` ... `conv2_block3_out`, Keras Applications' own names. Unnamed layers",
        "  get `<use name>_<Keras default>`, numbered within the block (`unit_conv2d`, `unit_conv2d_1`),",
        "  so every use makes the same local names. With `repeat`, a name without `${...}` gets",
        "  `_<index>`. An unnamed use is named after its block, numbered within its list (`unit`,",
        "  `unit_1`). Use names follow the layer-name rules, and a name may be defined once: a use",
        "  named like a layer (or an automatic use name that collides) is a duplicate-name error.",
        "- **Wiring.** Inside a block, `input` (or the names in the block's `inputs:`) is what the use",
        "  passes in; a use reads the layer before it unless it gives `inputs:`. Each repeated",
        "  instance reads the previous one. The block's output is its last layer. Later layers can",
        "  read an instance by its name (its output) or any expanded layer by its full name.",
        "- **`when`.** A layer (or a use) whose `when:` is false is dropped; its name then stands for",
        "  its first input (the layer before it, when it has no `inputs`), so `add` above reads the",
        "  block's input when there is no projection. `when` must be `true` or `false` once",
        "  substituted (the text `no` or `'false'` is an error). A dropped merge whose first input",
        "  would bypass a layer computed in the same block (`Add: inputs: [input, project_bn]`,",
        "  Keras's order for a shortcut) is an error with the fix: list first the operand that",
        "  should stand for it (`inputs: [project_bn, input]`). `when` applies only inside blocks.",
        "- **Errors** inside a block are reported at the line inside the block, with a note at each",
        "  use that expanded it (`note: in expansion of block 'bottleneck' as 'conv2_block1'`). Blocks",
        "  may use blocks, up to 64 deep; recursion is an error. A spec expands to at most 100,000",
        "  layers: the size of each use is counted before it is expanded. Parameters cannot be",
        "  named like a use's own keys (`block`, `name`, `repeat`, `inputs`, `when`, `index`), and",
        "  a block cannot be named like a layer type.", "",
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
        "Default names count each type from the top of the list, skipping names already taken by",
        "any layer: `[Conv2D, Conv2D named conv2d_1, Conv2D]` names the third `conv2d_2` (Keras 3",
        "would name it `conv2d_1` and then refuse the model for two layers of that name).",
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
        "never reaches it gets a warning (a dead branch is almost always a wiring mistake), is",
        "marked `[dead]` in `check`'s table (`\"dead\": true` in `--json`) and is left out of the",
        "totals, as Keras leaves it out of the model.",
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
    out += _kinds(training.OPTIMIZER_TYPES)
    out += ["### Learning-rate schedules", "", "Any optimizer's `learning_rate` may be a schedule:", ""]
    out += _kinds(training.SCHEDULE_TYPES)
    out += ["### Losses", "", ("`loss: sparse_categorical_crossentropy` means that loss with Keras's defaults; "
                               "a mapping sets arguments."), ""]
    out += _kinds(training.LOSS_TYPES)
    out += ["### Metrics", "", ("Logged every epoch on the training (and validation) images and reported on the "
                                "test set; `accuracy` always is."), ""]
    out += _kinds(training.METRIC_TYPES)
    out += ["### Callbacks", ""]
    out += _kinds(training.CALLBACK_TYPES)
    out += ["### Augmentation", "", "Applied to training batches only; the saved and exported model never contains them.", ""]
    out += _kinds(training.AUGMENTATION_TYPES)
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
    out += _kinds(search.RANGE_TYPES)
    out += ["## Activations", "", "By Keras name: " + ", ".join(f"`{a}`" for a in ACTIVATIONS) + ".", "",
            "## Initializers", "", "By Keras name: " + ", ".join(f"`{i}`" for i in INITIALIZERS) + ".", ""]
    return "\n".join(out).rstrip() + "\n"
