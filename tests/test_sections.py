"""Every section of the spec is one tuple of classes, as layers are (test_layer_types.py): adding
an optimizer, schedule, loss, metric, callback, augmentation or search range is its class in
that tuple, and these tests name whatever else it lacks (a Keras class, an argument Keras
does not take, a reference entry). Nothing is silently ignored by `train`."""

from __future__ import annotations

import inspect
import typing

import pytest

from cnncompile.language import search
from cnncompile.language import training as t
from cnncompile.language.reference import json_schema, markdown
from cnncompile.language.types import Strict

SECTIONS = {"optimizer": t.OPTIMIZER_TYPES, "schedule": t.SCHEDULE_TYPES, "loss": t.LOSS_TYPES,
            "metric": t.METRIC_TYPES, "callback": t.CALLBACK_TYPES, "augmentation": t.AUGMENTATION_TYPES}
KERAS_SECTIONS = {name: types for name, types in SECTIONS.items() if name != "metric"}
ALL = [cls for types in SECTIONS.values() for cls in types]


def _ids(classes):
    return [cls.__name__ for cls in classes]


def test_every_class_with_a_type_is_in_its_sections_list():
    """A class written in training.py but left out of its tuple would be accepted by nothing
    (or, before the tuples, validated and then ignored by train)."""
    written = [obj for obj in vars(t).values()
               if isinstance(obj, type) and issubclass(obj, Strict) and "type" in obj.model_fields]
    unlisted = [cls.__name__ for cls in written if cls not in ALL]
    assert not unlisted, f"{unlisted} in cnncompile/language/training.py belong in one of its *_TYPES tuples"
    assert len(ALL) == len(set(ALL))
    ranges = [obj for obj in vars(search).values()
              if isinstance(obj, type) and issubclass(obj, search.SearchRange) and obj is not search.SearchRange]
    unlisted = [cls.__name__ for cls in ranges if cls not in search.RANGE_TYPES]
    assert not unlisted, f"{unlisted} belong in cnncompile/language/search.py RANGE_TYPES"


@pytest.mark.parametrize("cls", ALL + list(search.RANGE_TYPES), ids=_ids(ALL + list(search.RANGE_TYPES)))
def test_the_union_the_reference_and_the_schema_derive_from_the_lists(cls):
    name = cls.__name__
    assert f"\n#### {name}" in markdown(), f"{name} has no section in spec/README.md"
    assert name in json_schema()["$defs"], f"{name} is missing from the JSON Schema"


def test_each_union_is_its_tuple():
    unions = {"optimizer": t.Optimizer, "loss": t.Loss, "metric": t.Metric, "callback": t.Callback,
              "augmentation": t.Augmentation}
    for section, union in unions.items():
        while typing.get_origin(union) is typing.Annotated:
            union = typing.get_args(union)[0]
        assert typing.get_args(union) == SECTIONS[section], section


def _minimal(cls) -> Strict:
    """The class with its required arguments filled (10 for integers, 0.1 for numbers)."""
    required = {name: 10 if field.annotation is int else 0.1
                for name, field in cls.model_fields.items() if field.is_required()}
    return cls.model_validate({"type": t.tag(cls), **required})


@pytest.mark.parametrize("cls", [c for types in KERAS_SECTIONS.values() for c in types],
                         ids=_ids([c for types in KERAS_SECTIONS.values() for c in types]))
def test_every_class_has_a_keras_class_taking_its_arguments(cls):
    from cnncompile.backend import fitting

    try:
        keras_cls = fitting.keras_class(cls)
    except KeyError as exc:
        pytest.fail(str(exc))
    accepted = inspect.signature(keras_cls.__init__).parameters
    arguments = fitting.keras_arguments(_minimal(cls), {"total_steps": 100, "tensorboard_dir": "tb"})
    not_taken = [name for name in arguments if name not in accepted]
    assert not not_taken, (f"{cls.__name__}: keras {keras_cls.__name__} takes no {not_taken}; name the field as "
                           "Keras does, or say what it maps to in cnncompile/backend/fitting.py")


