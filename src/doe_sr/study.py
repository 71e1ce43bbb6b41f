"""The study definition: a pydantic model of the study YAML, validated once.

Why pydantic: every field of a study is checked in one place, unknown keys are
rejected (a typo such as ``learnig_rate`` must not silently fall back to a default),
and the rest of the code receives typed objects instead of raw dicts. Every problem
becomes a :class:`doe_sr.errors.UserError` whose one-line message names the field and
the fix, so the CLI can print it and exit with code 2.

A *factor* is a hyperparameter varied by the orthogonal array; its name must be one
of :data:`TUNABLE`, which maps it onto the ``model`` or ``training`` field it
overrides in each run. Everything else in ``model``/``training`` is held fixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UserError

OPTIMIZERS = ("adam", "adadelta", "adagrad", "rmsprop", "sgd", "nadam", "adamw")
ACTIVATIONS = ("relu", "elu", "tanh", "leaky_relu", "selu", "gelu", "swish", "sigmoid")
LOSSES = ("mae", "mse")
METRICS = ("val_psnr", "val_ssim", "test_psnr", "test_ssim", "train_seconds")

#: factor name -> (section, field) it overrides in a run's configuration
TUNABLE: dict[str, tuple[str, str]] = {
    "learning_rate": ("training", "learning_rate"),
    "optimizer": ("training", "optimizer"),
    "batch_size": ("training", "batch_size"),
    "loss": ("training", "loss"),
    "epochs": ("training", "epochs"),
    "filters": ("model", "filters"),
    "activation": ("model", "activation"),
    "kernel_size": ("model", "kernel_size"),
    "dropout": ("model", "dropout"),
    "residual": ("model", "residual"),
}

_ARRAY_RE = re.compile(r"^L\d+(\(.*\))?$")


def _one_of(kind: str, value: str, allowed) -> str:
    """The value if it is one of ``allowed``; else a message listing what is."""
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; use one of: {', '.join(allowed)}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Factor(_Strict):
    """One factor of the array: a tunable hyperparameter and its levels, in order."""

    name: str
    levels: list[Any] = Field(min_length=2)
    label: str | None = None  # axis label in plots, e.g. "learning rate"
    unit: str | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _one_of("factor", v, TUNABLE)

    @field_validator("levels")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        labels = [str(x) for x in v]
        if len(set(labels)) != len(labels):
            raise ValueError(f"levels must be distinct, got {labels}")
        return v

    @property
    def level_labels(self) -> list[str]:
        """Levels as written in the study file; the analysis and reports print these."""
        return [str(x) for x in self.levels]

    @property
    def display(self) -> str:
        text = self.label or self.name.replace("_", " ")
        return f"{text} [{self.unit}]" if self.unit else text


class Design(_Strict):
    """Which orthogonal array, which factors on which columns, how many replicates."""

    array: str = "L9(3^4)"
    factors: list[Factor] = Field(min_length=1)
    replicates: int = Field(default=1, ge=1, le=100)
    columns: list[int] | None = None  # 1-based array column of each factor; default: in order

    @field_validator("array")
    @classmethod
    def _array_name(cls, v: str) -> str:
        v = v.strip()
        if not _ARRAY_RE.match(v):
            raise ValueError(f"{v!r} is not an array name; write it like 'L9(3^4)' or 'L18(6^1 3^6)'")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> "Design":
        names = [f.name for f in self.factors]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"factor {sorted(dup)[0]!r} appears twice; list each factor once")
        if self.columns is not None and len(self.columns) != len(self.factors):
            raise ValueError("columns must give one array column per factor")
        return self


class DataConfig(_Strict):
    """Where images come from and how HR/LR pairs and patches are made."""

    source: str = "sample"  # "sample" (scikit-image's bundled images) or a folder of HR images
    scale: Literal[2, 3, 4, 8] = 4
    split: tuple[int, int, int] = (8, 1, 1)  # train:val:test, by image
    protocol: Literal["split", "div2k"] = "split"  # div2k: official 800 train / 100 valid
    lr_source: str | None = None  # folder of given LR images (DIV2K X4 layout); default: bicubic
    patch_size: int = Field(default=64, ge=32)
    seed: int = 0
    max_side: int | None = Field(default=None, ge=32)  # centre-crop larger images (speed)
    cache: Literal["memory", "disk"] = "memory"

    @field_validator("split")
    @classmethod
    def _split(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(x < 0 for x in v) or v[0] == 0 or v[1] == 0 or v[2] == 0:
            raise ValueError(f"split {list(v)} must have positive train, val and test parts, e.g. [8, 1, 1]")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return v if v == "sample" else os.path.expanduser(os.path.expandvars(v))

    def source_path(self) -> Path | None:
        return None if self.source == "sample" else Path(self.source)


class ModelConfig(_Strict):
    """SR-NET's fixed options (factors override some of them per run)."""

    name: Literal["srnet"] = "srnet"
    filters: int = Field(default=64, ge=1, le=1024)
    activation: str = "relu"
    kernel_size: int = Field(default=3, ge=1, le=9)
    depth: int = Field(default=5, ge=1, le=7)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    residual: bool = True  # add the bicubic input to the output (VDSR-style global residual)
    head_width: int | None = Field(default=None, ge=1)  # channels of the last up block; None = filters, 3 = seed

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        return _one_of("activation", v, ACTIVATIONS)


