"""Deployment: a built or trained model -> verified .onnx / .tflite files -> predictions.

export.py is the one entry point (format, precision, images); pipeline.py is the one path
every format walks (parity with Keras, int8 calibration, accuracy gate, size and speed,
metadata, the atomic write); onnx_export.py (+ onnx_int8.py, its quantizer) and
tflite_export.py are each format's converter, one `FORMAT` row each. int8.py reads the CPU's
int8 features; predict.py classifies with onnxruntime or LiteRT, no TensorFlow; measure.py
times them.
"""
