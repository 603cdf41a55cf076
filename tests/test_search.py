"""The `search:` section: located errors at check, candidates built from the YAML tree, the survey."""

from __future__ import annotations

import textwrap

import pytest

from cnncompile.language.diagnostics import SpecError
from cnncompile.analysis.check import compile_file
from cnncompile.analysis.space import compile_space
from tests.conftest import run_cli

MODEL = """\
name: s
input: {shape: [28, 28, 1]}
layers:
  - {type: Conv2D, name: conv1, filters: 8, kernel_size: 3, activation: relu}
  - {type: MaxPooling2D, pool_size: 2}
  - {type: Conv2D, name: conv2, filters: 8, kernel_size: 3, activation: relu}
  - {type: Flatten}
  - {type: Dense, units: 10, activation: softmax}
training: {dataset: mnist, optimizer: adam, validation_split: 0.2}
"""


def write(tmp_path, search: str, model: str = MODEL):
    path = tmp_path / "s.yaml"
    path.write_text(model + "search:\n" + textwrap.indent(textwrap.dedent(search).strip("\n"), "  ") + "\n")
    return path


def errors(path) -> list[str]:
    result = run_cli("check", str(path))
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    return result.stderr.splitlines()[:-1]


def test_every_value_is_checked_against_its_field_at_check(tmp_path):
    path = write(tmp_path, """
        space:
          layers.conv1.filters: {choice: [16, "32"]}
          training.batch_size: {int: [0, 64], step: 16}
          training.optimizer.learning_rate: {float: [-1.0, 0.1]}
    """)
    assert errors(path) == [
        f"{path}:12:41: error: search.space: 'layers.conv1.filters': the value '32' is not accepted: "
        "layers[0] Conv2D 'conv1': filters: expected an integer, received '32'",
        f"{path}:13:33: error: search.space: 'training.batch_size': the value 0 is not accepted: "
        "training.batch_size: must be >= 1, received 0",
        f"{path}:14:48: error: search.space: 'training.optimizer.learning_rate': the value -1.0 is not accepted: "
        "training.optimizer.learning_rate: must be > 0.0, received -1.0",
    ]


def test_unknown_paths_get_did_you_mean_at_the_key(tmp_path):
    path = write(tmp_path, """
        space:
          layers.conv1.filtrs: {choice: [16, 32]}
          layers.cnv2.filters: {choice: [16, 32]}
          layers.dense.units: {choice: [10]}
          training.optimizr.learning_rate: {float: [0.001, 0.1]}
          layer.conv1.filters: {choice: [16]}
    """)
    assert errors(path) == [
        f"{path}:12:5: error: search.space: 'layers.conv1.filtrs': layers[0] Conv2D 'conv1': unknown key 'filtrs'; "
        "did you mean 'filters'?",
        f"{path}:13:5: error: search.space: 'layers.cnv2.filters': no layer is named 'cnv2'; did you mean 'conv2'?",
        f"{path}:14:5: error: search.space: 'layers.dense.units': layers[4] has no name of its own ('dense' is the "
        "default, which changes when a layer is inserted before it); add name: dense to it",
        f"{path}:15:5: error: search.space: 'training.optimizr.learning_rate': training: unknown key 'optimizr'; "
        "did you mean 'optimizer'?",
        f"{path}:16:5: error: search.space: 'layer.conv1.filters': a path starts with input, layers, training; "
        "did you mean 'layers'?",
    ]


def test_ranges_themselves_are_checked_and_name_their_path(tmp_path):
    path = write(tmp_path, """
        space:
          layers.conv1.filters: {int: [64, 16]}
          layers.conv2.filters: {range: [1, 2]}
          training.optimizer.learning_rate: {float: [0.0, 0.1], log: true}
    """)
    assert errors(path) == [
        f"{path}:12:33: error: search.space.layers.conv1.filters: int: low 64 is above high 16",
        f"{path}:13:27: error: search.space.layers.conv2.filters: expected {{choice: [...]}}, {{int: [low, high]}} "
        "or {float: [low, high]}",
        f"{path}:14:47: error: search.space.training.optimizer.learning_rate: float: log scale needs low > 0, "
        "received 0.0",
    ]


def test_ranking_needs_a_validation_split(tmp_path):
    path = write(tmp_path, "space: {layers.conv1.filters: {choice: [8, 16]}}",
                 model=MODEL.replace(", validation_split: 0.2", ""))
    assert errors(path) == [
        f"{path}:10:1: error: search.metric: val_accuracy is measured on the validation split, but "
        "training.validation_split is 0; set it (e.g. 0.2): candidates are never ranked on the test set"]


