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

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from cnncompile.language.types import PositiveInt, Strict


class Choice(Strict):
    """One of a list of values."""

    choice: Annotated[list[Any], Field(min_length=1)] = Field(
        description="The values to try, each of which the field itself must accept.")

    @model_validator(mode="after")
    def _distinct(self) -> Choice:
        seen = []
        for value in self.choice:
            if value in seen:
                raise ValueError(f"choice lists {value!r} twice")
            seen.append(value)
        return self


class IntRange(Strict):
    """Integers from low to high inclusive, every `step`."""

    bounds: Annotated[list[int], Field(min_length=2, max_length=2, alias="int")] = Field(
        description="[low, high], both included.")
    step: PositiveInt = Field(1, description="Distance between neighbouring values (16 for 16, 32, 48, ...).")

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        low, high = self.bounds
        if low > high:
            raise ValueError(f"int: low {low} is above high {high}")
        return self

    def values(self) -> list[int]:
        low, high = self.bounds
        return list(range(low, high + 1, self.step))


class FloatRange(Strict):
    """Real numbers from low to high."""

    bounds: Annotated[list[float], Field(min_length=2, max_length=2, alias="float")] = Field(
        description="[low, high].")
    log: bool = Field(False, description="Sample uniformly in log space (learning rates, weight decay).")

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        low, high = self.bounds
        if low >= high:
            raise ValueError(f"float: low {low} must be below high {high}")
        if self.log and low <= 0:
            raise ValueError(f"float: log scale needs low > 0, received {low}")
        return self


def _range_kind(value: Any) -> str | None:
    """Which range a mapping is, by the key it carries."""
    if isinstance(value, dict):
        return next((key for key in ("choice", "int", "float") if key in value), None)
    if isinstance(value, (Choice, IntRange, FloatRange)):
        return {Choice: "choice", IntRange: "int", FloatRange: "float"}[type(value)]
    return None


Range = Annotated[
    Annotated[Choice, Tag("choice")] | Annotated[IntRange, Tag("int")] | Annotated[FloatRange, Tag("float")],
    Discriminator(_range_kind, custom_error_type="search_range",
                  custom_error_message="expected {choice: [...]}, {int: [low, high]} or {float: [low, high]}"),
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
        "val_accuracy", description="Validation metric of the last epoch that ranks candidates.")
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
    def goal(self) -> str:
        return self.direction or METRIC_DIRECTIONS[self.metric]
