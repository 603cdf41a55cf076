"""The `export` command's one library call: which model, which images, which format.

Library callers get the same policy as the CLI: the trained run (or a fresh model), real test
images from the spec's dataset for parity, training images for calibration, and a file written
only once its format's verification passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cnncompile.deploy.onnx_export import DEFAULT_OPSET, ExportResult, export_data, export_onnx, fresh_model, load_trained
from cnncompile.analysis.check import CompiledSpec
from cnncompile.deploy.int8 import Int8Options

SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}


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
        return self.run_dir / (stem + SUFFIX[self.format])


def export(compiled: CompiledSpec, request: ExportRequest) -> ExportResult:
    """Raises ExportError (nothing written) when the model, data or verification says no."""
    model = fresh_model(compiled) if request.untrained else load_trained(compiled, request.run_dir)
    data = export_data(compiled, request.data_dir)
    if request.format == "tflite":
        from cnncompile.deploy.tflite_export import export_tflite

        return export_tflite(compiled, model, request.out, data, int8=request.int8, untrained=request.untrained,
                             options=request.int8_options)
    if request.int8:
        from cnncompile.deploy.onnx_int8 import export_onnx_int8

        return export_onnx_int8(compiled, model, request.out, data, opset=request.opset, untrained=request.untrained,
                                options=request.int8_options)
    return export_onnx(compiled, model, request.out, data.parity_images, data.parity_source, opset=request.opset,
                       labels=data.labels, untrained=request.untrained)