def test_candidates_are_the_spec_tree_with_values_replaced(tmp_path):
    """A shorthand on the way (`optimizer: adam`) becomes its mapping; the rest is untouched."""
    path = write(tmp_path, """
        space:
          layers.conv2.kernel_size: {choice: [3, [5, 3]]}
          training.optimizer.learning_rate: {float: [0.0001, 0.1], log: true}
    """)
    space = compile_space(compile_file(path))
    candidate = space.candidate({"layers.conv2.kernel_size": [5, 3], "training.optimizer.learning_rate": 0.02})
    assert candidate.rejection is None
    assert candidate.tree["training"]["optimizer"] == {"type": "adam", "learning_rate": 0.02}
    assert candidate.spec.training.optimizer.learning_rate == 0.02
    assert candidate.spec.layers[2].kernel_size == (5, 3)
    assert "search" not in candidate.tree
    assert space.base["training"]["optimizer"] == "adam", "the base tree must not be modified"


def test_survey_counts_shape_and_budget_rejections_exactly(tmp_path):
    """conv1 kernel 3/13/27 -> 26/16/2 -> pool 13/8/1: conv2's 3x3 kernel fits 13 and 8, not 1.
    Kernel 3 with 64 filters: 11x11x64 into Dense(10) is 82,202 params in all, over 50,000;
    kernel 13 with 64 filters is 29,082."""
    path = write(tmp_path, """
        max_params: 50000
        space:
          layers.conv1.kernel_size: {choice: [3, 13, 27]}
          layers.conv2.filters: {choice: [8, 64]}
    """)
    space = compile_space(compile_file(path))
    survey = space.survey()
    assert (survey.size, survey.grid, survey.evaluated, survey.enumerated) == (6, 6, 6, True)
    assert survey.rejected == {"shape": 2, "budget": 1}
    assert survey.feasible == 3
    assert "kernel 3x3 does not fit the 1x1 input" in survey.example["shape"]
    assert survey.example["budget"] == "params 82,202 over max_params 50,000"


def test_check_prints_the_space():
    """(test_cli_check proves this stays framework-free.)"""
    result = run_cli("check", "examples/mnist_tune.yaml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    space = next(i for i, line in enumerate(lines) if line.startswith("search space:"))
    assert lines[space].startswith("search space: 6 dimensions, infinitely many candidates")
    assert " shape: e.g. layers[4] Conv2D 'conv3': kernel 5x5 does not fit" in result.stdout
    assert " budget: e.g. params " in result.stdout
    assert "tune: 10 trials, maximize val_accuracy; budgets: max_params 150,000" in result.stdout


def test_a_space_too_big_to_enumerate_is_sampled_and_says_so(tmp_path):
    path = write(tmp_path, """
        space:
          layers.conv1.filters: {int: [1, 64]}
          layers.conv2.filters: {int: [1, 64]}
    """)
    survey = compile_space(compile_file(path)).survey(limit=100)
    assert (survey.size, survey.grid, survey.evaluated, survey.enumerated) == (4096, 4096, 100, False)
    assert survey.feasible == 100
    with pytest.raises(SpecError):
        compile_space(compile_file(write(tmp_path, "space: {layers.nope.filters: {choice: [1]}}")))


def test_a_huge_int_range_is_never_listed(tmp_path):
    """{int: [1, 10**12]} used to build the list of every value (MemoryError); a range computes
    its values by position, so its size, survey and ends cost nothing."""
    path = write(tmp_path, """
        space:
          layers.conv1.filters: {int: [1, 1000000000000], step: 3}
          layers.conv2.filters: {choice: [8, 16]}
    """)
    space = compile_space(compile_file(path))
    (filters, _) = space.dimensions
    assert filters.size == 333_333_333_334
    assert list(filters.range.ends()) == [(0, 1), (1, 1_000_000_000_000)]
    assert space.size() == 2 * 333_333_333_334
    survey = space.survey(limit=20)
    assert (survey.grid, survey.evaluated, survey.enumerated) == (2 * 333_333_333_334, 20, False)
    result = run_cli("check", str(path))
    assert result.returncode == 0, result.stderr
    assert "layers.conv1.filters (333,333,333,334)" in result.stdout
