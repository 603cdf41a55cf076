"""Analysis: what a validated spec computes without a framework.

inference.py walks the graph for shapes, parameters and MACs; check.py is `check`'s one call
(file -> spec -> numbers); summary.py and draw.py render it; space.py is the search space,
each candidate checked statically.

Framework-free: nothing here imports TensorFlow, Keras, ONNX or Optuna (tests/test_contracts.py).
"""
