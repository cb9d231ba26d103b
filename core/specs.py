"""Validated, torch-free specifications shared by the API, the workers and the engine.

A job is fully described by a `TrainSpec`: what to build (`ArchitectureSpec`) and how to
train it (`Hyperparameters`). The engine reports each epoch as an `EpochMetrics`, which is
also what the database stores and the API returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal, Protocol, TypeVar

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import SpecError, from_validation_error

__all__ = ["SpecError"]  # re-exported: the error of every spec check below

# The largest integer a BIGINT (PostgreSQL) or INTEGER (SQLite) column holds: ids and offsets
# beyond it are refused by validation (422), never sent to the database to overflow there.
MAX_ROW_ID = 2**63 - 1
RowId = Annotated[int, Ge(1), Le(MAX_ROW_ID)]
RowOffset = Annotated[int, Ge(0), Le(MAX_ROW_ID)]

Optimizer = Literal["sgd", "adam", "adamw"]
Scheduler = Literal["none", "step", "cosine", "onecycle"]
Augmentation = Literal["none", "standard", "strong", "trivial"]
Device = Literal["auto", "cpu", "cuda"]
# auto: bfloat16 where the hardware computes it natively (CPUs with AVX512-BF16 or AMX, GPUs of
# compute capability 8.0 and newer), float16 with loss scaling on older GPUs, else float32.
Precision = Literal["auto", "float32", "bfloat16", "float16"]


MAX_EPOCHS = 1000


class Hyperparameters(BaseModel):
    """How to train. Defaults are the reference study's settings (see `PRESETS`)."""

    # strict: `"epochs": true` or `"lr": "0.1"` is a mistake to report, not a value to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)

    epochs: int = Field(8, ge=1, le=MAX_EPOCHS)
    lr: float = Field(1e-3, gt=0, le=10, description="peak learning rate")
    batch_size: int = Field(32, ge=1, le=4096, description="training batch size")
    eval_batch_size: int = Field(64, ge=1, le=4096, description="validation batch size")
    reference_batch_size: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="the batch size `lr` was tuned for: the rate is scaled to batch_size, "
        "linearly for SGD, by the square root for Adam and AdamW (larger batches on a GPU)",
    )
    optimizer: Optimizer = "sgd"
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (adam: beta1 unused)")
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, le=1)
    scheduler: Scheduler = "none"
    warmup_epochs: int = Field(0, ge=0, le=100)
    warmup_steps: int = Field(
        0,
        ge=0,
        le=100_000,
        description="warm-up in optimiser steps (at most a third of the "
        "run), so a tiny dataset still warms up over enough steps; warmup_epochs, if set, wins",
    )
    step_size: int = Field(10, ge=1, description="epochs between decays for scheduler=step")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor for scheduler=step")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after this many epochs without a better validation score"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="initialisation and shuffling seed")
    split_seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the train/val split")
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(
        0.0, ge=0, lt=1, description="held-out test part; scored once, by the best checkpoint"
    )
    image_size: int = Field(224, ge=16, le=1024)
    augmentation: Augmentation = "none"
    train_size_fraction: float = Field(
        1.0,
        ge=0.5,
        le=1,
        description="training crops at this fraction of image_size: "
        "cheaper, and evaluated at image_size they offset the zoom of random resized crops "
        "(FixRes)",
    )
    crop_source_scale: float = Field(
        1.0,
        ge=1,
        le=2,
        description="training crops are cut from images cached at this multiple of the "
        "evaluation resize (sharper pixels where a random crop zooms in); 1: from the "
        "evaluation cache",
    )
    random_erasing: float = Field(0.0, ge=0, le=1, description="probability per image")
    mixup_alpha: float = Field(0.0, ge=0, le=10, description="mixup Beta(a, a); 0: off")
    cutmix_alpha: float = Field(0.0, ge=0, le=10, description="cutmix Beta(a, a); 0: off")
    ema_epochs: float | None = Field(
        None,
        gt=0,
        le=100,
        description="evaluate and export an exponential moving average of "
        "the weights with this time constant, in epochs",
    )
    num_workers: int = Field(0, ge=0, le=64, description="data-loader worker processes")
    pretrained_weights: str | None = Field(
        None, description="path to a torchvision-format state_dict to initialise from"
    )
    compile: bool = Field(False, description="wrap the model in torch.compile")
    device: Device = "auto"
    precision: Precision = Field(
        "auto",
        description="compute precision of training (autocast); auto: bfloat16 where the "
        "hardware has it natively, float16 with loss scaling on older GPUs, else float32",
    )

    @model_validator(mode="after")
    def _warmup_fits(self) -> Hyperparameters:
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError("warmup_epochs must be smaller than epochs")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer 'sgd' with momentum > 0")
        if self.val_fraction + self.test_fraction > 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        if self.train_size_fraction < 1 and self.augmentation == "none":
            raise ValueError("train_size_fraction below 1 needs augmentation (crops are resized)")
        if self.crop_source_scale > 1 and self.augmentation == "none":
            raise ValueError("crop_source_scale above 1 needs augmentation (random crops)")
        if self.effective_lr > 10:
            raise ValueError(
                f"lr scaled from reference_batch_size to batch_size is {self.effective_lr:g}, "
                "above 10: lower lr or the batch size"
            )
        return self

    @property
    def effective_lr(self) -> float:
        """The peak rate the optimiser runs at: `lr` scaled from reference_batch_size."""
        return scaled_lr(self.lr, self.batch_size, self.reference_batch_size, self.optimizer)

    @property
    def train_image_size(self) -> int:
        """Side of the training crops (a multiple of 8 for the kernels' sake, at least 16)."""
        if self.train_size_fraction == 1:
            return self.image_size
        return max(16, int(self.image_size * self.train_size_fraction / 8 + 0.5) * 8)


