"""cnncompile.progress.StageProgress: the one renderer of progress(what, done, total), for
train's scan and decode and for `data pack` / `data verify`."""

from __future__ import annotations

import io
import subprocess
import sys

from rich.console import Console

from cnncompile.progress import StageProgress


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=100, force_terminal=terminal, color_system=None), out


def test_elsewhere_than_a_terminal_only_finished_stages_write_a_line_once():
    console, out = _console(terminal=False)
    bars = StageProgress(console)
    for done in (500, 1500, 2400):
        bars("scanning photos", done, 2400)
    bars("decoding train", 700, 3000)  # interrupted: nothing half-drawn
    bars.close()
    bars("scanning tiny", 10, 10)  # below MIN_TOTAL: not worth a bar
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scanning photos") and "2400/2400" in lines[0], lines


def test_byte_stages_show_sizes_not_counts():
    console, out = _console(terminal=False)
    with StageProgress(console, unit_bytes=True) as bars:
        bars("verifying", 3_000_000, 6_000_000)
        bars("verifying", 6_000_000, 6_000_000)
    line = out.getvalue().strip()
    assert line.startswith("verifying") and "6.0/6.0 MB" in line and "6000000" not in line, line


def test_on_a_terminal_the_bar_is_live_and_each_stage_gets_its_own():
    console, out = _console(terminal=True)
    with StageProgress(console) as bars:
        bars("scanning photos", 1000, 2000)
        bars("decoding train", 1500, 1500)  # a new stage ends the first bar and starts its own
    text = out.getvalue()
    assert "scanning photos" in text and "1000/2000" in text
    assert "decoding train" in text and "1500/1500" in text


def test_importing_the_renderer_loads_no_rich():
    code = "import sys, cnncompile.progress; print(any(m.startswith('rich') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
