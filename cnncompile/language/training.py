"""The `training:` section: what `cnncompile train` does with a model.

Names follow Keras: optimizers, losses and metrics by their string names ('rmsprop',
'categorical_crossentropy', 'accuracy'), schedules, callbacks and augmentation layers by
their class names. A bare string for `optimizer`, `loss` or a metric means that one with
Keras's defaults.

Each kind of entry has one tuple of classes (OPTIMIZER_TYPES, SCHEDULE_TYPES, LOSS_TYPES,
METRIC_TYPES, CALLBACK_TYPES, AUGMENTATION_TYPES, like layers.LAYER_TYPES): the pydantic
union, the reference and the JSON Schema derive from it, and the class name is Keras's own,
which is how backend/fitting.py finds the Keras side (tests/test_sections.py proves every
class has one).
"""

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from cnncompile.language.precisions import PRECISIONS
from cnncompile.language.types import ByType, PositiveInt, Rate, Strict

PositiveFloat = Annotated[float, Field(gt=0.0)]
UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]

# Built-in datasets: image shape (H, W, C) and class labels.
BUILTIN_DATASETS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "mnist": ((28, 28, 1), tuple(str(d) for d in range(10))),
    "fashion_mnist": ((28, 28, 1), ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
}


class DatasetPath(Strict):
    """User data: a directory of IDX files, a Keras-layout .npz, class-named image folders, or
    TFRecord shards written by `cnncompile data pack` (a folder with a manifest.json)."""

    path: Annotated[str, Field(min_length=1)] = Field(
        description="Relative to the spec file. IDX directory, .npz (x_train, y_train, x_test, y_test), image folders, "
        "or shards from `cnncompile data pack` (docs/shards.md)."
    )
    test_split: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        0.2, description="For image folders without train/ and test/ subfolders: fraction held out for testing."
    )
    cache: Literal["auto", "memory", "disk", "none"] = Field(
        "auto", description="Image folders: decode once into memory, once into a file in the cache folder "
        "($CNNCOMPILE_CACHE_DIR, else ~/.cache/cnncompile) that later runs reuse, or stream the files every "
        "epoch (none). auto: memory when the decoded images take at most 1 GiB, else none."
    )
    bad_images: Literal["error", "skip"] = Field(
        "error", description="Image folders: refuse the folder when an image cannot be read (error, listing "
        "the first few), or leave such images out and say which (skip)."
    )


class CosineDecay(Strict):
    """keras.optimizers.schedules.CosineDecay; decay_steps defaults to the whole run."""

    type: Literal["CosineDecay"] = "CosineDecay"
    initial_learning_rate: PositiveFloat
    decay_steps: PositiveInt | None = None
    alpha: UnitFloat = Field(0.0, description="Final learning rate as a fraction of the initial one.")


class ExponentialDecay(Strict):
    """keras.optimizers.schedules.ExponentialDecay: lr * decay_rate ** (step / decay_steps)."""

    type: Literal["ExponentialDecay"] = "ExponentialDecay"
    initial_learning_rate: PositiveFloat
    decay_steps: PositiveInt
    decay_rate: PositiveFloat
    staircase: bool = False


def tag(cls: type[Strict]) -> str:
    """The `type:` a class is written as in YAML ('adam' for Adam, 'CosineDecay' for CosineDecay)."""
    return cls.model_fields["type"].default


def _union(types: tuple[type[Strict], ...]) -> Any:
    """The union of a section's classes, chosen by `type`: each entry is validated by its own
    class, whose validator is built when a spec first uses it (ByType), as layers are."""
    return Annotated[Union[types], ByType(types)]  # noqa: UP007 (a tuple of classes)


SCHEDULE_TYPES: tuple[type[Strict], ...] = (CosineDecay, ExponentialDecay)

LearningRate = PositiveFloat | _union(SCHEDULE_TYPES)


class _Optimizer(Strict):
    learning_rate: LearningRate = 0.001


