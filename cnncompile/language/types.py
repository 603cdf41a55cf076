"""Argument types shared by the layer classes: Keras's names, strictly validated.

An int where Keras takes a pair means the pair (3 -> (3, 3)), as in Keras. The
validators raise PydanticCustomError with a plain-English message, because these
messages reach users verbatim through the diagnostics.
"""

import functools
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError, PydanticKnownError, core_schema

from cnncompile.language.diagnostics import show


class Strict(BaseModel):
    """Base for every spec class: unknown keys are errors and nothing is coerced."""

    # defer_build: a class's validator is built when first used, not at import; `check` builds
    # only what the spec at hand needs (ModelSpec builds its members together, once).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


# Factories of empty defaults, for Field(default_factory=...). Not the builtins `list` and `dict`
# themselves: pydantic inspects a factory's signature, a builtin's is parsed from text with
# tokenize, and compiling tokenize's regular expressions cost every `check` ~5 ms.
def empty_list() -> list:
    return []


def empty_dict() -> dict:
    return {}


def validate_by_type(value: Any, by_tag: dict[str, type[BaseModel]], accepted: type | tuple[type, ...],
                     untagged: bool = False) -> Any:
    """Validate `value` with the one class its `type` names (`by_tag`), alone.

    What a discriminated union on `type` does, with the same errors (pydantic's own tag
    errors; the class's errors under this location), but only the class a spec uses ever gets
    a validator, built on first use: building validators it never ran was most of `check`'s
    start-up. An instance of an `accepted` class passes as it is, as in the union. A value
    that is no mapping is refused as pydantic's union refuses it (a mapping was expected),
    or, `untagged`, as a mapping without its `type` (what layers have always said)."""
    if isinstance(value, accepted):
        return value
    if not isinstance(value, dict) and not untagged:
        raise PydanticKnownError("model_attributes_type")
    tag = value.get("type") if isinstance(value, dict) else None
    if tag is None:
        raise PydanticCustomError("union_tag_not_found",
                                  "Unable to extract tag using discriminator 'type'", {"discriminator": "'type'"})
    cls = by_tag.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise PydanticCustomError(
            "union_tag_invalid",
            "Input tag '{tag}' found using 'type' does not match any of the expected tags: {expected_tags}",
            {"discriminator": "'type'", "tag": str(tag), "expected_tags": ", ".join(f"'{n}'" for n in by_tag)})
    return cls.model_validate(value)


class ByType:
    """`Annotated[Union[types], ByType(types)]`: a union of spec classes told apart by `type`,
    validated by validate_by_type. The annotation stays the union (the editor, the reference
    and the tests read its members); the JSON Schema is the eager discriminated union's,
    generated only when asked for."""

    def __init__(self, types: tuple[type[BaseModel], ...]):
        self.types = types
        by_tag = {cls.model_fields["type"].default: cls for cls in types}
        self.validate = functools.partial(validate_by_type, by_tag=by_tag, accepted=types)

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.validate)

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> Any:
        from pydantic import TypeAdapter

        eager = Annotated[Union[self.types], Field(discriminator="type")]  # noqa: UP007 (a tuple of classes)
        return handler(TypeAdapter(eager).core_schema)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pair_validator(minimum: int, what: str):
    def validate(value: Any) -> tuple[int, int]:
        items = [value, value] if _is_int(value) else value
        if (
            not isinstance(items, (list, tuple))
            or len(items) != 2
            or not all(_is_int(v) and v >= minimum for v in items)
        ):
            raise PydanticCustomError(
                "pair",
                "expected {what}, or a list of two, received {received}",
                {"what": what, "received": show(value)},
            )
        return (items[0], items[1])

    return validate


def _pair(minimum: int, what: str) -> Any:
    item = {"type": "integer", "minimum": minimum}
    schema = {"anyOf": [item, {"type": "array", "items": item, "minItems": 2, "maxItems": 2}]}
    return Annotated[tuple[int, int], PlainValidator(_pair_validator(minimum, what)),
                     WithJsonSchema(schema)]


def _validate_padding2(value: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras's ZeroPadding2D/Cropping2D forms: n, [h, w] or [[top, bottom], [left, right]]."""
    if _is_int(value) and value >= 0:
        return ((value, value), (value, value))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        if all(_is_int(v) and v >= 0 for v in value):
            return ((value[0], value[0]), (value[1], value[1]))
        if all(isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) and x >= 0 for x in v)
               for v in value):
            return ((value[0][0], value[0][1]), (value[1][0], value[1][1]))
    raise PydanticCustomError(
        "padding2",
        "expected an integer >= 0, [height, width] or [[top, bottom], [left, right]], "
        "received {received}",
        {"received": show(value)},
    )


PositivePair = _pair(1, "a positive integer")
NonNegativePair = _pair(0, "an integer >= 0")
_nonneg = {"type": "integer", "minimum": 0}
_nonneg_pair = {"type": "array", "items": _nonneg, "minItems": 2, "maxItems": 2}
Padding2 = Annotated[
    tuple[tuple[int, int], tuple[int, int]],
    PlainValidator(_validate_padding2),
    WithJsonSchema({"anyOf": [_nonneg, _nonneg_pair,
                              {"type": "array", "items": _nonneg_pair, "minItems": 2, "maxItems": 2}]}),
]

PositiveInt = Annotated[int, Field(ge=1)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
Padding = Literal["valid", "same"]

# Keras 3 activations usable by name that keep the shape (glu halves the last axis and
# threshold needs arguments, so neither is offered). A test checks each against Keras.
ACTIVATIONS = (
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "swish",
    "mish", "sigmoid", "hard_sigmoid", "hard_silu", "hard_swish", "log_sigmoid", "tanh",
    "hard_tanh", "tanh_shrink", "softmax", "log_softmax", "softplus", "softsign",
    "exponential", "squareplus", "sparse_plus", "sparse_sigmoid", "hard_shrink",
    "soft_shrink", "sparsemax",
)
ActivationName = Literal[ACTIVATIONS]  # type: ignore[valid-type]

INITIALIZERS = (
    "zeros", "ones", "glorot_uniform", "glorot_normal", "he_uniform", "he_normal",
    "lecun_uniform", "lecun_normal", "random_uniform", "random_normal",
    "truncated_normal", "orthogonal", "variance_scaling",
)
Initializer = Literal[INITIALIZERS]  # type: ignore[valid-type]


class L1L2(Strict):
    """An explicit regularizer: penalty l1 * sum(|w|) + l2 * sum(w^2)."""

    l1: Annotated[float, Field(ge=0.0)] = 0.0
    l2: Annotated[float, Field(ge=0.0)] = 0.0


# A Keras name ('l2' means L2 with factor 0.01) or explicit factors.
Regularizer = Literal["l1", "l2", "l1_l2"] | L1L2
