"""Keras backend: ModelSpec -> keras.Model. Imports TensorFlow; never imported by `check`.

Importing this package first loads TensorFlow and Keras quietly: TensorFlow 2.21's C++
runtime prints start-up notices (absl's "log messages before InitializeLog", oneDNN) straight
to file descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL, which would precede every located error
we print. Python exceptions from the import still surface; set CNNCOMPILE_TF_VERBOSE=1 to see
the raw output.
"""

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@contextlib.contextmanager
def _quiet_stderr():
    if os.environ.get("CNNCOMPILE_TF_VERBOSE"):
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _quiet_stderr():
    import tensorflow  # noqa: F401
    import keras  # noqa: F401
