"""cnncompile: a declarative compiler for convolutional neural networks.

YAML text -> (spec) validated ModelSpec -> (inference) shapes, params, MACs
          -> (backend) keras.Model -> (train) run directory -> (export) model.onnx
"""

__version__ = "0.1.0"
