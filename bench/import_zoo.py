"""The zoo through `cnncompile import` (issue 18): each examples/zoo file -> Keras model (weights
drawn at random) -> .keras -> import -> the same `check --json` layer by layer (by name, without
source lines) and the same weights; and each keras.applications model imported directly
(lines, blocks found, or the refusal's reasons).

  python bench/import_zoo.py [--only round_trip|application] [STEM ...]

Heavy (VGG-16 alone is 528 MB of weights): a bench, not a test. Results are printed and written
to bench/results/import_zoo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402

from cnncompile.analysis.check import compile_file  # noqa: E402
from cnncompile.backend.builder import build_model  # noqa: E402
from cnncompile.importer.imported import ImportRefused  # noqa: E402
from cnncompile.importer.model_import import import_model  # noqa: E402
from tests.test_import import by_name  # noqa: E402
from tests.zoo_support import ZOO, zoo_path  # noqa: E402


def timed_import(source: Path):
    """Import `source` with weights beside it: (result, seconds, compiled spec, built model)."""
    spec, weights = source.with_suffix(".yaml"), source.with_suffix(".weights.h5")
    start = time.perf_counter()
    result = import_model(source, spec, weights)
    seconds = time.perf_counter() - start
    compiled = compile_file(spec)
    model = build_model(compiled.spec, preprocessing=False)
    model.load_weights(weights)
    return result, seconds, compiled, model


def round_trip(stem: str, folder: Path) -> dict:
    original = compile_file(zoo_path(stem))
    model = build_model(original.spec, preprocessing=False)
    model.save(folder / f"{stem}.keras")
    try:
        result, seconds, imported, rebuilt = timed_import(folder / f"{stem}.keras")
    except ImportRefused as exc:
        return {"refused": len(exc.problems), "reasons": sorted({f"{p.kind}: {p.why}" for p in exc.problems})}
    weights_equal = all(np.array_equal(a, b) for layer in model.layers[1:]
                        for a, b in zip(layer.get_weights(), rebuilt.get_layer(layer.name).get_weights()))
    return {"same_check_json": by_name(imported) == by_name(original), "same_weights": weights_equal,
            "max_abs_diff": result.max_abs_diff, "zoo_lines": zoo_path(stem).read_text().count("\n"),
            "imported_lines": result.text.count("\n"), "blocks": result.blocks, "import_seconds": round(seconds, 1)}


def application(stem: str, folder: Path) -> dict:
    import keras

    attribute, kwargs = ZOO[stem]
    getattr(keras.applications, attribute)(weights=None, **kwargs).save(folder / f"app_{stem}.keras")
    try:
        result = import_model(folder / f"app_{stem}.keras", folder / f"app_{stem}.yaml")
    except ImportRefused as exc:
        kinds = sorted({f"{p.kind}: {p.why}" for p in exc.problems})
        return {"refused": len(exc.problems), "reasons": kinds}
    ours, zoo = by_name(compile_file(folder / f"app_{stem}.yaml")), by_name(compile_file(zoo_path(stem)))

    def multiset(info: dict) -> list:
        return sorted((l["type"], str(l["output_shape"]), l["params"]) for l in info["layers"].values())

    # The zoo files name some layers their own way where Keras uses global counters (conv2d_17).
    return {"lines": result.text.count("\n"), "blocks": result.blocks,
            "same_layers_as_zoo_file": multiset(ours) == multiset(zoo),
            "same_names_as_zoo_file": ours["layers"] == zoo["layers"]}


PARTS = {"round_trip": round_trip, "application": application}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stems", nargs="*", default=list(ZOO))
    parser.add_argument("--only", choices=list(PARTS), help="run one of the two comparisons")
    args = parser.parse_args()
    results = {}
    for stem in args.stems:
        with tempfile.TemporaryDirectory() as tmp:
            results[stem] = {part: run(stem, Path(tmp)) for part, run in PARTS.items() if args.only in (None, part)}
        print(stem, json.dumps(results[stem]), flush=True)
    save_results(f"import_zoo{'_' + args.only if args.only else ''}", results)


def save_results(name: str, results: dict) -> None:
    """bench/results/<name>.json (not committed; docs/import.md quotes them)."""
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
