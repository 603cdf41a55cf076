"""`training.phases:` — fine-tuning in steps, as Keras's transfer-learning guide does it.

```yaml
training:
  phases:
    - {epochs: 3}                                              # the new head on the frozen base
    - {epochs: 5, unfreeze: ["conv5_*"], learning_rate: 1.0e-5}  # then the top block, gently
```

Each phase trains for its epochs, continuing the one before (epochs are numbered across
phases). `unfreeze` makes layers trainable from that phase on: layer names, block-use names
(everything the use expanded to) or globs over either. A phase may change the optimizer, or
only the training optimizer's learning rate; every phase starts its optimizer afresh, as
recompiling in Keras does.
"""

from typing import Annotated

from pydantic import Field, model_validator

from cnncompile.language.training import LearningRate, Optimizer
from cnncompile.language.types import PositiveInt, Strict, empty_list

Pattern = Annotated[str, Field(min_length=1)]


class Phase(Strict):
    """One step of training: its epochs and what changes when it starts."""

    epochs: PositiveInt = Field(description="Epochs this phase trains.")
    unfreeze: list[Pattern] = Field(
        default_factory=empty_list, description="Layer or block-use names, or globs (`conv5_*`), trainable from this "
        "phase on (those with `trainable: false` in the spec).")
    optimizer: Optimizer | None = Field(None, description="This phase's optimizer (default: training.optimizer).")
    learning_rate: LearningRate | None = Field(
        None, description="Only change training.optimizer's learning rate (e.g. 1.0e-5 to fine-tune).")

    @model_validator(mode="after")
    def _config(self) -> "Phase":
        if self.optimizer is not None and self.learning_rate is not None:
            raise ValueError("give a phase an optimizer (with its learning_rate) or a learning_rate, not both")
        return self
