"""Keras backend: ModelSpec -> keras.Model. Imports TensorFlow; never imported by `check`.

Importing this package first loads TensorFlow and Keras quietly: TensorFlow 2.21's C++
runtime prints start-up notices (absl's "log messages before InitializeLog", oneDNN) straight
to file descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL, which would precede every located error
we print (cnncompile/native.py). Python exceptions from the import still surface.
"""

import os

from cnncompile.native import quiet_native_stderr

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


with quiet_native_stderr():
    import tensorflow  # noqa: F401
    import keras  # noqa: F401
