"""The `search:` section: which fields of the spec `cnncompile tune` varies, and what it optimises.

A field is addressed by a readable path into the spec: a layer by its `name`
(`layers.conv1.filters`), anything else by its keys (`training.optimizer.learning_rate`,
`training.batch_size`). What each path may take is one of three ranges:

    {choice: [16, 32, 64]}                  any values the field accepts (numbers, strings, lists)
    {int: [16, 128], step: 16}              integers from low to high inclusive
    {float: [0.0001, 0.01], log: true}      real numbers, sampled on a log scale if asked

Only the shape of the section is checked here; whether a path exists and every value
fits its field is checked against the model itself (cnncompile/analysis/space.py).
"""

from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import Discriminator, Field, Tag, model_validator

from cnncompile.language.types import PositiveInt, Strict


def label(value: Any) -> Any:
    """A value as a scalar: itself, or a list or mapping as its YAML flow text (`[5, 3]`).
    Optuna's categorical choices and the logs show values this way."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip()


class SearchRange(Strict):
    """What one path may take. A range knows its own values: how many (`size`), the points a
    survey tries (`grid_size`, `grid_value`), the values `check` validates (`ends`), and
    how Optuna samples it (`suggest`); nothing outside asks which kind it is. Values are
    computed by position, never listed: `{int: [1, 10**12]}` costs nothing."""

    key: ClassVar[str]  # the YAML key that says which range a mapping is

    @property
    def size(self) -> int | None:
        """How many distinct values; None for a continuous range."""
        raise NotImplementedError

    @property
    def grid_size(self) -> int:
        """How many points a survey tries: every value of a discrete range."""
        return self.size  # type: ignore[return-value]

    def grid_value(self, index: int) -> Any:
        raise NotImplementedError

    def ends(self) -> Iterator[tuple[int, Any]]:
        """(position in the YAML list, value) for each value `check` validates against its field."""
        raise NotImplementedError

    def suggest(self, trial: Any, path: str) -> Any:
        """The value an Optuna trial samples for `path`."""
        raise NotImplementedError

    def describe(self) -> str:
        return "continuous" if self.size is None else f"{self.size:,}"


class Choice(SearchRange):
    """One of a list of values."""

    key: ClassVar[str] = "choice"
    choice: Annotated[list[Any], Field(min_length=1)] = Field(
        description="The values to try, each of which the field itself must accept.")

    @model_validator(mode="after")
    def _distinct(self) -> "Choice":
        seen = []
        for value in self.choice:
            if value in seen:
                raise ValueError(f"choice lists {value!r} twice")
            seen.append(value)
        return self

    @property
    def size(self) -> int:
        return len(self.choice)

    def grid_value(self, index: int) -> Any:
        return self.choice[index]

    def ends(self) -> Iterator[tuple[int, Any]]:
        return enumerate(self.choice)

    def suggest(self, trial: Any, path: str) -> Any:
        # Optuna's choices are scalars; lists (kernel_size: [3, 5]) travel as their YAML text.
        labels = [label(value) for value in self.choice]
        return self.choice[labels.index(trial.suggest_categorical(path, labels))]


class IntRange(SearchRange):
    """Integers from low to high inclusive, every `step`."""

    key: ClassVar[str] = "int"
    bounds: Annotated[list[int], Field(min_length=2, max_length=2, alias="int")] = Field(
        description="[low, high], both included.")
    step: PositiveInt = Field(1, description="Distance between neighbouring values (16 for 16, 32, 48, ...).")

    @model_validator(mode="after")
    def _ordered(self) -> "IntRange":
        low, high = self.bounds
        if low > high:
            raise ValueError(f"int: low {low} is above high {high}")
        return self

    @property
    def size(self) -> int:
        low, high = self.bounds
        return (high - low) // self.step + 1

    def grid_value(self, index: int) -> int:
        return self.bounds[0] + index * self.step

    def ends(self) -> Iterator[tuple[int, Any]]:
        # The highest value reached on the step grid, which is `high` when the step divides.
        return iter([(0, self.bounds[0]), (1, self.grid_value(self.size - 1))][:min(self.size, 2)])

    def suggest(self, trial: Any, path: str) -> int:
        return trial.suggest_int(path, self.bounds[0], self.grid_value(self.size - 1), step=self.step)


class FloatRange(SearchRange):
    """Real numbers from low to high."""

    key: ClassVar[str] = "float"
    bounds: Annotated[list[float], Field(min_length=2, max_length=2, alias="float")] = Field(
        description="[low, high].")
    log: bool = Field(False, description="Sample uniformly in log space (learning rates, weight decay).")

    @model_validator(mode="after")
    def _ordered(self) -> "FloatRange":
        low, high = self.bounds
        if low >= high:
            raise ValueError(f"float: low {low} must be below high {high}")
        if self.log and low <= 0:
            raise ValueError(f"float: log scale needs low > 0, received {low}")
        return self

    @property
    def size(self) -> None:
        return None

    @property
    def grid_size(self) -> int:
        return 2  # a survey tries the two ends

    def grid_value(self, index: int) -> float:
        return self.bounds[index]

    def ends(self) -> Iterator[tuple[int, Any]]:
        return enumerate(self.bounds)

    def suggest(self, trial: Any, path: str) -> float:
        return trial.suggest_float(path, self.bounds[0], self.bounds[1], log=self.log)


RANGE_TYPES: tuple[type[SearchRange], ...] = (Choice, IntRange, FloatRange)
"""Every kind of range; the union below and the reference derive from it."""

_BY_KEY = {cls.key: cls for cls in RANGE_TYPES}


def _range_kind(value: Any) -> str | None:
    """Which range a mapping is, by the key it carries."""
    if isinstance(value, dict):
        return next((key for key in _BY_KEY if key in value), None)
    return value.key if isinstance(value, SearchRange) else None


_FORMS = [f"{{{key}: [...]}}" if key == "choice" else f"{{{key}: [low, high]}}" for key in _BY_KEY]
Range = Annotated[
    Union[tuple(Annotated[cls, Tag(cls.key)] for cls in RANGE_TYPES)],  # noqa: UP007 (a tuple of classes)
    Discriminator(_range_kind, custom_error_type="search_range",
                  custom_error_message=f"expected {', '.join(_FORMS[:-1])} or {_FORMS[-1]}"),
]

METRIC_DIRECTIONS = {"val_accuracy": "maximize", "val_loss": "minimize"}


class Search(Strict):
    """What `cnncompile tune` varies and optimises. Selection uses the validation split of the
    training data (training.validation_split must be > 0); only the best candidate is scored
    on the test set."""

    space: Annotated[dict[str, Range], Field(min_length=1)] = Field(
        description="Path -> range, e.g. `layers.conv1.filters: {choice: [16, 32]}`. Layers are "
                    "addressed by their name, other fields by their keys (`training.batch_size`).")
    metric: Literal[tuple(METRIC_DIRECTIONS)] = Field(  # type: ignore[valid-type]
        "val_accuracy", description="Validation metric that ranks candidates, each by its best epoch (whose weights it "
                        "keeps) and that epoch's neighbours (smoothing).")
    smoothing: Annotated[int, Field(ge=0, le=5)] = Field(
        1, description="Epochs on each side of a candidate's best epoch averaged into its score: one lucky epoch "
                       "(on 1,000 validation images an accuracy moves by about 0.5 points) no longer wins the pick. "
                       "0 scores the best epoch alone. The kept weights are the best epoch's either way.")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Default: maximize for accuracy, minimize for loss.")
    trials: PositiveInt = Field(20, description="How many candidates to train (statically rejected ones do not count).")
    max_params: PositiveInt | None = Field(None, description="Candidates with more parameters are rejected before training.")
    max_macs: PositiveInt | None = Field(None, description="Candidates with more multiply-accumulates per image are rejected before training.")
    seed: Annotated[int, Field(ge=0, lt=2**32)] = Field(0, description="Seeds the sampler: the same study proposes the same candidates.")
    pruner: Literal["median", "successive_halving", "hyperband", "none"] = Field(
        "median", description="What stops an unpromising trial after an epoch (epochs are the resource): median "
        "(below the median of earlier trials at that epoch), successive_halving or hyperband (Optuna's; reduction "
        "factor 3: most trials get 1 epoch, a third 3, a ninth 9, ...), or none.")

    @property
    def score_label(self) -> str:
        """What a trial's value (its score) is, for plots."""
        return self.metric if not self.smoothing else f"{self.metric}, best epoch ±{self.smoothing} averaged"

    @property
    def goal(self) -> str:
        return self.direction or METRIC_DIRECTIONS[self.metric]
