"""The run report: runs/<name>/report.html, one self-contained page a person reads to judge a run.

Two halves:
  Tally           test-set probabilities, batch by batch -> confusion matrix, per-class
                  precision/recall/F1 and the most confidently wrong images; writes
                  confusion.png and mistakes.png and returns the numbers metrics.json gains.
                  Needs numpy and Pillow; the probabilities come from train.py, so no
                  framework is imported here.
  write_report()  renders report.html from the run directory's files alone (spec.yaml, run.json,
                  metrics.json, curves.png, confusion.png, mistakes.png) plus the spec's
                  framework-free inference and drawing. `cnncompile report RUN_DIR` is just this.

The page embeds every image as a data: URI and the drawing as inline SVG; it has no scripts and
no external references, so it reads the same offline, attached to a mail, years later.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from cnncompile.files import atomic_path, read_json, write_bytes

REPORT_FILES = ("report.html", "confusion.png", "mistakes.png", "spec.yaml")  # what a run gains from here
MISTAKES_SHOWN = 24
LARGEST_MATRIX_TABLE = 30  # classes; beyond this the matrix is shown only as a picture


class ReportError(Exception):
    """The run directory lacks what the report needs."""


# --- from probabilities to per-class numbers and pictures ---------------------------------------

class Tally:
    """The test set's per-class numbers while it streams past: the confusion matrix and the
    MISTAKES_SHOWN most confidently wrong images (with their pixels) are all it keeps, whatever
    the set's size."""

    def __init__(self, classes: int):
        import numpy as np

        self.matrix = np.zeros((classes, classes), np.int64)  # rows: true class, columns: predicted
        self.seen = 0
        self.worst: list[tuple[float, int, int, int, object]] = []  # (-confidence, index, true, predicted, image)

    def add(self, probabilities, y_true, images) -> None:
        """The next batch: (B, classes) outputs, (B,) class indices, (B, H, W, C) images."""
        import numpy as np

        probabilities = np.asarray(probabilities)
        y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
        predicted = probabilities.argmax(axis=1)
        np.add.at(self.matrix, (y_true, predicted), 1)
        confidence = probabilities[np.arange(len(predicted)), predicted]
        wrong = np.flatnonzero(predicted != y_true)
        # Most confident first; ties by test-set index so the same run always shows the same images.
        candidates = [(-float(confidence[i]), self.seen + int(i), int(y_true[i]), int(predicted[i]), i) for i in wrong]
        candidates = sorted(candidates, key=lambda c: c[:2])[:MISTAKES_SHOWN]
        kept = [(*c[:4], np.array(images[c[4]])) for c in candidates]  # copies: the batch goes away
        self.worst = sorted(self.worst + kept, key=lambda c: c[:2])[:MISTAKES_SHOWN]
        self.seen += len(predicted)

    def finish(self, out: Path, labels: Sequence[str]) -> dict:
        import numpy as np

        matrix = self.matrix
        hits = np.diag(matrix).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):  # a class never predicted / absent: 0, not NaN
            precision = np.nan_to_num(hits / matrix.sum(axis=0))
            recall = np.nan_to_num(hits / matrix.sum(axis=1))
            f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
        mistakes = [{"index": index, "true": labels[true], "predicted": labels[predicted],
                     "confidence": round(-negative, 4)}
                    for negative, index, true, predicted, _ in self.worst]
        _plot_confusion(out / "confusion.png", matrix, labels)
        _mistakes_grid(out / "mistakes.png", [image for *_, image in self.worst], mistakes)
        return {
            "per_class": [{"label": label, "precision": round(float(p), 4), "recall": round(float(r), 4),
                           "f1": round(float(f), 4), "support": int(s)}
                          for label, p, r, f, s in zip(labels, precision, recall, f1, matrix.sum(axis=1))],
            "macro_f1": round(float(f1.mean()), 4),
            "confusion_matrix": matrix.tolist(),
            "mistakes": mistakes,
        }


