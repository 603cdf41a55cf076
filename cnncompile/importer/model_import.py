"""`cnncompile import`'s one call: a model file -> a checked spec (and weights), proven equal.

Nothing is written until the spec has been parsed back by the language, its expanded graph
equals the source's layer for layer (names, types, arguments, wiring), and, with weights,
the model cnncompile builds from it computes the source's outputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncompile.files import atomic_path, write_bytes
from cnncompile.importer.discovery import STRATEGIES, fold
from cnncompile.importer.imported import ImportedModel, ImportRefused, SourceError, Unsupported, plain
from cnncompile.importer.spec_text import render
from cnncompile.language.diagnostics import SpecError
from cnncompile.language.model import Input, ModelSpec
from cnncompile.language.validate import parse_spec

TOLERANCE = 1e-4
"""max |diff| between the source's outputs and the imported model's, relative to the outputs'
scale when they exceed 1 (logits of 0-255 images reach hundreds; float32 keeps ~7 digits)."""
CHECK_IMAGES = 4


@dataclass
class ImportResult:
    spec_path: Path
    text: str
    layers: int
    blocks: list[str]
    weights_path: Path | None = None
    max_abs_diff: float | None = None
    weights_line: str | None = None
    """`weights: FILE` when the language has no `weights:` key yet: the line to add by hand."""
    notes: list[str] = field(default_factory=list)


def read_source(path: Path) -> tuple[ImportedModel, Any]:
    """(the model in the language's terms, a function images -> outputs for the check)."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from cnncompile.importer import onnx_source

        return onnx_source.read(path)
    from cnncompile.importer import keras_source

    if suffix not in keras_source.SUFFIXES:
        raise SourceError(f"{path}: expected a .keras, .h5 or .onnx file")
    imported, model = keras_source.read(path)
    return imported, lambda images: np.asarray(model(images, training=False))


PREPROCESSING = "preprocessing"
"""The name cnncompile's builder gives the input scaling layer (backend.builder.PREPROCESSING;
a test keeps the two equal): in a model cnncompile built, it is `input.scale` and `offset`."""


def _input(imported: ImportedModel) -> dict[str, Any]:
    """The spec's input. A model cnncompile built (a run's model.keras, an export) scales its
    input in its first layer: that becomes input.scale/offset again. Any other source takes its
    input as it is (scale 1, offset 0), its own scaling layers kept as layers."""
    first = imported.layers[0] if imported.layers else None
    if first is not None and first.type == "Rescaling" and first.name == PREPROCESSING and first.inputs == ["input"]:
        imported.layers.remove(first)
        for layer in imported.layers:
            layer.inputs = ["input" if ref == PREPROCESSING else ref for ref in layer.inputs]
        scale, offset = first.args.get("scale"), first.args.get("offset", 0.0)
        default = Input.model_fields["scale"].default
        if offset == 0 and np.float32(scale) == np.float32(default):  # read back from float32: the default
            return {"shape": imported.input_shape}
        return {"shape": imported.input_shape, "scale": scale, "offset": offset}
    return {"shape": imported.input_shape, "scale": 1, "offset": 0}


def spec_of(imported: ImportedModel, image: dict[str, Any], patterns=None) -> tuple[dict[str, Any], list[str]]:
    """The spec as a mapping, and the blocks it defines: flat without `patterns`, else with
    the blocks discovery finds reading the names with them."""
    spec: dict[str, Any] = {"name": imported.name, "input": image}
    if patterns is None:
        return {**spec, "layers": imported.flat_layers()}, []
    blocks, layers = fold(imported, patterns)
    if blocks:
        spec["blocks"] = blocks
    return {**spec, "layers": layers}, list(blocks)


def _shortest_exact(imported: ImportedModel, image: dict[str, Any], comment: str, reference: list,
                    source: str, notes: list[str]) -> tuple[str, dict[str, Any], list[str], ModelSpec] | None:
    """The shortest folded spec, over the readings of the names discovery tries, whose
    expanded graph is the source's exactly (text, mapping, blocks, spec); None if none is."""
    best = None
    for patterns in STRATEGIES:
        spec_dict, blocks = spec_of(imported, image, patterns)
        text = render(spec_dict, comment)
        try:
            spec = _parse(text, source)
            exact = _expanded(spec) == reference
        except ImportRefused:  # a block the language reads otherwise than discovery meant
            exact = False
        if not exact:
            notes.append(f"blocks {', '.join(blocks)} did not expand to exactly the model; not used")
        elif best is None or text.count("\n") < best[0].count("\n"):
            best = (text, spec_dict, blocks, spec)
    return best


def _expanded(spec: ModelSpec) -> list[tuple]:
    return [(node.name, node.layer.type, plain(node.layer.model_dump(exclude={"name", "inputs"})), node.inputs)
            for node in spec.graph()]


def _parse(text: str, source: str) -> ModelSpec:
    try:
        spec, _ = parse_spec(text.encode())
    except SpecError as exc:  # a cnncompile bug (the importer wrote what the language rejects)
        raise ImportRefused(source, [Unsupported("spec", "internal", d.message) for d in exc.diagnostics]) from None
    return spec


def import_model(source: Path, output: Path, weights: Path | None = None, flat: bool = False) -> ImportResult:
    """Import `source` into `output` (and `weights`); ImportRefused lists what cannot be."""
    if weights is not None and not weights.name.endswith(".weights.h5"):
        raise SourceError(f"--weights {weights}: Keras needs the name to end in .weights.h5")
    imported, run_source = read_source(source)
    comment = f"Imported from {source.name} by `cnncompile import`."
    image = _input(imported)
    flat_dict, _ = spec_of(imported, image)
    flat_text = render(flat_dict, comment)
    reference = _parse(flat_text, str(source))
    notes = list(imported.notes)
    # Discovery must never change the model: a reading of the names whose blocks do not
    # expand to exactly the source's graph is dropped, and with none left the spec is flat.
    folded = None if flat else _shortest_exact(imported, image, comment, _expanded(reference), str(source), notes)
    if folded is not None and folded[0].count("\n") < flat_text.count("\n"):
        text, spec_dict, blocks, spec = folded
    else:
        text, spec_dict, blocks, spec = flat_text, flat_dict, [], reference
    from cnncompile.analysis.inference import infer

    try:
        infer(spec)
    except SpecError as exc:
        raise ImportRefused(str(source), [Unsupported("spec", "shapes", d.message) for d in exc.diagnostics]) from None
    result = ImportResult(output, text, len(imported.layers), blocks, notes=notes)
    if weights is not None:
        text = _with_weights(result, spec_dict, comment, weights, output)
        result.max_abs_diff = _write_weights(imported, spec, run_source, weights, str(source))
    result.text = text
    write_bytes(output, text.encode())
    return result


def _with_weights(result: ImportResult, spec_dict: dict, comment: str, weights: Path, output: Path) -> str:
    """The spec naming its weights file, if the language has `weights:`; otherwise the
    line to add is reported (detected from the language's classes, never assumed)."""
    relative = os.path.relpath(weights.resolve(), output.resolve().parent)
    result.weights_path = weights
    if "weights" in ModelSpec.model_fields:
        keys = list(spec_dict)
        ordered = {k: spec_dict[k] for k in keys[:2]} | {"weights": relative} | {k: spec_dict[k] for k in keys[2:]}
        return render(ordered, comment)
    result.weights_line = f"weights: {relative}"
    return result.text


def _write_weights(imported: ImportedModel, spec: ModelSpec, run_source, weights: Path, source: str) -> float:
    """Build the spec's model, give every layer the source's weights, prove the outputs agree,
    then save them (Keras's save_weights: matched by layer name on loading)."""
    from cnncompile.backend.builder import build_model

    model = build_model(spec)  # with the input scaling, as the source computes it
    for layer in imported.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.weights)
    images = check_images(imported.input_shape)
    expected = run_source(images)
    difference = float(np.max(np.abs(np.asarray(model(images, training=False)) - expected)))
    limit = TOLERANCE * max(1.0, float(np.max(np.abs(expected))))
    if not difference <= limit:
        raise ImportRefused(source, [Unsupported("outputs", "weights", f"the imported model differs from the "
                                                 f"source by max |diff| {difference:.3g} > {limit:.3g}")])
    with atomic_path(weights, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    return difference


def check_images(shape: list[int], count: int = CHECK_IMAGES) -> np.ndarray:
    """A fixed, seeded batch of 0-255 images to compare the two models on (the tests use
    real MNIST digits)."""
    return np.random.default_rng(0).uniform(0, 255, (count, *shape)).astype("float32")
