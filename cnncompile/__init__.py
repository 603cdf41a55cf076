"""cnncompile: a declarative compiler for convolutional neural networks.

The folders are the pipeline, dependencies pointing one way:

    language/  YAML -> validated, expanded, wired graph          (framework-free)
    analysis/  shapes, parameters, MACs, summary, drawing, search space (framework-free)
    data/      IDX / npz / image folders, dataset resolution and download
    backend/   ModelSpec -> keras.Model, training objects
    run/       train, checkpoint, distributed, tune, report -> run directory
    deploy/    export (.onnx / .tflite, float / int8, verified) -> predict
    cli.py     thin click commands over all of it
"""

__version__ = "0.1.0"
