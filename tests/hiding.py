"""`python -m tests.hiding MODULES cnncompile-args...`: cnncompile as if MODULES (comma-separated
top-level names) were not installed; test_extras.py runs it."""

from __future__ import annotations

import runpy
import sys


class Hide:
    """A meta-path finder that makes the named packages (and their submodules) fail to import
    as a missing package does."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None  # not ours: the next finder looks


if __name__ == "__main__":
    hidden = sys.argv.pop(1).split(",")
    sys.meta_path.insert(0, Hide(hidden))
    sys.argv[0] = "cnncompile"
    runpy.run_module("cnncompile", run_name="__main__")
