"""The `export` command's one library call: which model, which images, which format.

Library callers get the same policy as the CLI: the trained run (or a fresh model), real test
images from the spec's dataset for parity, training images for calibration, and a file written
only once its format's verification passed (deploy/pipeline.py, the same steps for every format).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cnncompile.analysis.check import CompiledSpec
from cnncompile.deploy.int8 import Int8Options
from cnncompile.deploy.pipeline import (DEFAULT_OPSET, ExportFormat, ExportResult, export_data, export_model,
                                        fresh_model, load_trained)
# Format name -> the module whose FORMAT row converts to it; imported on use (TFLite's loads TensorFlow).
FORMAT_MODULES = {"onnx": "cnncompile.deploy.onnx_export", "tflite": "cnncompile.deploy.tflite_export"}


def export_format(name: str) -> ExportFormat:
    return importlib.import_module(FORMAT_MODULES[name]).FORMAT


@dataclass(frozen=True)
class ExportRequest:
    format: Literal["onnx", "tflite"]
    run_dir: Path  # holds model.keras; the default output goes here too
    int8: bool = False
    output: Path | None = None
    opset: int = DEFAULT_OPSET  # ONNX only
    untrained: bool = False
    data_dir: Path | None = None
    int8_options: Int8Options = field(default_factory=Int8Options)

    @property
    def out(self) -> Path:
        """runs/<name>/model[.untrained][.int8].onnx|.tflite unless given."""
        if self.output is not None:
            return self.output
        stem = "model" + (".untrained" if self.untrained else "") + (".int8" if self.int8 else "")
        return self.run_dir / (stem + "." + self.format)


def export(compiled: CompiledSpec, request: ExportRequest) -> ExportResult:
    """Raises ExportError (nothing written) when the model, data or verification says no."""
    model = fresh_model(compiled) if request.untrained else load_trained(compiled, request.run_dir)
    return export_model(compiled, model, export_format(request.format), request.out,
                        export_data(compiled, request.data_dir), int8=request.int8, untrained=request.untrained,
                        opset=request.opset, options=request.int8_options)