class TrainingConfig(_Strict):
    """How each run trains (factors override some of these per run)."""

    epochs: int = Field(default=5, ge=1)
    steps_per_epoch: int = Field(default=100, ge=1)
    batch_size: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    optimizer: str = "adam"
    loss: str = "mae"
    seed: int = 0
    mixed_precision: Literal["auto", "off", "float16", "bfloat16"] = "auto"
    jit_compile: bool = False

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, v: str) -> str:
        return _one_of("optimizer", v, OPTIMIZERS)

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str) -> str:
        return _one_of("loss", v, LOSSES)


class ResponseConfig(_Strict):
    """The response the Taguchi analysis optimises."""

    metric: Literal["val_psnr", "val_ssim", "test_psnr", "test_ssim", "train_seconds"] = "val_psnr"
    objective: Literal["larger", "smaller", "nominal"] = "larger"


class TrackingConfig(_Strict):
    """Where MLflow records runs: a local folder (SQLite store inside it) or a tracking URI."""

    uri: str = "mlruns"
    experiment: str | None = None  # default: the study's name


class ExecutionConfig(_Strict):
    """The Optuna run engine: storage and crash detection."""

    storage: str | None = None  # default: sqlite:///<tracking folder>/optuna.db
    heartbeat_interval: int = Field(default=30, ge=1)
    grace_period: int = Field(default=120, ge=2)


class Study(_Strict):
    """A whole study file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    design: Design
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    response: ResponseConfig = ResponseConfig()
    tracking: TrackingConfig = TrackingConfig()
    execution: ExecutionConfig = ExecutionConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "Study":
        multiple = 2**self.model.depth
        if self.data.patch_size % multiple:
            raise ValueError(
                f"data.patch_size {self.data.patch_size} must be a multiple of {multiple} "
                f"(2**model.depth); use e.g. {max(multiple, self.data.patch_size // multiple * multiple)}"
            )
        for factor in self.design.factors:
            for level in factor.levels:
                try:
                    self.run_config({factor.name: level})
                except ValidationError as exc:
                    err = exc.errors()[0]
                    raise ValueError(f"factor {factor.name!r} level {level!r}: {err['msg']}") from None
        return self

    # -- derived -----------------------------------------------------------------
    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def factor_names(self) -> list[str]:
        return [f.name for f in self.design.factors]

    def factor(self, name: str) -> Factor:
        return next(f for f in self.design.factors if f.name == name)

    def run_config(self, factor_values: dict[str, Any]) -> "RunConfig":
        """The model and training settings of one run: fixed settings with factors applied."""
        sections = {"model": self.model.model_dump(), "training": self.training.model_dump()}
        for name, value in factor_values.items():
            section, field = TUNABLE[name]
            sections[section][field] = value
        return RunConfig(model=ModelConfig(**sections["model"]), training=TrainingConfig(**sections["training"]))

    def fingerprint(self) -> str:
        """Hash of what defines the runs; a stored study with another fingerprint is another study.

        Where the data live (``source``, ``lr_source``) and how they are cached are left
        out: workers on other machines mount the same data at other paths, and a moved
        folder is still the same study.
        """
        data = self.data.model_dump(mode="json", exclude={"source", "lr_source", "cache"})
        key = {"design": self.design.model_dump(mode="json"), "data": data,
               "model": self.model.model_dump(mode="json"), "training": self.training.model_dump(mode="json")}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class RunConfig(_Strict):
    """The effective settings of one array run."""

    model: ModelConfig
    training: TrainingConfig


def _format_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key; remove it or check its spelling (see studies/quickstart.yaml)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return f"{loc}: {msg}" if loc else msg


def parse_study(data: Any, *, origin: str = "study") -> Study:
    """Validate a parsed YAML document; raise UserError with a one-line message."""
    if not isinstance(data, dict):
        raise UserError(f"{origin}: a study file must be a YAML mapping with keys name, design, data, ...")
    try:
        return Study.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{origin}: {_format_error(exc)}") from None


def load_study(path: str | Path) -> Study:
    """Read and validate a study file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"study file {path} not found; pass the path of a YAML study such as studies/quickstart.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}:{where}: malformed YAML ({problem}); fix the syntax") from None
    return parse_study(data, origin=str(path))
