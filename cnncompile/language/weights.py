"""The top-level `weights:`: where a model's starting weights come from.

```yaml
weights: imagenet                               # a zoo file's Keras Applications weights
weights: runs/mnist_resnet                      # a run directory (its model.keras)
weights: base.keras                             # a .keras file, or a .weights.h5 from model.save_weights
weights: {from: base.keras, skip: [predictions, "head_*"]}   # these layers start fresh
```

Layers are matched by name, shapes checked (cnncompile.analysis.weightfile, framework-free,
so `check` reports mismatches); cnncompile.backend.weights assigns the values.
"""

from typing import Annotated

from pydantic import Field

from cnncompile.language.types import Strict, empty_list

IMAGENET = "imagenet"
"""Keras Applications' published ImageNet weights, for the zoo's models (by the spec's name)."""

WeightsPath = Annotated[str, Field(min_length=1)]


class WeightsFrom(Strict):
    """`{from: FILE, skip: [...]}`: weights from FILE, except the layers `skip` names."""

    from_: WeightsPath = Field(alias="from", description="imagenet, a run directory, a .keras or a .weights.h5 "
                               "file; relative to the spec file.")
    skip: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=empty_list, description="Layer names or globs (`predictions`, `head_*`) that keep their fresh "
        "initial weights, e.g. a new classifier head.")


Weights = WeightsPath | WeightsFrom


def weights_source(weights: Weights) -> tuple[str, tuple[str, ...]]:
    """(where from, skip patterns) of either form."""
    if isinstance(weights, WeightsFrom):
        return weights.from_, tuple(weights.skip)
    return weights, ()
