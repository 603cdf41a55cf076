"""The whole spec: a name, an input, layers and optional training settings."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from cnncompile.spec.layers import Layer, LayerName, LayerSpec, snake_case
from cnncompile.spec.search import Search
from cnncompile.spec.training import Training
from cnncompile.spec.types import PositiveInt, Strict


class Input(Strict):
    """The image fed to the model, channels last; the batch axis is implicit."""

    shape: Annotated[list[PositiveInt], Field(min_length=1, max_length=3)] = Field(
        description="[height, width, channels], e.g. [28, 28, 1] for MNIST."
    )
    # Models take raw 0-255 pixels and scale them in-graph, so the saved model and the
    # ONNX export need no preprocessing outside. Set scale: 1 for data already scaled.
    scale: float = Field(1 / 255, description="Pixels are multiplied by this inside the model (default 1/255).")
    offset: float = Field(0.0, description="Then this is added (e.g. -1 with scale 1/127.5 for [-1, 1]).")


class ModelSpec(Strict):
    """A CNN: layers applied in order to `input`."""

    name: LayerName = Field(description="Model name; also the default run directory runs/<name>.")
    input: Input
    layers: Annotated[list[Layer], Field(min_length=1)]
    training: Training | None = None
    search: Search | None = Field(None, description="Hyperparameter search for `cnncompile tune` (see Search).")

    def layer_names(self) -> list[str]:
        """Every layer's name: its own, or Keras's default (conv2d, conv2d_1, ...).

        Defaults skip names the user took explicitly, so every name is unique.
        """
        taken = {layer.name for layer in self.layers if layer.name}
        counts: dict[str, int] = {}
        names = []
        for layer in self.layers:
            if layer.name:
                names.append(layer.name)
                continue
            base = snake_case(layer.type)
            while True:
                n = counts.get(base, 0)
                counts[base] = n + 1
                candidate = base if n == 0 else f"{base}_{n}"
                if candidate not in taken:
                    break
            taken.add(candidate)
            names.append(candidate)
        return names

    def graph(self) -> list[tuple[str, LayerSpec, list[str]]]:
        """(name, layer, input names) in execution order. A chain today: each layer reads the
        one before it, the first reads 'input'. Merge layers will name their inputs."""
        names = self.layer_names()
        return [(name, layer, [names[i - 1] if i else "input"])
                for i, (name, layer) in enumerate(zip(names, self.layers))]
