"""What a new user hits first (issue 21): what `tune` says it will do, its history plot, and
the run report's confusion matrix, F1 bars and architecture card."""

from __future__ import annotations

from tests.conftest import run_cli

TUNE_SPEC = """\
name: t
input: {shape: [28, 28, 1]}
layers:
  - {type: Conv2D, name: conv1, filters: 4, kernel_size: 3}
  - {type: Flatten}
  - {type: Dense, units: 10, activation: softmax}
training: {dataset: {path: no-such-data}, validation_split: 0.2}
search:
  trials: 10
  space: {layers.conv1.filters: {choice: [4, 8]}}
"""


def test_tune_says_the_trials_it_will_train(tmp_path):
    """--trials 2 used to print the spec's 'tune: 10 trials'. (The missing dataset stops the
    study at its first trial, after the plan is printed.)"""
    (tmp_path / "t.yaml").write_text(TUNE_SPEC)
    result = run_cli("tune", str(tmp_path / "t.yaml"), "--trials", "2", "--out", str(tmp_path / "tune"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "  tune: 2 trials, maximize val_accuracy" in result.stdout
    assert "10 trials" not in result.stdout


def test_history_plot_ticks_are_whole_trials(tmp_path, monkeypatch):
    import optuna
    from matplotlib.figure import Figure

    from cnncompile.run.study_files import plot_study

    study = optuna.create_study(direction="maximize", study_name="s")
    for number, value in enumerate([0.5, 0.7]):
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
    saved = []
    original = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (saved.append(self), original(self, *a, **k))[1])
    plot_study(study, tmp_path, "val_accuracy")
    assert (tmp_path / "history.png").exists()
    ticks = [t for t in saved[0].axes[0].get_xticks() if 0 <= t <= 1]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def _matrix():
    """MNIST-like: ~97% on the diagonal, 23 sevens read as 2, a few scattered errors."""
    matrix = [[0] * 10 for _ in range(10)]
    for k in range(10):
        matrix[k][k] = 970
        matrix[k][(k + 3) % 10] = 2
    matrix[7][2] = 23
    return matrix


def _cell_styles(page: str) -> list[list[str]]:
    import re

    rows = re.findall(r"<tr><th>\d</th>(.*?)</tr>", page)
    return [re.findall(r'<td style="background:rgba\(([\d,]+),([\d.]+)\)', row) for row in rows]


def test_the_confusion_matrix_shows_errors_in_their_own_colour(tmp_path):
    from cnncompile.run.report import _confusion

    page = _confusion(tmp_path, {"confusion_matrix": _matrix()}, [str(d) for d in range(10)])
    counts = _cell_styles(page)[:10]
    colour, alpha = counts[7][2]
    assert colour != counts[7][7][0], "an error must not be drawn in the diagonal's colour"
    assert float(alpha) > 0.9, "the largest confusion is the darkest error cell"
    assert 0.05 < float(counts[0][3][1]) < 0.15  # 2 of the largest 23
    assert float(counts[7][7][1]) > 0.9  # recall on the diagonal


def test_the_confusion_picture_shows_errors_in_their_own_colour(tmp_path):
    """confusion.png: the cell of the largest error is saturated red, not the near-white it was."""
    import numpy as np
    from PIL import Image

    from cnncompile.run.report import _plot_confusion

    _plot_confusion(tmp_path / "c.png", np.array(_matrix()), [str(d) for d in range(10)])
    image = np.asarray(Image.open(tmp_path / "c.png").convert("RGB")).astype(int)
    reddish = image[..., 0] - np.maximum(image[..., 1], image[..., 2]) > 80
    assert reddish.sum() > 2 * 30 * 30, "the 7-read-as-2 cell of both panels is red"


def test_f1_bars_start_where_they_show_differences():
    import re

    from cnncompile.run.report import _per_class

    rows = [{"label": str(k), "precision": f, "recall": f, "f1": f, "support": 100}
            for k, f in enumerate([0.96, 0.99, 0.975])]
    page = _per_class({"per_class": rows})
    widths = [float(w) for w in re.findall(r'<span style="width:([\d.]+)%">', page)]
    assert widths[1] - widths[0] > 40, widths  # 0.96 and 0.99 must not look alike
    assert "F1 from 0.95 to 1" in page  # and the scale says where the bars start
    low = _per_class({"per_class": [{**rows[0], "f1": 0.3}, rows[1]]})
    assert "F1 from 0 to 1" in low


def test_without_graphviz_the_architecture_card_lays_out_and_says_how_to_fix_it(monkeypatch, tmp_path):
    """The note used to sit in the drawing's grid column, squeezing the table beside it into
    25 pixels, and told a report reader to pass `-o FILE.dot`."""
    from cnncompile.analysis.check import compile_file
    from cnncompile.run.report import _architecture, drawing_problem
    from tests.conftest import ROOT

    monkeypatch.setenv("PATH", str(tmp_path))
    card = _architecture(compile_file(ROOT / "examples" / "mnist_cnn.yaml"))
    assert card.startswith('<p class="note">No drawing: Graphviz&#x27;s `dot` program is not installed')
    assert 'class="arch-grid"' not in card and "FILE.dot" not in card
    assert "<code>cnncompile report RUN_DIR</code>" in card and '<table class="check">' in card
    assert "Graphviz" in drawing_problem()
    monkeypatch.undo()
    assert drawing_problem() is None


def test_train_says_when_the_report_has_no_drawing(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import cnncompile.run.train as train_module
    from cnncompile.cli import main
    from tests.conftest import ROOT

    metrics = {"test_accuracy": 0.5, "test_loss": 1.0, "epochs": 1, "train_seconds": 1.0,
               "train_images_per_second": 10.0}
    monkeypatch.setattr(train_module, "train_spec",
                        lambda compiled, **kw: train_module.RunResult(tmp_path, metrics, 0))
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(main, ["train", str(ROOT / "examples" / "mnist_cnn.yaml")])
    assert result.exit_code == 0, result.output
    assert (f"note: {tmp_path / 'report.html'} has no architecture drawing: Graphviz's `dot` program is not "
            "installed") in result.stderr
    assert "after 1 epoch; " in result.stdout
