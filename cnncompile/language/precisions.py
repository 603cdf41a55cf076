"""The values of `training.precision`, in a module of their own: the CLI's `--precision` choice
needs them at start-up, and importing the training section would load pydantic and every class
of the language before any command runs (the language server starts without them)."""

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
