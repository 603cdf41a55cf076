"""Deployment: a built or trained model -> verified .onnx / .tflite files -> predictions.

export.py is the one entry point (format, precision, images); onnx_export.py, onnx_int8.py and
tflite_export.py write each format; int8.py reads the CPU's int8 features; predict.py classifies
with onnxruntime or LiteRT, no TensorFlow; measure.py times them.
"""