def _plot_confusion(path: Path, matrix, labels: Sequence[str]) -> None:
    """Counts and row-normalised side by side, annotated when the classes are few enough to read.

    Drawn with Pillow, cell by cell: a tenth of matplotlib's time (~1.3 s for 10 classes here),
    which every training run would pay.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    classes = len(labels)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    annotated = classes <= LARGEST_MATRIX_TABLE
    cell = 40 if annotated else max(2, 800 // classes)
    font, small = _font(13), _font(11)
    names = [_fit(label, 14) for label in labels] if annotated else []
    label_w = max([int(small.getlength(n)) for n in names] + [0]) + 10
    upwards = label_w > cell  # column labels too wide for a cell are written upwards
    left, top, gap = 24 + label_w, 56 + (label_w if upwards else 18), 40
    panel = cell * classes
    image = Image.new("RGB", (left + 2 * panel + gap + 16, top + panel + 16), "white")
    draw = ImageDraw.Draw(image)
    panels = ((matrix, "counts", lambda v: f"{v:d}"),
              (normalised, "row-normalised (recall on the diagonal)", lambda v: f"{v:.2f}".lstrip("0") if v else "0"))
    for p, (values, title, text) in enumerate(panels):
        shade = error_shades(values, normalised)
        x0 = left + p * (panel + gap)
        draw.text((x0, 8), title, fill="#0f172a", font=font)
        draw.text((x0 + panel // 2, 28), "predicted", fill="#475569", font=small, anchor="mt")
        for (row, column), value in np.ndenumerate(values):
            colour = _blue(shade[row][column]) if row == column else _red(shade[row][column])
            box = (x0 + column * cell, top + row * cell, x0 + (column + 1) * cell - 1, top + (row + 1) * cell - 1)
            draw.rectangle(box, fill=colour)
            if annotated:
                ink = "white" if shade[row][column] > 0.55 else "#0f172a"
                draw.text((box[0] + cell // 2, box[1] + cell // 2), text(value), fill=ink, font=small, anchor="mm")
        for k, name in enumerate(names):
            if upwards:
                upright = Image.new("RGB", (label_w, cell), "white")
                ImageDraw.Draw(upright).text((label_w - 4, cell // 2), name, fill="#334155", font=small, anchor="rm")
                image.paste(upright.rotate(90, expand=True), (x0 + k * cell, top - label_w))
            else:
                draw.text((x0 + k * cell + cell // 2, top - 4), name, fill="#334155", font=small, anchor="mb")
            if p == 0:
                draw.text((left - 6, top + k * cell + cell // 2), name, fill="#334155", font=small, anchor="rm")
    true_axis = Image.new("RGB", (panel, 16), "white")
    ImageDraw.Draw(true_axis).text((panel // 2, 0), "true", fill="#475569", font=small, anchor="mt")
    image.paste(true_axis.rotate(90, expand=True), (4, top))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)


def error_shades(values, recall) -> list[list[float]]:
    """How dark each cell is, 0 to 1: the diagonal by recall (the row's share), the errors off it
    by their own scale (the largest error darkest). On one scale a 0.99 diagonal would leave
    the confusions that matter (23 sevens read as 2) barely tinted. Plain Python: `report`
    imports no numpy."""
    values = [[float(v) for v in row] for row in values]
    largest_error = max((v for r, row in enumerate(values) for c, v in enumerate(row) if r != c), default=0.0)
    return [[float(recall[r][c]) if r == c else v / (largest_error or 1.0) for c, v in enumerate(row)]
            for r, row in enumerate(values)]


def _blue(share: float) -> tuple[int, int, int]:
    """White to the report's blue (#2563eb) to a dark navy, like matplotlib's 'Blues'."""
    return _ramp(share, ((0.0, (255, 255, 255)), (0.6, (37, 99, 235)), (1.0, (23, 37, 84))))


def _red(share: float) -> tuple[int, int, int]:
    """White to red (#dc2626) to a dark red: errors, apart from the diagonal's blue."""
    return _ramp(share, ((0.0, (255, 255, 255)), (0.6, (220, 38, 38)), (1.0, (127, 29, 29))))


def _ramp(share: float, stops) -> tuple[int, int, int]:
    for (a, low), (b, high) in zip(stops, stops[1:]):
        if share <= b:
            t = (share - a) / (b - a)
            return tuple(round(l + (h - l) * t) for l, h in zip(low, high))
    return stops[-1][1]


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # Pillow's bundled TrueType font: no system fonts needed


def _mistakes_grid(path: Path, images, mistakes: list[dict]) -> None:
    """The images as ~90-pixel tiles captioned true/predicted/confidence. Small images (MNIST's
    28x28) are drawn 3x nearest-neighbour so pixels stay pixels; large ones are scaled down."""
    from PIL import Image, ImageDraw

    columns, cell_w, caption_h, tile_side = 8, 132, 34, 96
    if len(mistakes) == 0:
        grid = Image.new("RGB", (cell_w * 3, 60), "white")
        ImageDraw.Draw(grid).text((10, 20), "no test image was misclassified", fill="#0f172a", font=_font(14))
    else:
        h, w = images[0].shape[:2]
        scale = min(3.0, tile_side / max(h, w))
        tile_w, tile_h = max(1, round(w * scale)), max(1, round(h * scale))
        cell_h = tile_h + caption_h + 8
        rows = -(-len(mistakes) // columns)
        grid = Image.new("RGB", (cell_w * min(columns, len(mistakes)), cell_h * rows), "white")
        draw = ImageDraw.Draw(grid)
        font = _font(12)
        for k, (image, mistake) in enumerate(zip(images, mistakes)):
            x, y = (k % columns) * cell_w, (k // columns) * cell_h
            pixels = image[..., 0] if image.shape[-1] == 1 else image
            tile = Image.fromarray(pixels).convert("RGB").resize(
                (tile_w, tile_h), Image.NEAREST if scale >= 1 else Image.LANCZOS)
            grid.paste(tile, (x + (cell_w - tile_w) // 2, y + 4))
            top, middle = y + tile_h + 6, x + cell_w // 2
            draw.text((middle, top), _fit(f"true {mistake['true']}", 19), fill="#15803d", font=font, anchor="mt")
            draw.text((middle, top + 15), _fit(f"pred {mistake['predicted']} {mistake['confidence']:.3f}", 19),
                      fill="#b91c1c", font=font, anchor="mt")
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG", optimize=True)


# --- curves.png ----------------------------------------------------------------------------

SERIES = (("", "training", (31, 119, 180)), ("val_", "validation", (255, 127, 14)))  # key prefix, label, colour


def draw_curves(path: Path, history: list[dict], title: str, phase_starts: Sequence[int] = ()) -> None:
    """Loss and accuracy per epoch, training and validation, side by side; a dashed line where
    each phase after the first starts. history: history.csv's rows (epoch, loss, accuracy,
    val_loss, val_accuracy; a value may be missing or not finite, leaving a gap).

    Drawn with Pillow, as confusion.png: matplotlib's import alone was ~0.3 s of CPU at the end
    of every run (docs/precision.md, the whole-process section)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (1000, 400), "white")
    draw = ImageDraw.Draw(image)
    draw.text((500, 8), title, fill="#0f172a", font=_font(16), anchor="mt")
    epochs = [row["epoch"] for row in history]
    for left, metric in ((0, "loss"), (500, "accuracy")):
        series = [(label, colour, [_finite(row.get(prefix + metric)) for row in history])
                  for prefix, label, colour in SERIES]
        series = [s for s in series if any(v is not None for v in s[2])]
        _panel(draw, (left + 70, 50, left + 480, 350), metric, epochs, series, phase_starts)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _panel(draw, box: tuple[int, int, int, int], metric: str, epochs: list[int], series, phase_starts) -> None:
    """One metric's axes in `box` (left, top, right, bottom): grid, ticks, lines, legend."""
    left, top, right, bottom = box
    font, small = _font(14), _font(11)
    values = [v for _, _, vs in series for v in vs if v is not None]
    first, last = (min(epochs), max(epochs)) if epochs else (1, 1)
    x_low, x_high = (first - 0.5, last + 0.5) if first == last else (first - 0.05 * (last - first), last + 0.05 * (last - first))
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    margin = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
    y_low, y_high = low - margin, high + margin

    def x_at(epoch: float) -> float:
        return left + (epoch - x_low) / (x_high - x_low) * (right - left)

    def y_at(value: float) -> float:
        return bottom - (value - y_low) / (y_high - y_low) * (bottom - top)

    ticks = nice_ticks(y_low, y_high)
    decimals = _decimals(ticks[1] - ticks[0] if len(ticks) > 1 else 1.0)
    for tick in ticks:
        y = y_at(tick)
        draw.line((left, y, right, y), fill="#e5e7eb")
        draw.text((left - 6, y), f"{tick:.{decimals}f}", fill="#334155", font=small, anchor="rm")
    for tick in nice_ticks(x_low, x_high, integers=True):
        x = x_at(tick)
        draw.line((x, top, x, bottom), fill="#e5e7eb")
        draw.text((x, bottom + 5), str(int(tick)), fill="#334155", font=small, anchor="mt")
    draw.rectangle(box, outline="#334155")
    draw.text(((left + right) / 2, bottom + 22), "epoch", fill="#0f172a", font=font, anchor="mt")
    draw.text(((left + right) / 2, top - 6), metric, fill="#0f172a", font=font, anchor="mb")
    for number, epoch in enumerate(phase_starts, start=2):  # a dashed line between the phases' epochs
        x = x_at(epoch - 0.5)
        for y in range(top, bottom, 8):
            draw.line((x, y, x, min(y + 4, bottom)), fill="#808080")
        draw.text((x + 3, (top + 4) if metric == "accuracy" else (bottom - 16)), f"phase {number}", fill="#808080",
                  font=small)
    for label, colour, vs in series:
        points = [(x_at(e), y_at(v)) if v is not None else None for e, v in zip(epochs, vs)]
        for a, b in zip(points, points[1:]):
            if a is not None and b is not None:
                draw.line((a, b), fill=colour, width=2)
        for point in filter(None, points):
            draw.ellipse((point[0] - 3, point[1] - 3, point[0] + 3, point[1] + 3), fill=colour)
    # The legend in a corner the curves leave free: losses fall, accuracies rise.
    legend_top = top + 6 if metric == "loss" else bottom - 6 - 18 * len(series)
    if series:
        draw.rectangle((right - 118, legend_top, right - 6, legend_top + 18 * len(series) + 6), fill="white",
                       outline="#cbd5e1")
    for k, (label, colour, _) in enumerate(series):
        y = legend_top + 12 + 18 * k
        draw.line((right - 110, y, right - 86, y), fill=colour, width=2)
        draw.ellipse((right - 101, y - 3, right - 95, y + 3), fill=colour)
        draw.text((right - 80, y), label, fill="#0f172a", font=small, anchor="lm")


def nice_ticks(low: float, high: float, count: int = 6, integers: bool = False) -> list[float]:
    """About `count` round values (1, 2, 2.5 or 5 times a power of ten) from low to high."""
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integers:
        step = max(1, round(step))
    start = math.ceil(low / step - 1e-9) * step
    return [start + i * step for i in range(int((high - start) / step + 1e-9) + 1)]


def _decimals(step: float) -> int:
    """Digits after the point that show every multiple of `step` (0.25: 2, 0.5: 1, 5: 0)."""
    decimals = 0
    while decimals < 6 and abs(step * 10 ** decimals - round(step * 10 ** decimals)) > 1e-6:
        decimals += 1
    return decimals


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


# --- the page --------------------------------------------------------------------------------------

def save_spec(out: Path, spec_path: Path, sha256: str) -> None:
    """Keep the exact spec the run was trained from beside it (when the file still is that spec)."""
    data = spec_path.read_bytes() if spec_path.exists() else b""
    if hashlib.sha256(data).hexdigest() == sha256:
        write_bytes(out / "spec.yaml", data)


def write_report(out: Path, metrics: dict | None = None, output: Path | None = None) -> Path:
    """Render out/report.html (or `output`) from the run directory. `metrics` defaults to
    metrics.json; train passes its own because metrics.json is written after the report."""
    if metrics is None:
        if not (out / "metrics.json").exists():
            raise ReportError(f"{out} has no metrics.json: the run is not complete (train it to the end first)")
        metrics = read_json(out / "metrics.json")
    if not (out / "run.json").exists():
        raise ReportError(f"{out} has no run.json: it is not a cnncompile run directory")
    record = read_json(out / "run.json")
    spec_text, compiled, spec_note = _spec(out, record)
    target = output or out / "report.html"
    write_bytes(target, render(out, record, metrics, spec_text, compiled, spec_note).encode())
    return target


def _spec(out: Path, record: dict):
    """(spec text, compiled spec or None, a note when something is off)."""
    from cnncompile.language.diagnostics import SpecError
    from cnncompile.analysis.check import compile_file

    for candidate in (out / "spec.yaml", Path(record.get("spec", ""))):
        if candidate.is_file() and hashlib.sha256(candidate.read_bytes()).hexdigest() == record["spec_sha256"]:
            try:
                return candidate.read_text(), compile_file(candidate), None
            except SpecError:  # a spec from an older language version: still show its text
                return candidate.read_text(), None, "this version of cnncompile no longer accepts the spec"
    return None, None, (f"the spec with sha256 {record['spec_sha256']} was not found (neither {out / 'spec.yaml'} "
                        f"nor {record.get('spec')} has that content)")


def _data_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _phases(metrics: dict) -> str:
    """training.phases: where each starts (the curves mark the same epochs with dashed lines)."""
    starts = metrics.get("phase_starts")
    if not starts:
        return ""
    return "<p>" + "; ".join(f"phase {i} from epoch {epoch}" for i, epoch in enumerate(starts, start=1)) + "</p>"


def render(out: Path, record: dict, metrics: dict, spec_text: str | None, compiled, spec_note: str | None) -> str:
    e = html.escape
    name = compiled.spec.name if compiled else Path(record.get("spec", "run")).stem
    labels = record["dataset"].get("labels") or [str(i) for i in range(len(metrics.get("per_class", [])))]
    cards = [("test accuracy", f"{metrics['test_accuracy']:.4f}"), ("test loss", f"{metrics['test_loss']:.4f}"),
             ("macro F1", f"{metrics['macro_f1']:.4f}" if "macro_f1" in metrics else "–"),
             ("epochs", str(metrics["epochs"])), ("parameters", f"{metrics.get('total_params', 0):,}"),
             ("training time", f"{metrics['train_seconds']:.1f} s")]
    # What a classifier is judged by first (how it errs), then what it is, then where it came from.
    sections = [
        _section("Training curves", _image(out / "curves.png", "loss and accuracy per epoch") + _phases(metrics)),
        _section("Confusion matrix", _confusion(out, metrics, labels)),
        _section("Per-class precision, recall and F1", _per_class(metrics)),
        _section("Most confidently wrong test images", _mistakes(out, metrics)),
        _section("Architecture", _architecture(compiled), "arch"),
        _section("Spec", _spec_block(record, spec_text, spec_note)),
        _section("Run", _metadata(record, metrics)),
    ]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(name)}: cnncompile run report</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header>
<h1>{e(name)}</h1>
<p class="sub">cnncompile run report · {e(record['dataset']['name'])}, {metrics.get('test_images', 0):,} test images
 · written {generated}</p>
<div class="cards">{''.join(f'<div class="card"><div class="k">{e(k)}</div><div class="v">{e(v)}</div></div>'
                         for k, v in cards)}</div>
</header>
{''.join(sections)}
</main>
</body>
</html>
"""


def _section(title: str, body: str, css_class: str = "") -> str:
    return f'<section class="{css_class}"><h2>{html.escape(title)}</h2>{body}</section>\n'


def _image(path: Path, alt: str) -> str:
    uri = _data_uri(path)
    if uri is None:
        return f'<p class="note">{html.escape(path.name)} is missing from the run directory.</p>'
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def drawing_problem() -> str | None:
    """Why report.html cannot have an architecture drawing on this machine, or None."""
    import shutil

    from cnncompile.analysis.draw import DotMissing

    return None if shutil.which("dot") else DotMissing.reason


def _architecture(compiled) -> str:
    if compiled is None:
        return '<p class="note">No drawing: the spec is not available (see Spec below).</p>'
    from cnncompile.analysis import draw
    from cnncompile.analysis import summary

    info = compiled.info
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in summary.rows(info))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in summary.HEADERS)
    totals = "".join(f"<li>{html.escape(t)}</li>" for t in summary.totals(info))
    table = (f'<div class="summary"><h3>cnncompile check</h3><table class="check"><thead><tr>{head}</tr></thead>'
             f"<tbody>{rows}</tbody></table><ul class=\"totals\">{totals}</ul></div>")
    # Block uses drawn as one node each keep a ResNet-50 on a page; the table lists every layer.
    has_blocks = any(getattr(layer, "block", ()) for layer in info.layers)
    try:
        drawing = f'<div class="drawing">{draw.svg(compiled, collapse_blocks=has_blocks)}</div>'
    except draw.DrawError as exc:
        why = (f"{html.escape(draw.DotMissing.reason)}, then run <code>cnncompile report RUN_DIR</code> to add it"
               if isinstance(exc, draw.DotMissing) else html.escape(str(exc)))
        # Above the table, not beside it: a note in the drawing's column would squeeze the table.
        return f'<p class="note">No drawing: {why}.</p>{table}'
    return f'<div class="arch-grid">{drawing}{table}</div>'


def _confusion(out: Path, metrics: dict, labels: Sequence[str]) -> str:
    matrix = metrics.get("confusion_matrix")
    if matrix is None:
        return '<p class="note">This run did not record a confusion matrix (trained by an older cnncompile).</p>'
    if len(matrix) > LARGEST_MATRIX_TABLE:
        return _image(out / "confusion.png", "confusion matrix")
    e = html.escape

    shares = [[count / (sum(row) or 1) for count in row] for row in matrix]

    def table(normalised: bool) -> str:
        head = "".join(f"<th>{e(label)}</th>" for label in labels)
        shades = error_shades(shares if normalised else matrix, shares)
        body = []
        for r, (label, row) in enumerate(zip(labels, matrix)):
            cells = []
            for column, count in enumerate(row):
                text = (f"{shares[r][column]:.2f}" if count else "0") if normalised else f"{count:,}"
                shade = shades[r][column]
                ink = "#fff" if shade > 0.55 else "#0f172a"
                rgb = "37,99,235" if r == column else "220,38,38"
                cells.append(f'<td style="background:rgba({rgb},{shade:.3f});color:{ink}">{text}</td>')
            body.append(f"<tr><th>{e(label)}</th>{''.join(cells)}</tr>")
        caption = ("row-normalised: each row sums to 1; the diagonal is recall" if normalised else "counts") + \
            "; errors in red, darkest for the largest"
        return (f'<table class="cm"><caption>{caption}</caption><thead><tr><th class="corner">true ╲ predicted</th>'
                f'{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')

    return f'<div class="pair">{table(False)}{table(True)}</div>'


def _per_class(metrics: dict) -> str:
    rows = metrics.get("per_class")
    if rows is None:
        return '<p class="note">This run did not record per-class numbers (trained by an older cnncompile).</p>'
    e = html.escape
    low = bar_start([r["f1"] for r in rows])
    body = "".join(
        f"<tr><th>{e(r['label'])}</th><td>{r['precision']:.4f}</td><td>{r['recall']:.4f}</td>"
        f'<td>{r["f1"]:.4f}</td><td class="bar"><span style="width:{100 * max(r["f1"] - low, 0) / (1 - low):.1f}%">'
        f"</span></td><td>{r['support']:,}</td></tr>" for r in rows)
    scale = f"F1 from {low:g} to 1" if low else "F1 from 0 to 1"
    return (f'<table class="classes"><thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>'
            f'<th class="scale">{scale}</th><th>support</th></tr></thead><tbody>{body}</tbody></table>')


def bar_start(values: Sequence[float]) -> float:
    """Where F1 bars start: 0, or, when every class scores high, a round value below the lowest,
    so that 0.96 and 0.99 look different (the scale is written above the bars)."""
    lowest = min(values, default=0.0)
    if lowest < 0.5:
        return 0.0
    return math.floor((lowest - 0.01) * 20) / 20  # a multiple of 0.05 at least 0.01 below the lowest


def _mistakes(out: Path, metrics: dict) -> str:
    mistakes = metrics.get("mistakes")
    if mistakes is None:
        return '<p class="note">This run did not record its mistakes (trained by an older cnncompile).</p>'
    wrong = sum(r["support"] for r in metrics["per_class"]) - sum(
        row[i] for i, row in enumerate(metrics["confusion_matrix"]))
    lead = (f"<p>{wrong:,} of {metrics.get('test_images', 0):,} test images are misclassified; the {len(mistakes)} "
            "the model was most sure about, by confidence in its wrong answer (green: true label, red: "
            "prediction and its probability):</p>")
    return lead + _image(out / "mistakes.png", "the most confidently misclassified test images")


def _spec_block(record: dict, spec_text: str | None, note: str | None) -> str:
    e = html.escape
    head = f'<p><code>{e(str(record.get("spec")))}</code> · sha256 <code>{e(record["spec_sha256"])}</code></p>'
    if note:
        head += f'<p class="note">{e(note)}</p>'
    return head + (f"<pre>{e(spec_text)}</pre>" if spec_text is not None else "")


def _metadata(record: dict, metrics: dict) -> str:
    e = html.escape
    dataset = record["dataset"]
    rows = [
        ("seed", record.get("seed")), ("epochs", f"{metrics['epochs']} run of {record.get('epochs')} planned"),
        ("batch size", record.get("batch_size")),
        ("dataset", f"{dataset['name']}: {dataset['train_images']:,} train / {dataset['test_images']:,} test "
                    f"images from {dataset['source']}"),
        ("training time", f"{metrics['train_seconds']:.1f} s, {metrics['train_images_per_second']:,.0f} "
                          "images/s (this process's epochs)"),
        ("distributed", json.dumps(record["distribute"]) if record.get("distribute") else "no"),
        ("versions", ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items())),
        ("platform", record.get("platform")), ("command", " ".join(record.get("command", []))),
    ]
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    files = "".join(f"<tr><td><code>{e(path)}</code></td><td><code>{e(digest)}</code></td></tr>"
                    for path, digest in dataset.get("files", {}).items())
    files_table = (f'<h3>Dataset files</h3><table class="files"><thead><tr><th>file</th><th>sha256</th></tr></thead>'
                   f"<tbody>{files}</tbody></table>") if files else ""
    return f'<table class="meta">{table}</table>{files_table}'


_CSS = """
:root{color-scheme:light}
*{box-sizing:border-box}
body{margin:0;background:#f1f5f9;color:#0f172a;font:14px/1.45 "Helvetica Neue",Helvetica,Arial,"Liberation Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 24px 40px}
h1{margin:0;font-size:28px;letter-spacing:-.01em}
h2{margin:0 0 12px;font-size:18px}
h3{margin:0 0 8px;font-size:14px;color:#475569}
.sub{margin:4px 0 16px;color:#475569}
.cards{display:grid;grid-template-columns:repeat(6,1fr);gap:12px;margin-bottom:8px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:10px 14px}
.card .k{color:#64748b;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
section{background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:18px 22px;margin:16px 0;overflow-x:auto}
img{max-width:100%;height:auto;display:block}
.arch-grid{display:grid;grid-template-columns:minmax(0,auto) minmax(0,1fr);gap:24px;align-items:start}
.drawing svg{max-width:520px;height:auto;display:block}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:3px 8px;text-align:right;border-bottom:1px solid #f1f5f9}
thead th{border-bottom:1px solid #cbd5e1;color:#475569;font-weight:600}
table.check td:first-child,table.check th:first-child,table.check td:nth-child(2),table.check th:nth-child(2){text-align:left}
table.check{font-size:12.5px}
ul.totals{list-style:none;padding:0;margin:10px 0 0;color:#334155}
.pair{display:flex;flex-wrap:wrap;gap:28px}
table.cm td{width:38px;padding:3px 2px;text-align:center;border:1px solid #fff;font-size:11.5px}
table.cm th{font-size:12px}
table.cm caption{caption-side:top;text-align:left;color:#475569;padding-bottom:6px}
th.corner{font-weight:400;color:#64748b;font-size:11px}
table.classes td.bar{width:160px}
th.scale{font-weight:400;font-size:11px;color:#64748b;text-align:left}
td.bar span{display:block;height:10px;background:#2563eb;border-radius:3px}
pre{background:#f8fafc;border:1px solid #e2e8f0;border-radius:8px;padding:12px 14px;overflow:auto;font-size:12.5px}
code{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12px}
table.meta th{text-align:left;color:#475569;white-space:nowrap;vertical-align:top}
table.meta td,table.files td,table.files th{text-align:left}
.note{color:#92400e;background:#fffbeb;border:1px solid #fde68a;border-radius:6px;padding:8px 12px}
@media print{body{background:#fff}section{break-inside:avoid}}
"""
