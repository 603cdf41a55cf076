"""The editor: `cnncompile lsp`, the compiler as a Language Server.

document.py analyses each version of a text exactly as `check` would (and keeps the last
version that parsed, and the last that compiled, for a document that is mid-edit) and finds
what a cursor position points at; features.py answers the editor's questions from that
(diagnostics, hover, completion, definition, outline, inlay hints, quick fixes) as LSP
types; server.py wires them to pygls over stdio.

Framework-free like `check`: nothing here imports TensorFlow, Keras, ONNX or Optuna
(tests/test_contracts.py).
"""
