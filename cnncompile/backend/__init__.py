"""Keras backend: ModelSpec -> keras.Model. Imports TensorFlow; never imported by `check`.

Importing this package first loads TensorFlow and Keras quietly: TensorFlow 2.21's C++
runtime prints start-up notices (absl's "log messages before InitializeLog", oneDNN) straight
to file descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL, which would precede every located error
we print (cnncompile/native.py). Python exceptions from the import still surface.

It also loads them without matplotlib: importing TensorFlow imports Keras, whose
keras.src.visualization imports matplotlib.pyplot at import time, when it is installed, for
plot_image_gallery. That was a fifth of the import (~0.5 s of CPU here, docs/precision.md's
whole-process section) in every process that trains, for functions cnncompile never calls.
With matplotlib hidden during the import those two Keras functions say matplotlib is missing
in this process; matplotlib itself imports as usual afterwards (tune's plots), and if it was
imported before, nothing changes.
"""

import contextlib
import os
import sys

from cnncompile.native import quiet_native_stderr

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@contextlib.contextmanager
def _matplotlib_hidden():
    if "matplotlib" in sys.modules:
        yield
        return
    sys.modules["matplotlib"] = None  # `import matplotlib...` raises ImportError, which Keras catches
    try:
        yield
    finally:
        if "matplotlib" in sys.modules and sys.modules["matplotlib"] is None:
            del sys.modules["matplotlib"]


with quiet_native_stderr(), _matplotlib_hidden():
    import tensorflow  # noqa: F401
    import keras  # noqa: F401
