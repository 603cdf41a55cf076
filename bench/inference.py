"""Inference throughput: onnxruntime on the exported model vs Keras, on the real MNIST test set.

  python bench/inference.py RUN_DIR [--data-dir ../shared/data] [--repeats 5]

RUN_DIR holds model.keras and model.onnx (cnncompile train + export). For batch sizes 1, 64
and 1000: Keras `predict`, a direct Keras call `model(x)`, and onnxruntime (with the session
options `cnncompile predict` uses). Images per second, median of repeats, in one process
and interleaved so the shared machine's noise falls on all three alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cnncompile.backend  # noqa: E402,F401
import keras  # noqa: E402
import numpy as np  # noqa: E402

from cnncompile.data.datasets import load_dataset  # noqa: E402
from cnncompile.deploy.measure import interleaved_throughput  # noqa: E402
from cnncompile.deploy.predict import OnnxClassifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    x = load_dataset("mnist", data_dir=Path(args.data_dir)).x_test.astype(np.float32)
    model = keras.models.load_model(args.run_dir / "model.keras", safe_mode=True)
    onnx_model = OnnxClassifier(args.run_dir / "model.onnx")
    runners = {
        "keras_predict": lambda b: model.predict(b, batch_size=len(b), verbose=0),
        "keras_call": lambda b: model(b, training=False),
        "onnxruntime": onnx_model.run,
    }
    results = {}
    for batch, med in interleaved_throughput(runners, x, (1, 64, 1000), args.repeats, budget_seconds=3.0).items():
        results[batch] = {**{f"{k}_images_per_s": round(v, 1) for k, v in med.items()},
                          "ort_over_keras_predict": round(med["onnxruntime"] / med["keras_predict"], 1),
                          "ort_over_keras_call": round(med["onnxruntime"] / med["keras_call"], 1)}
        print(f"batch {batch}: " + json.dumps(results[batch]), flush=True)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "inference.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
