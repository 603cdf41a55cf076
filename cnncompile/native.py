"""Console noise from native libraries, kept off the user's terminal. Framework-free.

TensorFlow's C++ runtime, its TFLite converter and the LiteRT interpreter print notices
("Created TensorFlow Lite XNNPACK delegate for CPU", oneDNN, absl) straight to file
descriptor 2, ignoring Python's logging and TF_CPP_MIN_LOG_LEVEL; they would sit between
our located errors and notes. Python exceptions still surface. CNNCOMPILE_TF_VERBOSE=1
shows the raw output.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_native_stderr():
    if os.environ.get("CNNCOMPILE_TF_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
