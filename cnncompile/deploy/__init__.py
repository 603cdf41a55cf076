"""Deployment: a built or trained model -> verified .onnx / .tflite files -> predictions.

export.py is the one entry point (format, precision, images); pipeline.py is the one path
every format walks (parity with Keras, int8 calibration, accuracy gate, size and speed,
metadata, the atomic write); onnx_export.py (+ onnx_int8.py, its quantizer) and
tflite_export.py are each format's converter, one `FORMAT` row each. int8.py reads the CPU's
int8 features; predict.py classifies with onnxruntime or LiteRT, no TensorFlow; measure.py
times them.
"""

# The int8 export's defaults, which `cnncompile export --help` shows: here rather than in int8.py
# so that the CLI reads them without importing it (every command, `check` too, builds the CLI).
DEFAULT_CALIBRATION_IMAGES = 1000  # MinMax ranges settle well before this on 28x28 digits
DEFAULT_MAX_ACCURACY_DROP = 0.5  # percentage points of top-1 accuracy
