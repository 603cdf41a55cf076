"""A TensorBoard callback without the tensorboard package: refused before training, at the
callback's line, not a traceback from Keras after the first epoch (tensorflow-cpu does not
install tensorboard; a fresh `.ci/run` found that)."""

from __future__ import annotations

import importlib.util

from tests.conftest import TINY, make_idx_dir, run_cli


def test_a_tensorboard_callback_without_tensorboard_is_a_located_error(tmp_path, monkeypatch):
    make_idx_dir(tmp_path / "data" / "mnist", n_train=32, n_test=8)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY + "    - {type: TensorBoard}\n")
    line = TINY.count("\n") + 1
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "tensorboard" else real(name, *args))
    result = run_cli("train", str(spec), "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                     "--quiet", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"tiny.yaml:{line}:" in result.stderr and "needs the tensorboard package" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
