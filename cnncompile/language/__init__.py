"""The language: YAML text -> positioned tree -> validated ModelSpec -> expanded, wired graph.

loader.py reads YAML keeping every value's line and column; layers.py, blocks.py, training.py,
search.py, types.py and model.py are the pydantic classes that are the language (one class per
layer type, optimizer, schedule, ...); validate.py maps pydantic's errors back to the file; shapes.py is
the pure shape arithmetic each layer class's rule calls (Keras's operation_utils, mirrored);
graph.py expands blocks (expressions.py evaluates `${...}`) and wires layers by name;
diagnostics.py is the located error every stage reports; reference.py derives the JSON Schema
and spec/README.md from the same classes.

The modules that define pydantic classes do not use `from __future__ import annotations`:
pydantic would evaluate every field's string annotation again at import, which `check`
pays on every run; a forward reference is quoted where it is needed instead.

Framework-free: nothing here imports TensorFlow, Keras, ONNX or Optuna (tests/test_contracts.py).
"""