@pytest.mark.parametrize("cls", t.METRIC_TYPES, ids=_ids(t.METRIC_TYPES))
def test_every_metric_has_keras_functions_for_both_label_forms(cls):
    from cnncompile.backend import fitting

    for sparse in (False, True):
        try:
            logged, function = fitting.metric_function(cls, sparse)
        except KeyError as exc:
            pytest.fail(str(exc))
        assert callable(function) and logged.endswith(t.tag(cls).removeprefix("sparse_"))


def test_train_builds_every_class_as_its_keras_class_with_its_arguments(tmp_path):
    """Through the functions train.py calls, one Training per class, compared by class name and
    get_config(): a spec argument Keras does not receive is a difference."""
    from cnncompile.backend import fitting

    def built(training):
        made = {"optimizer": fitting.optimizer(training, 100), "loss": fitting.loss(training)}
        made["schedule"] = fitting.learning_rate(training.optimizer.learning_rate, 100)  # what optimizer() passes
        return made

    checked = []
    for section, types in KERAS_SECTIONS.items():
        for cls in types:
            spec = _minimal(cls)
            field = {"optimizer": ("optimizer", spec), "loss": ("loss", spec), "callback": ("callbacks", [spec]),
                     "augmentation": ("augmentation", [spec]),
                     "schedule": ("optimizer", {"type": "adam", "learning_rate": spec.model_dump()})}[section]
            training = t.Training(dataset="mnist", validation_split=0.1, **dict([field]))
            if section == "callback":
                obj = fitting.callbacks(training, str(tmp_path))[0]
            elif section == "augmentation":
                obj = fitting.augmentation(training, 0)[0]
            else:
                obj = built(training)[section]
            assert type(obj).__name__ == cls.__name__
            config = obj.get_config() if hasattr(obj, "get_config") else vars(obj)
            for name, value in fitting.keras_arguments(spec, {"total_steps": 100, "tensorboard_dir": str(tmp_path)}).items():
                got = config.get(name, getattr(obj, name, None))
                if isinstance(got, (tuple, list)) and not isinstance(value, (tuple, list)):
                    value = (-value, value)  # Keras stores a symmetric factor f as (-f, f)
                assert got == pytest.approx(value), f"{cls.__name__}.{name}: spec {value!r}, Keras {got!r}"
            for name, value in FROM_THE_RUN.get(cls, {}).items():  # what the spec cannot say
                got = config.get(name, getattr(obj, name, None))
                assert got == (str(tmp_path) if value == "RUN_DIR" else value), f"{cls.__name__}.{name}: {got!r}"
            checked.append(cls)
    assert checked == [c for types in KERAS_SECTIONS.values() for c in types]


# Arguments that come from the run (100 steps, the run's tensorboard directory), not the spec.
FROM_THE_RUN = {t.CosineDecay: {"decay_steps": 100}, t.TensorBoard: {"log_dir": "RUN_DIR"}}


@pytest.mark.parametrize("cls", search.RANGE_TYPES, ids=_ids(search.RANGE_TYPES))
def test_every_range_answers_for_itself(cls):
    """size, grid, ends, suggest and describe are the range's own: nothing outside tells them apart."""
    import optuna

    example = {"choice": {"choice": [3, [5, 3]]}, "int": {"int": [16, 64], "step": 16},
               "float": {"float": [0.001, 0.1], "log": True}}[cls.key]
    value_range = cls.model_validate(example)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = [value_range.suggest(study.ask(), "p") for _ in range(20)]
    grid = [value_range.grid_value(i) for i in range(value_range.grid_size)]
    ends = [value for _, value in value_range.ends()]
    if value_range.size is None:
        assert all(grid[0] <= v <= grid[-1] for v in values) and value_range.describe() == "continuous"
    else:
        assert value_range.size == len(grid) and value_range.describe() == str(len(grid))
        assert all(v in grid for v in values)
    assert ends[0] == grid[0] and ends[-1] == grid[-1]
