"""Hostile specs (issue 21): `check` answers every one within seconds and bounded memory, or
refuses it with a located error; never a traceback, never a hang.

Each spec runs `cnncompile check` in a subprocess under an address-space limit and a timeout,
so a regression fails the test instead of eating the machine or hanging the suite.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

MEMORY = 1024 * 1024 * 1024  # address space, not resident memory: Python with pydantic maps ~300 MB
TIMEOUT = 60  # generous for a shared 2-core machine; a regression runs for minutes or is killed


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnncompile", "check", str(path)], cwd=ROOT,
                          env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True,
                          timeout=TIMEOUT, preexec_fn=_limit, check=False)


def refused(write_spec, text: str) -> list[str]:
    """The error lines of a spec `check` must refuse, located, without a traceback."""
    path = write_spec(textwrap.dedent(text).lstrip("\n"), "h.yaml")
    result = check(path)
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert errors and all(line.startswith(f"{path}:") for line in errors), result.stderr[-2000:]
    return [line.split(f"{path}:", 1)[1] for line in errors]


def nested_doublings(depth: int) -> str:
    """Block b0 uses b1 twice, b1 uses b2 twice, ...: 2**depth layers."""
    blocks = "\n".join(f"  b{i}: {{layers: [{{block: b{i + 1}}}, {{block: b{i + 1}}}]}}" for i in range(depth))
    return (f"name: h\ninput: {{shape: [4, 4, 1]}}\nblocks:\n{blocks}\n"
            f"  b{depth}: {{layers: [{{type: ReLU}}]}}\nlayers:\n  - {{block: b0}}\n")


def test_two_to_the_forty_layers_are_refused_before_expanding(write_spec):
    path = write_spec(nested_doublings(40), "h.yaml")
    result = check(path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (f"{path}:46:5: error: layers[0]: this use of block 'b0' would expand to 1,099,511,627,776 "
            "layers; a spec may expand to at most 100,000") in result.stderr


@pytest.mark.parametrize("repeat, where, size", [
    # Written out, the size is counted before the outer use expands: ReLU + 10**9 x 2.
    ("1000000000", "9:5: error: layers[0] 'big'", "2,000,000,001 layers"),
    # An expression is counted once evaluated, at the inner use, before that expands.
    ('"${n}"', "6:50: error: blocks.unit.layers[1]", "2,000,000,000 layers (1,000,000,000 x 2)"),
])
def test_a_huge_repeat_is_refused_naming_the_use_and_its_size(write_spec, repeat, where, size):
    found = refused(write_spec, f"""
        name: h
        input: {{shape: [4, 4, 1]}}
        blocks:
          unit:
            params: {{n: 1000000000}}
            layers: [{{type: ReLU}}, {{block: leaf, repeat: {repeat}}}]
          leaf: {{layers: [{{type: ReLU}}, {{type: ReLU}}]}}
        layers:
          - {{block: unit, name: big}}
    """)
    assert len(found) == 1 and found[0].startswith(where) and f"would expand to {size}" in found[0], found


@pytest.mark.parametrize("expression, message", [
    ("'x' * 10**10", "the text would be longer than 1,000 characters"),
    ("[0] * 10**10", "the list would be longer than 1,000 items"),
    ("'%999999999d' % 1", "%-formatting is not allowed"),
    ("-" * 400 + "1", "is nested more than 40 deep"),
    ("(" * 240 + "1" + ")" * 240, "nested"),
    ("'ab' * 400 + 'ab' * 400", "the text would be longer than 1,000 characters"),
    ("[1] * 600 + [2] * 600", "the list would be longer than 1,000 items"),
])
def test_expression_values_are_bounded_before_they_are_built(write_spec, expression, message):
    found = refused(write_spec, f"""
        name: h
        input: {{shape: [4, 4, 1]}}
        blocks:
          unit:
            layers: [{{type: Dense, units: "${{{expression}}}"}}]
        layers:
          - {{block: unit}}
    """)
    assert len(found) == 1 and message in found[0], found
    assert len(found[0]) < 1000  # the value is never turned into text whole


def test_interpolated_text_is_bounded_as_it_grows(write_spec):
    found = refused(write_spec, """
        name: h
        input: {shape: [4, 4, 1]}
        blocks:
          unit:
            params: {t: "${'x' * 900}"}
            layers: [{type: ReLU, name: "${t}${t}${t}"}]
        layers:
          - {block: unit, t: "${'y' * 900}"}
    """)
    assert len(found) == 1 and "longer than 1,000 characters" in found[0], found


def test_a_long_list_parameter_is_not_turned_into_text(write_spec):
    items = ", ".join("0" for _ in range(50_000))
    found = refused(write_spec, f"""
        name: h
        input: {{shape: [4, 4, 1]}}
        blocks:
          unit:
            params: {{p: [{items}]}}
            layers: [{{type: ReLU, name: "r${{p}}"}}]
        layers:
          - {{block: unit}}
    """)
    assert len(found) == 1 and "the list is longer than 1,000 items" in found[0], found


def test_five_thousand_layers_of_one_name_are_each_reported_once(write_spec):
    lines = "\n".join("  - {type: ReLU, name: x}" for _ in range(5_000))
    path = write_spec(f"name: h\ninput: {{shape: [4, 4, 1]}}\nlayers:\n{lines}\n", "h.yaml")
    result = check(path)
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert result.returncode == 1 and len(errors) == 4_999
    assert errors[-1].endswith("layers[4999] ReLU 'x': duplicate name 'x' (also layers[0] at line 4)")


def test_a_deep_chain_of_blocks_is_refused_with_capped_notes(write_spec):
    depth = 200
    blocks = "\n".join(f"  b{i}: {{layers: [{{block: b{i + 1}, name: {'n' * 120}}}]}}" for i in range(depth))
    path = write_spec(f"name: h\ninput: {{shape: [4, 4, 1]}}\nblocks:\n{blocks}\n"
                      f"  b{depth}: {{layers: [{{type: ReLU}}]}}\nlayers:\n  - {{block: b0}}\n", "h.yaml")
    result = check(path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "block uses are nested 65 deep, more than 64" in result.stderr
    assert len(result.stderr) < 5_000, len(result.stderr)  # 6 notes, long names shortened
    assert "more nested uses" in result.stderr


def test_twenty_thousand_layers_and_three_hundred_typos_answer_quickly(write_spec):
    lines = [f"  - {{type: ReLU, name: layer_{i:05d}}}" for i in range(20_000)]
    for i in range(0, 20_000, 67)[:300]:
        lines[i] = f"  - {{type: ReLU, name: layer_{i:05d}, inputs: [layer_{i - 1:05d}x]}}"
    path = write_spec("name: h\ninput: {shape: [4, 4, 1]}\nlayers:\n" + "\n".join(lines) + "\n", "h.yaml")
    result = check(path)
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert result.returncode == 1 and len(errors) == 299  # layer 0's ref (layer_-0001x) too, but once
    assert errors[1].endswith("no layer named 'layer_00066x' is defined before this one; did you mean 'layer_00066'?")


def test_fifty_thousand_layers_written_out_are_checked(write_spec):
    lines = "\n".join("  - {type: ReLU}" for _ in range(50_000))
    path = write_spec(f"name: h\ninput: {{shape: [4, 4, 1]}}\nlayers:\n{lines}\n", "h.yaml")
    result = check(path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "re_lu_49999 (ReLU)" in result.stdout


def test_an_integer_with_thousands_of_digits_is_refused_located(write_spec):
    found = refused(write_spec, f"""
        name: h
        input: {{shape: [4, 4, 1]}}
        layers:
          - {{type: Dense, units: {"9" * 5000}}}
    """)
    assert found[0].startswith("4:") and "too large" in found[0]


def test_a_use_name_of_a_thousand_characters_is_refused_shortly(write_spec):
    found = refused(write_spec, f"""
        name: h
        input: {{shape: [4, 4, 1]}}
        blocks:
          unit: {{layers: [{{type: ReLU}}]}}
        layers:
          - {{block: unit, name: "{'a' * 1000}"}}
    """)
    assert len(found) == 1 and "is not a valid name" in found[0] and len(found[0]) < 400


def test_the_vocabulary_suggests_among_many_names_only_those_defined_before():
    from cnncompile.language.diagnostics import Vocabulary

    names = [f"layer_{i:05d}" for i in range(20_000)]
    vocabulary = Vocabulary(names)
    assert vocabulary.suggest("layer_12345x") == "; did you mean 'layer_12345'?"
    assert vocabulary.suggest("LAYER_00007") == "; did you mean 'layer_00007'?"
    assert vocabulary.suggest("layer_12345x", before=12_000) != "; did you mean 'layer_12345'?"
    assert vocabulary.suggest("completely_different") == ""