def scaled_lr(lr: float, batch_size: int, reference: int | None, optimizer: Optimizer) -> float:
    """`lr`, tuned at batch `reference`, for `batch_size`: linear scaling for SGD (Goyal et al.
    2017: k times the batch, k times the rate, with warm-up), square-root scaling for the
    adaptive optimisers, whose steps are already normalised per parameter (Malladi et al.
    2022). No reference: `lr` as given."""
    if reference is None or reference == batch_size:
        return lr
    ratio = batch_size / reference
    return lr * (ratio if optimizer == "sgd" else ratio**0.5)


# The reference study: plain SGD, lr 1e-3, batch 32/64, 8 epochs, 224x224, 80/20 split.
REFERENCE = Hyperparameters()

# Why each choice is in README.md ("The recommended preset").
RECOMMENDED = Hyperparameters(
    epochs=30,
    lr=0.025,
    optimizer="sgd",
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    scheduler="cosine",
    warmup_steps=150,
    label_smoothing=0.1,
    grad_clip=5.0,
    augmentation="standard",
    test_fraction=0.15,
)

PRESETS: dict[str, Hyperparameters] = {"reference": REFERENCE, "recommended": RECOMMENDED}
DEFAULT_PRESET = "reference"


def resolve_hyperparameters(
    preset: str | None = None, overrides: dict[str, Any] | None = None, *, from_text: bool = False
) -> Hyperparameters:
    """Start from a named preset (default: reference) and apply overrides, validated together.

    `from_text`: the overrides are command-line strings ("2", "0.01", "true"), converted by the
    same field types; JSON from the API stays strict. Raises SpecError naming the first bad field.
    """
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise SpecError("preset", f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    merged = PRESETS[name].model_dump() | dict(overrides or {})
    try:
        return Hyperparameters.model_validate(merged, strict=not from_text)
    except ValidationError as exc:
        raise from_validation_error(exc, prefix="hyperparameters") from None


class ArchitectureSpec(BaseModel):
    """Which network: a registry name in `models.ARCHITECTURES` plus its options."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, examples=["resnet34"])
    options: dict[str, Any] = Field(default_factory=dict, examples=[{"attn": "se"}])


class TrainSpec(BaseModel):
    """Everything that determines a training run (besides the data)."""

    model_config = ConfigDict(extra="forbid")

    architecture: ArchitectureSpec
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class BestEpochDetails(BaseModel):
    """Extra evaluation recorded at the best epoch."""

    class_names: list[str]
    per_class_accuracy: dict[str, float]
    confusion_matrix: list[list[int]] = Field(description="rows: true class, columns: predicted")
    macro_f1: float


class TestMetrics(BestEpochDetails):
    """The best checkpoint scored once on the held-out test images, after training."""

    loss: float
    accuracy: float
    num_images: int
    epoch: int = Field(description="the best epoch, whose checkpoint was scored")


class JobRunInfo(BaseModel):
    """What a run recorded beside its metrics (the job's `run_info` JSON): the fields that
    comparisons, reports and the API read. Unknown keys from other versions are kept."""

    model_config = ConfigDict(extra="allow")

    class_names: list[str] = Field(default_factory=list)
    train_size: int | None = None
    val_size: int | None = Field(None, description="validation images")
    test_size: int | None = Field(None, description="held-out test images")
    skipped: list[dict[str, Any]] = Field(
        default_factory=list, description="images left out: path and reason"
    )
    start_epoch: int | None = Field(None, description="first epoch of this attempt (resumes)")
    precision: str | None = Field(
        None, description="what training computed in: float32, bfloat16 or float16"
    )
    worker_device: str | None = Field(
        None, description="the worker's device setting (FOODLAB_WORKER_DEVICE): cpu, cuda:1, ..."
    )
    gpu_index: int | None = Field(None, description="the GPU trained on: the host's index")
    gpu_name: str | None = None
    gpu_uuid: str | None = Field(None, description="as nvidia-smi -L names it")
    inference_ms: float | None = Field(None, description="one image, on the CPU")
    inference_device: str | None = None
    inference_threads: int | None = None
    inference_runs: int | None = Field(None, description="timed runs after warm-up (median kept)")
    inference_load_average: float | None = Field(None, description="1-minute load when timed")

    def stored(self) -> dict[str, Any]:
        """The JSON kept on the row: only what is known."""
        return self.model_dump(exclude_none=True)


class EpochMetrics(BaseModel):
    """What the engine reports at the end of every epoch (1-based)."""

    epoch: int = Field(..., ge=1)
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    epoch_seconds: float = Field(description="wall-clock: grows with other load on the machine")
    epoch_cpu_seconds: float | None = Field(
        None, description="CPU seconds this process spent on the epoch (all its threads)"
    )
    load_average: float | None = Field(None, description="1-minute load average at the end")
    train_images_per_second: float
    generalization_gap: float = Field(description="train_accuracy - val_accuracy")
    grad_norms: dict[str, float] = Field(
        default_factory=dict, description="mean per-stage gradient L2 norm over the epoch"
    )
    skipped_steps: int = Field(
        0, ge=0, description="float16 steps skipped by the loss scaler (gradients overflowed)"
    )
    is_best: bool = False
    best_details: BestEpochDetails | None = None


def epoch_score(val_accuracy: float, val_loss: float) -> tuple[float, float]:
    """How epochs rank, higher is better: validation accuracy, then lower validation loss.

    The one rule behind `is_best` (the engine), the kept best checkpoint, early stopping and
    the best epoch a comparison or report shows.
    """
    return (val_accuracy, -val_loss)


class ScoredEpoch(Protocol):
    """Anything with an epoch's number and validation scores (EpochMetrics, a stored row)."""

    @property
    def epoch(self) -> int: ...
    @property
    def val_accuracy(self) -> float: ...
    @property
    def val_loss(self) -> float: ...


E = TypeVar("E", bound=ScoredEpoch)


def best_epoch(epochs: Iterable[E]) -> E | None:
    """The best-scoring epoch; of equal scores the earliest (the first to reach it)."""
    return max(
        epochs, key=lambda m: (*epoch_score(m.val_accuracy, m.val_loss), -m.epoch), default=None
    )
