"""Import: an existing Keras or ONNX model -> a spec (YAML) and, optionally, its weights.

imported.py is the framework-neutral result every source produces (layers in the language's
terms, wired by name, with their weights); keras_source.py reads `.keras`/`.h5` files,
onnx_source.py reads ONNX graphs (NCHW ones included: layout transposes disappear, weights
become channels-last); discovery.py folds repeated structure into `blocks:`; spec_text.py
writes the YAML; model_import.py is the one entry point, which proves the spec describes
the source (same expanded graph, and with weights the same outputs) before anything is written.

Everything the language cannot express is collected and refused at once (ImportRefused),
never approximated.
"""
