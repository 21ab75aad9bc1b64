"""The configuration file, validated before any work starts.

Every section forbids unknown keys. Sections that name a pluggable piece (a task kind,
an encoder, a balancing method, a sampler, a data format) take ``type``/``kind``/``method``/
``format`` plus the piece's own options; those options are checked against the piece's
constructor when the experiment is built, with the same one-line error format. A piece is
named by a registered name or an import path ``package.module:Class``, resolved through its
kind's registry (:mod:`polytask.config.names`) before any data is read.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

#: the largest seed a config may give (a signed 64-bit integer)
MAX_SEED = 2**63 - 1


class _NoBoolNumbers(BaseModel):
    """``epochs: true`` is an error, not 1: a bool is taken only where the field says bool
    (pydantic's lax mode would read it as a number)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and not _admits_bool(field.annotation):
                raise ValueError(f"{str(value).lower()} is not a number here")
        return value


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    return any(_admits_bool(a) for a in typing.get_args(annotation))


class Strict(_NoBoolNumbers):
    model_config = ConfigDict(extra="forbid")


class Open(_NoBoolNumbers):
    """A section with a fixed selector and free options (checked against the signature and
    type hints of what they configure, :func:`polytask.options.check_options`)."""

    model_config = ConfigDict(extra="allow")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TaskConfig(Open):
    kind: str
    primary_metric: str | None = None


class SourceConfig(Strict):
    format: str
    train: str | None = None
    val: str | None = None
    test: str | None = None
    tasks: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    limit: int | None = Field(default=None, ge=1)
    val_fraction: float | None = Field(default=None, ge=0.0, lt=1.0)
    test_fraction: float | None = Field(default=None, ge=0.0, lt=1.0)


class VocabConfig(Strict):
    min_freq: int = Field(default=1, ge=1)
    max_size: int | None = Field(default=None, ge=2)
    lowercase: bool = False
    chars: bool = False


class DataConfig(Strict):
    sources: dict[str, SourceConfig]
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    tokenizer: Literal["whitespace", "chars"] = "whitespace"
    vocab: VocabConfig = Field(default_factory=VocabConfig)
    #: training inputs longer than this many tokens are cut (with a warning); None: never.
    #: eval and predict always read whole inputs
    max_length: int | None = Field(default=512, ge=1)
    split_seed: int | None = Field(default=None, ge=0, le=MAX_SEED)

    @field_validator("sources")
    @classmethod
    def _non_empty(cls, v: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        if not v:
            raise ValueError("needs at least one data source")
        return v


class EncoderConfig(Open):
    type: str


class TaskLayerConfig(Open):
    type: str


class HeadConfig(Strict):
    type: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    pooling: Literal["mean", "max", "attention"] | None = None
    hidden: int | None = Field(default=None, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    crf: bool | None = None


class SimilarityConfig(Strict):
    weight: float = Field(default=0.01, ge=0)
    measure: Literal["l2", "cka"] = "l2"


class ModelConfig(Strict):
    encoder: EncoderConfig
    sharing: str = "hard"
    sharing_options: dict[str, Any] = Field(default_factory=dict)
    similarity: SimilarityConfig | None = None
    taps: dict[str, int] = Field(default_factory=dict)
    task_layers: dict[str, TaskLayerConfig] = Field(default_factory=dict)
    heads: dict[str, HeadConfig] = Field(default_factory=dict)
    pooling: Literal["mean", "max", "attention"] = "attention"
    head_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class BalancingConfig(Open):
    method: str = "fixed"
    #: where gradient methods take per-task gradients: the shared feature tensor or the
    #: shared parameters; None chooses features where the model gives them and the method
    #: allows it (checked against method and architecture when the experiment is built)
    level: Literal["features", "params"] | None = None


class SamplerConfig(Open):
    type: str = "proportional"


class ParamGroupConfig(Strict):
    match: str
    lr: float | None = Field(default=None, gt=0)
    freeze: bool = False
    weight_decay: float | None = Field(default=None, ge=0)


class TrainerSection(Strict):
    epochs: int = Field(default=10, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=128, ge=1)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    momentum: float = Field(default=0.9, ge=0)
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    clip_norm: float | None = Field(default=5.0, gt=0)
    accumulate: int = Field(default=1, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    #: auto: CUDA when available, else the CPU
    device: str = "auto"
    #: deterministic kernels: bitwise-exact resume on GPUs too, at some speed
    deterministic: bool = False
    threads: int | None = Field(default=None, ge=1)
    criterion: str = "mean"
    patience: int | None = Field(default=None, ge=1)
    baselines: dict[str, float] = Field(default_factory=dict)
    checkpoint_every: int = Field(default=0, ge=0)
    param_groups: list[ParamGroupConfig] = Field(default_factory=list)
    progress: bool = True
    log_every: int = Field(default=20, ge=1)

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        index = v.removeprefix("cuda:")
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and index.isdigit()):
            return v
        raise ValueError(
            f"unknown device {v!r}; fix: use auto (CUDA when available, else the CPU), cpu, "
            "cuda or cuda:N"
        )


class DiagnosticsSection(Strict):
    """Training diagnostics (:mod:`polytask.engine.diagnostics`): per-task losses and
    gradient norms, gradient cosines and conflict, the method's task weights, gate usage,
    written to ``diagnostics.jsonl`` every ``every`` steps; ``every: 0`` or
    ``enabled: false`` turns them off."""

    enabled: bool = True
    #: steps between two samples (default 50: at least one per 50 steps)
    every: int = Field(default=50, ge=0)


class Config(Strict):
    #: the run's name: ``runs/<name>`` by default, so a plain name, never a path
    name: str = "experiment"
    #: torch takes seeds up to 2**64 - 1; ``compare`` adds the seed index, so leave room
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    tasks: dict[str, TaskConfig]
    data: DataConfig
    model: ModelConfig
    balancing: BalancingConfig = Field(default_factory=BalancingConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    diagnostics: DiagnosticsSection = Field(default_factory=DiagnosticsSection)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v.strip() or v in (".", "..") or any(c in v for c in "/\\\0"):
            raise ValueError(
                "must be a plain name without path separators or '..', as it names the "
                "directory runs/<name>; fix: give a name such as 'reviews-upgrad' (and "
                "--out DIR to write the run elsewhere)"
            )
        return v

    @field_validator("tasks")
    @classmethod
    def _tasks_non_empty(cls, v: dict[str, TaskConfig]) -> dict[str, TaskConfig]:
        if not v:
            raise ValueError("needs at least one task")
        return v
