"""The whole spec: a name, an input, layers and optional training settings."""

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, PrivateAttr, Tag, model_validator

from cnncompile.language.diagnostics import SourceMap
from cnncompile.language.graph import Node, resolve
from cnncompile.language.blocks import Block, BlockUse, Identifier
from cnncompile.language.layers import Layer, LayerName
from cnncompile.language.search import Search
from cnncompile.language.training import Training
from cnncompile.language.types import PositiveInt, Strict
from cnncompile.language.weights import Weights

# Keras Applications' preprocess_input modes (keras/src/applications/imagenet_utils.py), on raw
# 0-255 RGB pixels: caffe flips RGB to BGR and subtracts ImageNet's per-channel means; tf maps
# to [-1, 1]; torch scales to [0, 1] and standardizes with ImageNet's per-channel mean and std.
PREPROCESSING_MODES = ("caffe", "tf", "torch")


class Input(Strict):
    """The image fed to the model, channels last; the batch axis is implicit."""

    shape: Annotated[list[PositiveInt], Field(min_length=1, max_length=3)] = Field(
        description="[height, width, channels], e.g. [28, 28, 1] for MNIST."
    )
    # Models take raw 0-255 pixels and scale them in-graph, so the saved model and the
    # ONNX export need no preprocessing outside. Set scale: 1 for data already scaled.
    scale: float = Field(1 / 255, description="Pixels are multiplied by this inside the model (default 1/255).")
    offset: float = Field(0.0, description="Then this is added (e.g. -1 with scale 1/127.5 for [-1, 1]).")
    channels: Literal[3] | None = Field(
        None, description="Repeat a single (grayscale) channel to 3, in-graph, for networks trained on RGB "
        "images; layers then read (height, width, 3).")
    preprocessing: Literal[PREPROCESSING_MODES] | None = Field(  # type: ignore[valid-type]
        None, description="Keras Applications' preprocess_input mode, in-graph on raw 0-255 pixels, instead of "
        "scale/offset: caffe (BGR, ImageNet means subtracted; VGG16, ResNet50), tf ([-1, 1]; MobileNetV2, "
        "Xception, InceptionV3), torch ([0, 1] then ImageNet mean/std; DenseNet).")

    @model_validator(mode="after")
    def _config(self) -> "Input":
        if self.preprocessing and self.model_fields_set & {"scale", "offset"}:
            raise ValueError(f"preprocessing: {self.preprocessing} replaces scale and offset; remove them")
        if self.channels is not None and (len(self.shape) != 3 or self.shape[2] != 1):
            raise ValueError(f"channels: {self.channels} repeats a single channel; input.shape must be "
                             f"[height, width, 1], received {list(self.shape)}")
        return self

    @property
    def scaled(self) -> bool:
        """Whether scale/offset apply (preprocessing replaces them)."""
        return self.preprocessing is None and (self.scale != 1 or self.offset != 0)

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """The shape the first layers read: input.shape with `channels` applied."""
        shape = tuple(self.shape)
        return (*shape[:-1], self.channels) if self.channels else shape


def _entry_kind(value: Any) -> str:
    """A mapping with `block` is a block use; anything else is validated as a layer."""
    if isinstance(value, BlockUse) or (isinstance(value, dict) and "block" in value):
        return "block"
    return "layer"


def entry(layer: Any) -> Any:
    """An item of `layers`: a layer (validated as `layer`) or a block use."""
    return Annotated[Union[Annotated[layer, Tag("layer")], Annotated[BlockUse, Tag("block")]],  # noqa: UP007
                     Discriminator(_entry_kind)]


class ModelSpec(Strict):
    """A CNN: a graph of layers over `input`. Each layer reads the one listed before it, or the
    layers its `inputs` name; the last layer listed is the output."""

    name: LayerName = Field(description="Model name; also the default run directory runs/<name>.")
    input: Input
    blocks: dict[Identifier, Block] | None = Field(
        None, description="Reusable structures by name, used in `layers` as `{block: NAME, ...}`.")
    layers: Annotated[list[entry(Layer)], Field(min_length=1)]
    training: Training | None = None
    search: Search | None = Field(None, description="Hyperparameter search for `cnncompile tune` (see Search).")
    weights: Weights | None = Field(
        None, description="Start from trained weights, matched by layer name: imagenet (zoo files), a run "
        "directory, a .keras or .weights.h5 file, or {from: FILE, skip: [names or globs]}.")

    _graph: list | None = PrivateAttr(None)

    def graph(self, source: SourceMap | None = None) -> list[Node]:
        """Every layer with its name and the names it reads, in execution order (the last is
        the output). Resolved once; `source` locates wiring errors (SpecError)."""
        if self._graph is None:
            self._graph = resolve(self, source)
        return self._graph

    def layer_names(self) -> list[str]:
        """Every layer's name: its own, or Keras's default (conv2d, conv2d_1, ...)."""
        return [node.name for node in self.graph()]
