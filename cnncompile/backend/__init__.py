"""Keras backend: ModelSpec -> keras.Model. Imports TensorFlow; never imported by `check`.

Importing this package first keeps TensorFlow's C++ start-up chatter (oneDNN notices,
graph-version warnings) out of the CLI's output; Python errors still surface normally.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
