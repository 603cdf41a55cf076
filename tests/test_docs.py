"""README.md is read by newcomers: short, its Quick start true to .ci/run, its links alive."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "zoo" / "NOTES.md"]


def test_readme_stays_short():
    assert len(README.read_text()) <= 15_000, "move detail into docs/ and link it"


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    text = README.read_text()
    block = text.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line for line in block.strip().splitlines() if line.strip()]
    assert len(commands) == 2
    test_command = commands[1]
    pytest_part = test_command[test_command.index(".venv/bin/python -m pytest"):]
    ci = (ROOT / ".ci" / "run").read_text()
    assert pytest_part in ci, f".ci/run must run README's test command: {pytest_part!r}"
    assert "pip install -q -e '.[test]'" in ci


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_files(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.name}: links to missing files: {broken}"
