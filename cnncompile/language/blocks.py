"""Blocks: a structure written once, with parameters, and used many times.

```yaml
blocks:
  bottleneck:
    params: {filters: null, strides: 1, conv_shortcut: false}   # null: the use must give it
    layers:
      - {type: Conv2D, name: 0_conv, filters: "${4 * filters}", kernel_size: 1, when: "${conv_shortcut}"}
      ...
layers:
  - {block: bottleneck, name: "conv2_block${index}", repeat: 3, filters: 64}
```

A block's `layers` are templates: their `${...}` expressions (cnncompile.language.expressions)
are evaluated for each use, and only then validated as layers, so an error is reported at
the line inside the block *and* at the use. Expansion itself is cnncompile.language.graph's.
"""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from cnncompile.language.types import Strict, empty_dict

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
RESERVED = ("block", "name", "repeat", "inputs", "when", "trainable", "index")
"""Keys of a use that are not parameters; `index` is the repeat index in expressions."""


class Block(Strict):
    """A reusable structure: parameters, the names of its inputs, and its layers."""

    params: dict[Identifier, Any] = Field(
        default_factory=empty_dict,
        description="Parameter names and their defaults; null means the use must give it.")
    inputs: Annotated[list[Identifier], Field(min_length=1)] = Field(
        default_factory=lambda: ["input"],
        description="Names by which the block's layers read what the use passes in.")
    layers: Annotated[list[dict[str, Any]], Field(min_length=1)] = Field(
        description="Layers (and block uses) like the top-level ones, whose values may be "
        "`${...}` expressions over the parameters and `index`; `when: ${...}` drops a layer "
        "(its name then means its first input).")

    @field_validator("params")
    @classmethod
    def _not_reserved(cls, params: dict[str, Any]) -> dict[str, Any]:
        # A use's own keys would be read as the use's, never as the parameter: refuse them.
        taken = [key for key in params if key in RESERVED]
        if taken:
            raise PydanticCustomError(
                "reserved_parameter", f"{', '.join(repr(k) for k in taken)} cannot be a parameter: "
                f"{', '.join(RESERVED[:-1])} are keys of every use and index is the repeat count; rename it")
        return params

    @field_validator("inputs")
    @classmethod
    def _distinct(cls, inputs: list[str]) -> list[str]:
        twice = sorted({name for name in inputs if inputs.count(name) > 1})
        if twice:
            raise PydanticCustomError(
                "duplicate_input", f"{', '.join(repr(n) for n in twice)} is listed more than once; "
                "each input of a block needs its own name")
        return inputs


class BlockUse(BaseModel):
    """`{block: NAME, name: ..., repeat: N, inputs: [...], when: ..., PARAM: VALUE, ...}`."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, defer_build=True)

    block: Identifier = Field(description="Which block (a key of `blocks`).")
    name: str | None = Field(
        None, description="Prefix of the expanded layers' names; may use `${index}`. "
        "Default: the block's name with a number.")
    repeat: int | str = Field(1, description="Instances in a chain, each reading the one before; "
                              "`index` counts them from 1.")
    inputs: list[str] | None = Field(None, description="What the block's inputs read; default: the layer before.")
    when: bool | str = Field(True, description="Inside a block: false drops the use.")
    trainable: bool = Field(True, description="false freezes every layer the use expands to "
                            "(see the layers' `trainable`).")

    @property
    def arguments(self) -> dict[str, Any]:
        """The parameters the use sets (every key that is not one of the fields above)."""
        return dict(self.model_extra or {})