class SGD(_Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum (keras.optimizers.SGD)."""

    type: Literal["sgd"] = "sgd"
    learning_rate: LearningRate = 0.01
    momentum: UnitFloat = 0.0
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0.0)] | None = None


class RMSprop(_Optimizer):
    """Divides the gradient by a running average of its magnitude (keras.optimizers.RMSprop)."""

    type: Literal["rmsprop"] = "rmsprop"
    rho: UnitFloat = 0.9
    momentum: UnitFloat = 0.0
    epsilon: PositiveFloat = 1e-7
    centered: bool = False
    weight_decay: Annotated[float, Field(ge=0.0)] | None = None


class _AdamFamily(_Optimizer):
    """Moment estimates shared by Adam, AdamW and Nadam."""

    beta_1: UnitFloat = 0.9
    beta_2: UnitFloat = 0.999
    epsilon: PositiveFloat = 1e-7
    weight_decay: Annotated[float, Field(ge=0.0)] | None = None


class Adam(_AdamFamily):
    """Adaptive moment estimation (keras.optimizers.Adam)."""

    type: Literal["adam"] = "adam"
    amsgrad: bool = False


class AdamW(Adam):
    """Adam with decoupled weight decay, on by default."""

    type: Literal["adamw"] = "adamw"  # type: ignore[assignment]
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.004  # type: ignore[assignment]


class Nadam(_AdamFamily):
    """Adam with Nesterov momentum (keras.optimizers.Nadam)."""

    type: Literal["nadam"] = "nadam"


OPTIMIZER_TYPES: tuple[type[Strict], ...] = (SGD, RMSprop, Adam, AdamW, Nadam)


def _named(value: Any) -> Any:
    """`optimizer: adam` is shorthand for `optimizer: {type: adam}`."""
    return {"type": value} if isinstance(value, str) else value


Optimizer = Annotated[_union(OPTIMIZER_TYPES), BeforeValidator(_named)]


class _Loss(Strict):
    from_logits: bool = Field(False, description="The model outputs logits (no softmax).")
    label_smoothing: UnitFloat = Field(0.0, description="categorical_crossentropy only: 0.1 trains towards 0.91 "
                                                        "and 0.01 instead of 1 and 0 (10 classes).")
    sparse_labels: ClassVar[bool] = False  # labels are class indices, not one-hot rows


class CategoricalCrossentropy(_Loss):
    """Cross-entropy against one-hot labels (keras.losses.CategoricalCrossentropy)."""

    type: Literal["categorical_crossentropy"] = "categorical_crossentropy"


class SparseCategoricalCrossentropy(_Loss):
    """Cross-entropy against integer class labels (keras.losses.SparseCategoricalCrossentropy)."""

    type: Literal["sparse_categorical_crossentropy"] = "sparse_categorical_crossentropy"
    sparse_labels: ClassVar[bool] = True

    @model_validator(mode="after")
    def _config(self) -> "SparseCategoricalCrossentropy":
        if self.label_smoothing:
            raise ValueError("label_smoothing needs categorical_crossentropy (Keras's sparse loss has none)")
        return self


LOSS_TYPES: tuple[type[Strict], ...] = (CategoricalCrossentropy, SparseCategoricalCrossentropy)
Loss = Annotated[_union(LOSS_TYPES), BeforeValidator(_named)]


class Accuracy(Strict):
    """Share of images whose most probable class is the label (Keras's 'accuracy'; always reported)."""

    type: Literal["accuracy"] = "accuracy"


class TopKCategoricalAccuracy(Strict):
    """Share of images whose label is among the 5 most probable classes."""

    type: Literal["top_k_categorical_accuracy"] = "top_k_categorical_accuracy"


METRIC_TYPES: tuple[type[Strict], ...] = (Accuracy, TopKCategoricalAccuracy)
Metric = Annotated[_union(METRIC_TYPES), BeforeValidator(_named)]


Monitor = Literal["loss", "val_loss", "accuracy", "val_accuracy"]


class EarlyStopping(Strict):
    """Stop when `monitor` has not improved for `patience` epochs."""

    type: Literal["EarlyStopping"] = "EarlyStopping"
    monitor: Monitor = "val_loss"
    patience: Annotated[int, Field(ge=0)] = 0
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0
    restore_best_weights: bool = False


class ReduceLROnPlateau(Strict):
    """Multiply the learning rate by `factor` when `monitor` stalls for `patience` epochs."""

    type: Literal["ReduceLROnPlateau"] = "ReduceLROnPlateau"
    monitor: Monitor = "val_loss"
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    patience: Annotated[int, Field(ge=0)] = 10
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0001
    min_lr: Annotated[float, Field(ge=0.0)] = 0.0


class TensorBoard(Strict):
    """Write TensorBoard logs to <run dir>/tensorboard."""

    type: Literal["TensorBoard"] = "TensorBoard"
    histogram_freq: Annotated[int, Field(ge=0)] = 0


CALLBACK_TYPES: tuple[type[Strict], ...] = (EarlyStopping, ReduceLROnPlateau, TensorBoard)
Callback = _union(CALLBACK_TYPES)

Factor = Annotated[float, Field(ge=0.0, lt=1.0)]


class RandomTranslation(Strict):
    """Shift images by up to a fraction of their height and width (training only)."""

    type: Literal["RandomTranslation"] = "RandomTranslation"
    height_factor: Factor
    width_factor: Factor
    fill_mode: Literal["reflect", "wrap", "constant", "nearest"] = "reflect"


class RandomRotation(Strict):
    """Rotate by up to `factor` of a full turn either way (0.05 = 18 degrees; training only)."""

    type: Literal["RandomRotation"] = "RandomRotation"
    factor: Factor
    fill_mode: Literal["reflect", "wrap", "constant", "nearest"] = "reflect"


class RandomZoom(Strict):
    """Zoom in or out by up to a fraction of the size (training only)."""

    type: Literal["RandomZoom"] = "RandomZoom"
    height_factor: Factor
    width_factor: Factor | None = Field(None, description="Defaults to height_factor, keeping the aspect ratio.")
    fill_mode: Literal["reflect", "wrap", "constant", "nearest"] = "reflect"


AUGMENTATION_TYPES: tuple[type[Strict], ...] = (RandomTranslation, RandomRotation, RandomZoom)
Augmentation = _union(AUGMENTATION_TYPES)

# Every entry class of the section, for messages that must find a class by its `type` tag.
ENTRY_TYPES: tuple[type[Strict], ...] = (*OPTIMIZER_TYPES, *SCHEDULE_TYPES, *LOSS_TYPES, *METRIC_TYPES,
                                         *CALLBACK_TYPES, *AUGMENTATION_TYPES)


class Distribute(Strict):
    """Data-parallel training with tf.distribute. batch_size is the global batch:
    each step splits it evenly across all replicas (on all workers), as tf.distribute does."""

    strategy: Literal["mirrored", "multi_worker"] = Field(
        description="mirrored: MirroredStrategy over this machine's devices (GPUs, else the CPU); "
                    "multi_worker: MultiWorkerMirroredStrategy across the hosts in TF_CONFIG."
    )
    timeout_seconds: Annotated[int, Field(ge=1, le=86400)] = Field(
        120, description="How long a worker waits for its peers (at start-up and in every collective) before failing."
    )


def _allow_bare_names(schema: dict[str, Any]) -> None:
    """JSON Schema: optimizer, loss and metrics may also be bare names (the BeforeValidator's shorthand)."""
    properties = schema["properties"]
    for field, types in (("optimizer", OPTIMIZER_TYPES), ("loss", LOSS_TYPES)):
        properties[field] = {"anyOf": [{"type": "string", "enum": [tag(cls) for cls in types]}, properties[field]]}
    items = properties["metrics"]["items"]
    properties["metrics"]["items"] = {"anyOf": [{"type": "string", "enum": [tag(cls) for cls in METRIC_TYPES]}, items]}


class Training(Strict):
    """How `cnncompile train` fits the model."""

    model_config = Strict.model_config | {"json_schema_extra": _allow_bare_names}

    dataset: Literal[tuple(BUILTIN_DATASETS)] | DatasetPath = Field(  # type: ignore[valid-type]
        description="'mnist', 'fashion_mnist', or {path: ...} for your own data."
    )
    optimizer: Optimizer = Field("rmsprop", validate_default=True, description="A Keras optimizer name, or a mapping with type and arguments.")  # type: ignore[assignment]
    loss: Loss = Field(  # type: ignore[assignment]
        "categorical_crossentropy", validate_default=True, description="A loss name, or {type, from_logits, label_smoothing}.")
    metrics: list[Metric] = Field(["accuracy"], validate_default=True,  # type: ignore[assignment]
                                  description="Metric names logged every epoch (accuracy is always one).")
    epochs: PositiveInt = 1
    batch_size: PositiveInt = 32
    validation_split: Rate = Field(0.0, description="Fraction of the training images held out for validation.")
    shuffle: bool = True
    seed: Annotated[int, Field(ge=0, lt=2**32)] = Field(
        0, description="Seeds weights, shuffling, dropout and augmentation; runs are reproducible by default."
    )
    callbacks: list[Callback] = []
    augmentation: list[Augmentation] = Field([], description="Random image transforms applied during training only; never exported.")
    distribute: Distribute | None = Field(None, description="Train on several devices or machines (see Distributed training).")
    phases: "list[phase_module.Phase] | None" = Field(
        None, min_length=1, description="Fine-tuning in steps (see Phase); their epochs add up to the run's, "
        "which replaces `epochs`.")
    precision: Literal[PRECISIONS] = Field(  # type: ignore[valid-type]
        "float32", description="Compute dtype while training (Keras's dtype policies): mixed_* keep float32 weights "
        "and the output layer in float32; auto picks mixed_bfloat16 on a CPU with AVX512_BF16 or AMX, mixed_float16 "
        "on a GPU with tensor cores, else float32. Saved models and exports are float32 either way.")

    @model_validator(mode="after")
    def _config(self) -> "Training":
        monitors = {c.monitor for c in self.callbacks if hasattr(c, "monitor")}
        if self.validation_split == 0 and any(m.startswith("val_") for m in monitors):
            raise ValueError("a callback monitors a val_ metric but validation_split is 0; "
                             "set validation_split (e.g. 0.1) or monitor 'loss'")
        if not isinstance(self.optimizer.learning_rate, float) and any(
            isinstance(c, ReduceLROnPlateau) for c in self.callbacks
        ):
            raise ValueError("ReduceLROnPlateau cannot change a scheduled learning_rate; use one or the other")
        if self.phases is not None:
            _check_phases(self)
        return self

    @property
    def total_epochs(self) -> int:
        """The run's epochs: the phases' sum when there are phases."""
        return sum(phase.epochs for phase in self.phases) if self.phases else self.epochs


def _check_phases(training: Training) -> None:
    if "epochs" in training.model_fields_set and training.epochs != training.total_epochs:
        raise ValueError(f"epochs ({training.epochs}) differs from the phases' sum ({training.total_epochs}); "
                         "remove epochs (the phases set it)")
    if training.callbacks and not all(isinstance(c, TensorBoard) for c in training.callbacks):
        # Their patience and best values would carry across a phase's new optimizer; not defined yet.
        raise ValueError("EarlyStopping and ReduceLROnPlateau cannot be combined with phases yet")
    if training.distribute is not None:
        raise ValueError("phases cannot be combined with distribute yet")


# At the end: phases.py builds on this module's Optimizer and LearningRate (Training.phases's
# annotation is a string, resolved when Training is first validated).
from cnncompile.language import phases as phase_module  # noqa: E402
