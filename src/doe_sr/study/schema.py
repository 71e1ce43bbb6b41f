"""The study definition: a pydantic model of the study YAML, validated once.

Why pydantic: every field of a study is checked in one place, unknown keys are
rejected (a typo such as ``learnig_rate`` must not silently fall back to a default),
and the rest of the code receives typed objects instead of raw dicts. Every problem
becomes a :class:`doe_sr.core.errors.UserError` whose one-line message names the field and
the fix, so the CLI can print it and exit with code 2.

A *factor* is a hyperparameter varied by the orthogonal array; its name must be one
of :data:`TUNABLE`, which maps it onto the ``model`` or ``training`` field it
overrides in each run. Everything else in ``model``/``training`` is held fixed.

The optional ``refine:`` section describes a Bayesian refinement after the array (see
:class:`RefineConfig`): a search range for some tunable settings, a sampler and a trial
budget. It is validated here with the rest of the study, so a bad range fails before any
training, but it is left out of :meth:`Study.fingerprint`: adding or editing a refinement
keeps the finished array's runs valid. A refinement has its own
:meth:`Study.refine_fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from doe_sr.core.errors import UserError
from doe_sr.core.imports import load_object
from doe_sr.core.objectives import OBJECTIVES, RESPONSE_METRICS
from doe_sr.study.models import ACTIVATIONS, BUILTINS, ModelRun, Resolved, known_names, multiple_of, resolve

OPTIMIZERS = ("adam", "adadelta", "adagrad", "rmsprop", "sgd", "nadam", "adamw")
LOSSES = ("mae", "mse", "charbonnier")

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

#: The ``training`` fields a factor may not vary: replicates already vary the seed.
_FIXED_TRAINING = ("seed",)
#: The ``data`` fields a factor may vary: the patch size only changes what a training
#: step sees; the images, scale and split are the study's and the same for every run.
_TUNABLE_DATA = ("patch_size",)

#: Most factors an array can hold (L64 has 63 columns).
MAX_FACTORS = 63


def setting_path(name: str) -> tuple[str, str]:
    """The (section, field) the factor or setting ``name`` sets in a run's configuration.

    ``name`` is a dotted path (``training.learning_rate``, ``model.num_block``,
    ``data.patch_size``, ``model.name``) or one of today's short names (:data:`TUNABLE`).
    Whether a ``model.*`` setting exists is the model's business (its settings or its
    builder's signature), checked by :class:`Study`. ValueError with the fix otherwise.
    """
    if name in TUNABLE:
        return TUNABLE[name]
    section, dot, field = name.partition(".")
    if dot and field.isidentifier():
        if section == "training" and field in TrainingConfig.model_fields and field not in _FIXED_TRAINING:
            return section, field
        if section == "data" and field in _TUNABLE_DATA:
            return section, field
        if section == "model" and field not in ("builder", "input", "multiple"):
            return section, field
        if section == "training" and field == "seed":
            raise ValueError(f"{_short(name, 40)} cannot be a factor: each replicate already has its own seed "
                             "(training.seed + replicate); use design.replicates")
        if section == "model":
            raise ValueError(f"{_short(name, 40)} cannot be a factor; vary model.name across registered models "
                             "(built-ins or entry points) instead")
    raise ValueError(f"unknown factor {_short(name, 40)}; name a setting path such as training.learning_rate, "
                     f"training.loss, model.<setting>, model.name or data.patch_size, or one of: "
                     f"{', '.join(TUNABLE)}")


_ARRAY_RE = re.compile(r"^L\d+(\(.*\))?$")

#: pyDOE3's arrays have at most 6 levels per column; far more is a pasted list, not a
#: factor (and each level is validated, so a million of them would take minutes).
MAX_LEVELS = 27

#: The largest seed NumPy, TensorFlow and Optuna all accept.
MAX_SEED = 2**31 - 1

#: Upper bounds of what a researcher could mean. Beyond them a value is a typo (an extra
#: zero, a pasted number) that would otherwise train forever or fail every run with an
#: opaque TensorFlow error; a real need for more is a one-line change here.
MAX_EPOCHS = 100_000
MAX_STEPS = 1_000_000
MAX_BATCH = 8192
MAX_PATCH = 4096
MAX_SIDE = 65_536


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value cut to ``limit`` characters, so a pasted megabyte stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    levels: list[Any] = Field(min_length=2, max_length=MAX_LEVELS)
    label: str | None = Field(default=None, max_length=200)  # axis label in plots, e.g. "learning rate"
    unit: str | None = Field(default=None, max_length=50)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        setting_path(v)
        return v

    @field_validator("levels", mode="before")
    @classmethod
    def _scalars(cls, v: Any) -> Any:
        """Levels are numbers, words or true/false: a list, a date or a binary blob as a
        level has no setting to train and no label a report could print."""
        for x in v if isinstance(v, list) else []:
            if not isinstance(x, (bool, int, float, str)):
                raise ValueError(f"level {_short(x)} is a {type(x).__name__}; levels are numbers, words or "
                                 "true/false, e.g. [0.01, 0.001]")
        return v

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
        text = self.label or self.name.rpartition(".")[2].replace("_", " ")
        return f"{text} [{self.unit}]" if self.unit else text


class Design(_Strict):
    """Which orthogonal array, which factors on which columns, how many replicates."""

    array: str = Field(default="L9(3^4)", max_length=100)
    factors: list[Factor] = Field(min_length=1, max_length=MAX_FACTORS)
    replicates: int = Field(default=1, ge=1, le=100)
    columns: list[int] | None = Field(default=None, max_length=MAX_FACTORS)  # 1-based; default: in order

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

    source: str = Field(default="sample", max_length=4096)  # "sample" (scikit-image's bundled images) or a folder of HR images
    scale: Literal[2, 3, 4, 8] = 4
    split: tuple[Annotated[int, Field(le=10_000)], Annotated[int, Field(le=10_000)],
                 Annotated[int, Field(le=10_000)]] = (8, 1, 1)  # train:val:test, by image
    protocol: Literal["split", "div2k"] = "split"  # div2k: official 800 train / 100 valid
    lr_source: str | None = Field(default=None, max_length=4096)  # folder of given LR images (DIV2K X4 layout); default: bicubic
    patch_size: int = Field(default=64, ge=32, le=MAX_PATCH)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    max_side: int | None = Field(default=None, ge=32, le=MAX_SIDE)  # centre-crop larger images (speed)
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


class ModelConfig(BaseModel):
    """The ``model:`` section: which network, and its settings (factors override some per run).

    ``name`` is a registered model (``srnet`` by default, ``rrdbnet``, ``edsr``, or one an
    entry point of the group ``doe_sr.models`` registers); ``builder`` is the user's own
    function instead (``pkg.mod:build`` or ``nets/my_net.py:build``); ``input`` says which
    image a user model takes (``lr`` or ``bicubic``); ``multiple``: the input's sides must
    be a multiple of it (a U-Net's ``2**depth``; SR-NET's is known). Every other key is a
    setting handed to the builder; which ones a model accepts, and their types, are
    checked by :class:`Study` against the model (see :mod:`doe_sr.study.models`).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str | None = Field(default=None, max_length=200)
    builder: str | None = Field(default=None, max_length=4096)
    input: Literal["lr", "bicubic"] | None = None
    multiple: int | None = Field(default=None, ge=1, le=1024)

    @model_validator(mode="after")
    def _settings(self) -> "ModelConfig":
        if self.name is not None and self.builder is not None:
            raise ValueError(f"give model.name (a registered model: {', '.join(known_names())}) or model.builder "
                             "(your own function), not both")
        for key, value in self.settings.items():
            if not key.isidentifier():
                raise ValueError(f"setting {_short(key, 40)} is not a keyword argument name; use letters, digits "
                                 "and underscores")
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise ValueError(f"model.{key}: {_short(value)} is a {type(value).__name__}; a setting is a "
                                 "number, a word or true/false")
        return self

    @property
    def settings(self) -> dict[str, Any]:
        """The settings handed to the builder (every key but name, builder, input, multiple)."""
        return dict(self.model_extra or {})


class TrainingConfig(_Strict):
    """How each run trains (factors override some of these per run)."""

    epochs: int = Field(default=5, ge=1, le=MAX_EPOCHS)
    steps_per_epoch: int = Field(default=100, ge=1, le=MAX_STEPS)
    batch_size: int = Field(default=16, ge=1, le=MAX_BATCH)
    # finite and positive; huge values stay allowed on purpose: a diverging level (the
    # engine's tests use 1e30) must fail as a recorded run, not be refused up front
    learning_rate: float = Field(default=1e-3, gt=0, allow_inf_nan=False)
    optimizer: str = "adam"
    loss: str = "mae"
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    mixed_precision: Literal["auto", "off", "float16", "bfloat16"] = "auto"
    jit_compile: bool = False

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, v: str) -> str:
        return _one_of("optimizer", v, OPTIMIZERS)

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str) -> str:
        """A built-in loss, or the user's ``pkg.mod:fn`` / ``file.py:fn`` (loaded and checked
        by :class:`Study`, which knows the study file's folder)."""
        if ":" in v:
            return v
        if v not in LOSSES:
            raise ValueError(f"unknown loss {v!r}; use one of: {', '.join(LOSSES)}, or your own function "
                             "as losses.py:my_loss (a file next to the study) or my_pkg.losses:my_loss")
        return v


class ResponseConfig(_Strict):
    """The response the Taguchi analysis optimises."""

    # Literal[tuple] is Literal[*tuple]: pydantic checks the leaf's names, and its
    # message lists them ("Input should be 'val_psnr', 'val_ssim', ...").
    metric: Literal[RESPONSE_METRICS] = "val_psnr"  # type: ignore[valid-type]
    objective: Literal[OBJECTIVES] = "larger"  # type: ignore[valid-type]


#: URI schemes MLflow has a tracking store for (``postgresql+psycopg2`` counts as postgresql).
TRACKING_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks",
                    "databricks-uc", "uc")
#: Kernel folders no store can live in (writable as root, yet nothing persists there).
_SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot hold a store: a file, a system folder, or not creatable."""
    try:
        return _folder_problem_of(folder.expanduser().resolve())
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop, no home for "~"
        return f"{_short(str(folder))} cannot be a folder ({getattr(exc, 'strerror', None) or exc})"


def _folder_problem_of(folder: Path) -> str | None:
    if any(folder == s or s in folder.parents for s in _SYSTEM_FOLDERS):
        return f"{folder} is inside a system folder; use a folder of your own such as mlruns"
    if folder.exists():
        return None if folder.is_dir() else f"{folder} is a file, not a folder; use a folder such as mlruns"
    ancestor = next(p for p in folder.parents if p.exists())
    if not ancestor.is_dir():
        return f"{ancestor} is a file, so {folder} cannot be created; use a folder such as mlruns"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{folder} cannot be created: {ancestor} is not writable; use a folder you can write to"
    return None


def tracking_uri_problem(uri: str) -> str | None:
    """Why MLflow could not record to ``uri`` (None when it could), without contacting anything.

    A plain path is a local store folder: it must be a folder, or creatable as one. A URI
    must have a scheme MLflow knows; an http(s) URI must name a host. Whether a server
    answers is found on first contact (see :func:`doe_sr.tracking.store.resolve_uri`).
    """
    from urllib.parse import urlparse

    if "\x00" in uri:
        return "contains a NUL character"
    if "://" not in uri:
        return None if uri.startswith("databricks") else _folder_problem(Path(uri))
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme.split("+")[0] not in TRACKING_SCHEMES:
        return (f"scheme {scheme!r} is not one MLflow records to; use a folder (e.g. mlruns), "
                "http(s)://host:port of an mlflow server, or a database URL (sqlite, postgresql, mysql, mssql)")
    if scheme in ("http", "https"):
        try:
            parsed.port
        except ValueError:
            return f"{uri!r} has an invalid port; write it like http://host:5000"
        if not parsed.hostname:
            return f"{uri!r} names no host; write it like http://host:5000"
    if scheme == "file":
        return _folder_problem(Path(parsed.path or "."))
    return None


def check_tracking_uri(uri: str | None, origin: str = "--tracking-uri") -> None:
    """Refuse an overriding tracking URI (``--tracking-uri``) as the schema refuses
    ``tracking.uri``, before anything creates folders or locks beside it."""
    problem = tracking_uri_problem(uri) if uri is not None else None
    if problem:
        raise UserError(f"{origin} {_short(uri)}: {problem}")


class TrackingConfig(_Strict):
    """Where MLflow records runs: a local folder (SQLite store inside it) or a tracking URI."""

    uri: str = Field(default="mlruns", min_length=1, max_length=2048)
    experiment: str | None = Field(default=None, min_length=1, max_length=200)  # default: the study's name

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        problem = tracking_uri_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class ExecutionConfig(_Strict):
    """The Optuna run engine: storage and crash detection."""

    storage: str | None = Field(default=None, max_length=2048)  # default: sqlite:///<tracking folder>/optuna.db
    heartbeat_interval: int = Field(default=30, ge=1, le=3600)
    grace_period: int = Field(default=120, ge=2, le=7 * 86400)


# -- refine: Bayesian refinement after the array --------------------------------------
#: The most trials one refinement may ask for; more is a typo (each trial trains a network).
MAX_TRIALS = 10_000

#: The words (and true/false) a categorical-only setting takes, for the hint of an error
#: message; the models' own validators remain what decides validity.
_WORDS: dict[str, tuple[Any, ...]] = {"optimizer": OPTIMIZERS, "activation": ACTIVATIONS, "loss": LOSSES,
                                      "residual": (True, False)}


def _yaml_word(value: Any) -> str:
    """A value as a user writes it in YAML (``true``, ``adam``, ``0.001``), for hints."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _number(value: Any) -> Any:
    """A bound or step as a finite int or float.

    Strings are read as numbers because YAML 1.1 reads ``1e-5`` (no dot) as the string
    "1e-5"; refusing it would punish the usual way of writing a learning rate. true/false
    are refused: ``low: yes`` is a slip, not the number 1.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {_yaml_word(value)}; write a number such as 1e-5")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"must be a number, got {_short(value)}; write a number such as 1e-5") \
                    from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}; write a number such as 1e-5")
    if not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got a {type(value).__name__}; write a number such as 1e-5")
    return value


class SearchRange(_Strict):
    """Where the refinement searches one setting: a numeric range or a list of choices.

    Exactly one form: ``{low, high}`` with optional ``log`` or ``step`` (Optuna's
    ``FloatDistribution``/``IntDistribution``), or ``{choices: [...]}`` (its
    ``CategoricalDistribution``). Everything that can be checked without knowing which
    setting the range is for is checked here; whether the bounds suit the setting (an
    integer setting, a learning rate above 0) is checked by :class:`Study`, which knows.
    """

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Any] | None = Field(default=None, min_length=1, max_length=MAX_LEVELS)

    @field_validator("low", "high", "step", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return _number(v)

    @field_validator("choices", mode="before")
    @classmethod
    def _scalars(cls, v: Any) -> Any:
        """Choices are settings to train, like a factor's levels: numbers, words or true/false."""
        for x in v if isinstance(v, list) else []:
            if not isinstance(x, (bool, int, float, str)):
                raise ValueError(f"choice {_short(x)} is a {type(x).__name__}; choices are numbers, words or "
                                 "true/false, e.g. [32, 64, 128]")
        return v

    @field_validator("choices")
    @classmethod
    def _distinct(cls, v: list[Any] | None) -> list[Any] | None:
        labels = [str(x) for x in v or []]
        if len(set(labels)) != len(labels):
            raise ValueError(f"choices must be distinct, got {labels}; list each value once")
        return v

    @model_validator(mode="after")
    def _one_form(self) -> "SearchRange":
        if self.choices is not None:
            extra = [k for k in ("low", "high", "step") if getattr(self, k) is not None]
            extra += ["log"] if self.log else []
            if extra:
                raise ValueError(f"give either choices or a range (low, high), not both; remove {', '.join(extra)} "
                                 "or choices")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high, or choices, e.g. {low: 1.0e-5, high: 1.0e-2, log: true} "
                             "or {choices: [32, 64]}")
        low, high = self.low, self.high
        if low > high:
            raise ValueError(f"low {low} is above high {high}; swap them")
        if low == high:
            raise ValueError(f"low equals high ({low}); use choices: [{low}] to fix the setting, or widen the range")
        if self.log and low <= 0:
            raise ValueError(f"a log range needs low > 0 (got low {low}); use a positive low such as 1e-5 "
                             "or drop log")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0 (got {self.step}); use a positive step such as "
                             f"{1 if isinstance(self.step, int) else 0.1} or drop step")
        if self.step is not None and self.log:
            raise ValueError("step and log together cannot be sampled (Optuna samples a log range or a "
                             "stepped range, not both); drop step or log")
        return self

    @property
    def is_choices(self) -> bool:
        return self.choices is not None


class RefineConfig(_Strict):
    """The ``refine:`` section: a Bayesian search after the array, warm-started from its runs.

    ``space`` maps a :data:`TUNABLE` setting (a factor of the array or another one) to its
    :class:`SearchRange`. ``hold`` says which factors stay at their Taguchi optimum:
    ``auto`` (the non-significant ones, decided by the engine from the analysis),
    ``none``, or a list of factor names. ``seed`` is the sampler's seed; ``None`` means
    ``training.seed`` (resolved by the engine). ``name`` tells two refinements of one
    study apart. Study-level checks (known settings, bounds valid for their setting, held
    factors) live in :class:`Study`, which knows the settings and the array.
    """

    trials: int = Field(default=20, ge=1, le=MAX_TRIALS)
    sampler: Literal["tpe", "gp", "cmaes"] = "tpe"
    space: dict[str, SearchRange] = Field(min_length=1, max_length=MAX_FACTORS)
    hold: Literal["auto", "none"] | list[str] = "auto"
    pruner: Literal["median", "hyperband", "none"] = "median"
    name: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]*)?$", max_length=100)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    #: settings to evaluate before the sampler decides (Optuna's enqueued trials): a setting left
    #: out takes its Taguchi optimum, e.g. try_first: [{learning_rate: 3.0e-4}]
    try_first: list[dict[str, Any]] = Field(default_factory=list, max_length=100)

    @field_validator("hold", mode="before")
    @classmethod
    def _hold(cls, v: Any) -> Any:
        """One clear message instead of pydantic's two (one per member of the union)."""
        if isinstance(v, str) and v in ("auto", "none"):
            return v
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v
        raise ValueError(f"hold {'null' if v is None else _short(v)} is not auto, none or a list of factor names; "
                         "write e.g. hold: auto or hold: [optimizer, activation]")


def _annotation_kind(annotation: Any) -> Literal["float", "int", "categorical"]:
    if annotation is float:
        return "float"
    if annotation is int:
        return "int"
    return "categorical"


def setting_kind(name: str) -> Literal["float", "int", "categorical"]:
    """How a range over the ``training``/``data`` setting or short name ``name`` is sampled,
    from its field's type.

    Read from the pydantic annotations of :class:`TrainingConfig` (and of SR-NET's settings
    for today's short model names), so a new setting gets the right kind without a second
    list to keep in step: ``float`` fields take float ranges, ``int`` fields integer
    ranges, and the rest (words, true/false) only choices. A model setting of any model
    is :meth:`Study.setting_kind`'s, which knows the study's models.
    """
    section, field = setting_path(name)
    if section == "training":
        return _annotation_kind(TrainingConfig.model_fields[field].annotation)
    if section == "data":
        return "int"
    from doe_sr.study.models import SrnetSettings

    if field in SrnetSettings.model_fields:
        return _annotation_kind(SrnetSettings.model_fields[field].annotation)
    return "categorical"


class SettingError(ValueError):
    """A setting of one run that its model or section refuses (the message names it)."""


_PATCH = TypeAdapter(Annotated[int, Field(ge=32, le=MAX_PATCH)])


class Study(_Strict):
    """A whole study file.

    ``base_dir`` (the study file's folder, given as validation context by
    :func:`load_study`) is where a user's ``model.builder`` or loss file is looked up.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = Field(default="", max_length=10_000)
    design: Design
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    response: ResponseConfig = ResponseConfig()
    tracking: TrackingConfig = TrackingConfig()
    execution: ExecutionConfig = ExecutionConfig()
    refine: RefineConfig | None = None  # not part of fingerprint(): see refine_fingerprint()

    _base_dir: str | None = PrivateAttr(default=None)
    _resolved: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> "Study":
        base = (info.context or {}).get("base_dir") if info is not None else None
        self._base_dir = None if base is None else str(base)
        self._check_models()
        self._check_losses()
        for factor in self.design.factors:
            self._levels_differ(factor)
        self._check_patches()
        self._refine_consistent()
        return self

    @property
    def base_dir(self) -> str | None:
        """The folder a user's builder or loss file is relative to (the study file's)."""
        return self._base_dir

    # -- models ------------------------------------------------------------------
    def _resolve(self, name: str | None, builder: str | None) -> Resolved:
        key = (name, builder)
        if key not in self._resolved:
            try:
                self._resolved[key] = resolve(name, builder, self._base_dir)
            except UserError as exc:
                raise ValueError(str(exc)) from None
        return self._resolved[key]

    def model_names(self) -> list[str | None]:
        """The models this study trains: ``model.name``'s levels when it is a factor, else one."""
        if "model.name" in self.factor_names:
            return [str(level) for level in self.factor("model.name").levels]
        return [self.model.name]

    def _check_models(self) -> None:
        """Each model resolves; each setting and ``model.*`` factor is one that some model of
        the study takes (every model, when the study trains one)."""
        if self.model.builder is not None and "model.name" in self.factor_names:
            raise ValueError("model.name is a factor, so the study trains registered models; drop model.builder, "
                             "or register your builder under a name (entry point group doe_sr.models)")
        models = [self._resolve(n, self.model.builder) for n in self.model_names()]
        if self.model.input is not None:
            for m in models:
                if m.name in BUILTINS and m.input != self.model.input:
                    raise ValueError(f"model.input: {m.name} takes the {m.input} image, not {self.model.input}; "
                                     "drop model.input (a built-in declares its own)")
        for m in models:
            if m.input is None and self.model.input is None:
                raise ValueError(f"model.input: say which image {m.builder} takes: input: lr (the LR image; it "
                                 "upscales by scale itself) or input: bicubic (the bicubic-upscaled image)")
        wanted = [(f"model.{k}", k) for k in self.model.settings]
        wanted += [(f.name, setting_path(f.name)[1]) for f in self.design.factors
                   if setting_path(f.name)[0] == "model" and setting_path(f.name)[1] != "name"]
        for where, key in wanted:
            takers = [m for m in models if m.accepts(key)]
            if len(models) == 1 and not takers:
                m = models[0]
                if m.settings is not None:
                    raise ValueError(f"{where}: model {m.name} takes no setting {key!r}; its settings are: "
                                     f"{', '.join(m.accepted())}")
                raise ValueError(f"{where}: {m.builder} does not accept a {key!r} argument; it takes: "
                                 f"{', '.join(m.accepted()) or 'only scale'} (add {key} to its signature, or "
                                 "remove it)")
            if not takers:
                raise ValueError(f"{where}: none of the study's models ({', '.join(m.name for m in models)}) "
                                 f"takes a setting {key!r}; remove it or check its spelling")
        first = {setting_path(f.name)[1]: f.levels[0] for f in self.design.factors
                 if setting_path(f.name)[0] == "model" and setting_path(f.name)[1] != "name"}
        for m in models:  # the fixed settings, with a factor's first level where a factor sets one
            settings = {k: v for k, v in self.model.settings.items() if k not in first}
            settings = {k: v for k, v in {**settings, **first}.items() if len(models) == 1 or m.accepts(k)}
            m.check(settings, "")

    def _model_run(self, cfg: ModelConfig) -> ModelRun:
        """The resolved network of one run (raises SettingError naming a bad setting)."""
        try:
            resolved = self._resolve(cfg.name, cfg.builder)
        except ValueError as exc:
            raise SettingError(str(exc)) from None
        settings = cfg.settings
        if "model.name" in self.factor_names:  # each model takes the settings it knows
            settings = {k: v for k, v in settings.items() if resolved.accepts(k)}
        try:
            checked = resolved.check(settings, "")
        except ValueError as exc:
            raise SettingError(str(exc)) from None
        takes_scale = True if resolved.settings is not None else resolved.signature.accepts("scale")
        return ModelRun(name=resolved.name, builder=resolved.builder, input=cfg.input or resolved.input,
                        multiple=multiple_of(resolved, checked, cfg.multiple), settings=checked,
                        base_dir=self._base_dir, takes_scale=takes_scale)

    def _check_losses(self) -> None:
        losses = {self.training.loss}
        for f in self.design.factors:
            if setting_path(f.name) == ("training", "loss"):
                losses.update(str(level) for level in f.levels)
        for loss in sorted(losses):
            if ":" in loss:
                try:
                    fn = load_object(loss, base_dir=self._base_dir, what="training.loss")
                except UserError as exc:
                    raise ValueError(str(exc)) from None
                if not callable(fn):
                    raise ValueError(f"training.loss: {loss} is not a function; name a function "
                                     "loss(y_true, y_pred) that returns the loss")

    def _check_patches(self) -> None:
        """Every run's patch fits its network: a multiple of SR-NET's ``2**depth`` (of the
        model's ``multiple``), and for an LR-input model a multiple of the scale whose LR
        side is a multiple of ``multiple``. Checked over every combination of the factors
        that change the network or the patch, so a bad run is found before the first."""
        import itertools

        relevant = [f for f in self.design.factors if setting_path(f.name)[0] in ("model", "data")]
        combos = itertools.product(*[[(f.name, level) for level in f.levels] for f in relevant])
        for combo in itertools.islice(combos, 20_000):
            levels = dict(combo)
            cfg = self.run_config(levels)
            patch, run, scale = cfg.patch_size, cfg.model, self.data.scale
            where = "" if not levels else " (run with " + ", ".join(f"{k}={v}" for k, v in levels.items()) + ")"
            if run.input == "bicubic" and patch % run.multiple:
                why = "2**model.depth" if run.name == "srnet" else "model.multiple"
                raise ValueError(f"data.patch_size {patch} must be a multiple of {run.multiple} ({why}){where}; "
                                 f"use e.g. {max(run.multiple, patch // run.multiple * run.multiple)}")
            if run.input == "lr":
                if patch % scale:
                    raise ValueError(f"data.patch_size {patch} must be a multiple of the scale {scale} for "
                                     f"{run.name}, which takes the LR image{where}; use e.g. "
                                     f"{max(scale, patch // scale * scale)}")
                step = scale * run.multiple
                if patch % step:
                    raise ValueError(f"data.patch_size {patch} must be a multiple of {step} (scale {scale} x "
                                     f"model.multiple {run.multiple}){where}; use e.g. {max(step, patch // step * step)}")

    # -- settings ----------------------------------------------------------------
    def _model_context(self, name: str) -> dict[str, Any]:
        """For a model setting in a study across models: a ``model.name`` level whose model
        takes it, so its values are read by a model that knows them."""
        section, field = setting_path(name)
        # A builder's setting with no default may be given by a factor only: the other model
        # factors enter at their first level, so one level is read with all it needs.
        context = {f.name: f.levels[0] for f in self.design.factors
                   if f.name != name and setting_path(f.name)[0] == "model" and setting_path(f.name)[1] != "name"}
        if section != "model" or field == "name" or "model.name" not in self.factor_names:
            return context
        for level in self.factor("model.name").levels:
            if self._resolve(str(level), None).accepts(field):
                return {**context, "model.name": level}
        return context

    def setting_value(self, name: str, raw: Any = ..., *, context: dict[str, Any] | None = None) -> Any:
        """``raw`` as the setting ``name`` reads it in a run (YAML's ``"1e-3"`` is 0.001), or
        the study's own value of it when ``raw`` is left out. SettingError if refused."""
        section, field = setting_path(name)
        levels = dict(context if context is not None else self._model_context(name))
        if raw is not ...:
            levels[name] = raw
        return self.run_config(levels).value(section, field)

    def setting_kind(self, name: str) -> Literal["float", "int", "categorical"]:
        """:func:`setting_kind` for any setting, model settings of any model included: a
        built-in's from its settings' types, a user builder's from its annotation or, without
        one, from the type of the study's value."""
        section, field = setting_path(name)
        if section != "model":
            return setting_kind(name)
        if field == "name":
            return "categorical"
        ctx = self._model_context(name)
        model_name = ctx.get("model.name", self.model.name)
        resolved = self._resolve(None if model_name is None else str(model_name), self.model.builder)
        if resolved.settings is not None:
            fields = resolved.settings.model_fields
            return _annotation_kind(fields[field].annotation) if field in fields else "categorical"
        ann = resolved.signature.params.get(field)
        if ann is not None:
            return _annotation_kind(ann)
        value = self.model.settings.get(field)
        if isinstance(value, bool) or value is None:
            return "categorical"
        return "float" if isinstance(value, float) else "int" if isinstance(value, int) else "categorical"

    def _levels_differ(self, factor: Factor) -> None:
        """Every level must be valid for its setting and give a setting of its own.

        Labels that differ can still be one value once the field reads them: YAML 1.1
        reads ``1e-3`` as the string "1e-3", which the float field makes 0.001, so
        ``[0.001, 1e-3]`` would train the same settings twice under two names. So are
        ``[8, 8.0]`` and ``[true, 'yes']``. Comparing the validated values finds them all.
        """
        seen: dict[Any, Any] = {}
        for level in factor.levels:
            try:
                value = self.setting_value(factor.name, level)
            except (ValidationError, SettingError) as exc:
                msg = _setting_message(exc)
                raise ValueError(f"factor {factor.name!r} level {_short(level)}: {msg}") from None
            key = repr(value)
            if key in seen:
                raise ValueError(
                    f"factor {factor.name!r}: levels {_short(seen[key])} and {_short(level)} are the same "
                    f"value ({value!r}) written twice, so two levels would train the same settings; "
                    "give each level a different value")
            seen[key] = level

    def _refine_consistent(self) -> None:
        """The refine section against the settings and the array; every message starts
        with the path of the field (``refine.space.<name>:``, ``refine.hold:``), since a
        study-level error has no location of its own."""
        if self.refine is None:
            return
        for name, rng in self.refine.space.items():
            self._check_range(name, rng)
        hold = self.refine.hold
        if isinstance(hold, list):
            factors = self.factor_names
            for name in hold:
                if name not in factors:
                    raise ValueError(f"refine.hold: {name!r} is not a factor of the array; hold one of: "
                                     f"{', '.join(factors)} (or write hold: auto or hold: none)")
                if hold.count(name) > 1:
                    raise ValueError(f"refine.hold: {name!r} appears twice; list each factor once")
                if name in self.refine.space:
                    raise ValueError(f"refine.hold: {name!r} is held and also in refine.space; hold it or search "
                                     "it, not both")
        for k, point in enumerate(self.refine.try_first):
            for name, raw in point.items():
                try:
                    setting_path(name)
                except ValueError as exc:
                    raise ValueError(f"refine.try_first[{k}]: {exc}") from None
                self._setting_value(name, raw, f"refine.try_first[{k}]: {name} {_short(raw)}")

    def _check_range(self, name: str, rng: SearchRange) -> None:
        where = f"refine.space.{_short(name, 40) if not name.replace('.', '_').isidentifier() else name}"
        try:
            setting_path(name)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        kind = self.setting_kind(name)
        if not rng.is_choices:
            if kind == "categorical":
                words = self.factor(name).levels if name in self.factor_names else _WORDS.get(name, ())
                hint = f"; write choices: [{', '.join(_yaml_word(w) for w in words)}]" if words else \
                    "; write choices: [...]"
                what = "true or false" if words and all(isinstance(w, bool) for w in words) else "a choice of words"
                raise ValueError(f"{where}: {name} is {what}, not a range{hint}")
            if kind == "int":
                for key in ("low", "high", "step"):
                    value = getattr(rng, key)
                    if value is not None and not (isinstance(value, int) or value.is_integer()):
                        raise ValueError(f"{where}: {key} {value} is not a whole number; {name} is an integer "
                                         f"setting, so use whole low, high and step, or choices")
        values = rng.choices if rng.is_choices else [rng.low, rng.high]
        labels = ["choice"] * len(values) if rng.is_choices else ["low", "high"]
        seen: dict[Any, Any] = {}
        for label, raw in zip(labels, values):
            value = self._setting_value(name, raw, f"{where}: {label} {_short(raw)}")
            if repr(value) in seen:
                raise ValueError(f"{where}: choices {_short(seen[repr(value)])} and {_short(raw)} are the same value "
                                 f"({value!r}) written twice; list each value once")
            seen[repr(value)] = raw
        if not rng.is_choices and rng.step is not None:
            self._whole_steps(where, kind, rng)

    def _setting_value(self, name: str, raw: Any, what: str) -> Any:
        """``raw`` as the setting ``name`` reads it, or the setting's own message; as
        :meth:`_levels_differ` does, so a range can hold nothing a factor could not."""
        try:
            return self.setting_value(name, raw)
        except (ValidationError, SettingError) as exc:
            raise ValueError(f"{what} is not a valid {name} value ({_setting_message(exc)})") from None

    @staticmethod
    def _whole_steps(where: str, kind: str, rng: SearchRange) -> None:
        """A stepped range must end on a step: Optuna silently lowers ``high`` otherwise,
        so the study file would promise a value that is never tried."""
        low, high, step = rng.low, rng.high, rng.step
        if step > high - low:
            raise ValueError(f"{where}: step {_short(step)} is wider than the range {low}..{high}; use a step "
                             "that fits in it, or choices")
        if kind == "int":
            low, high, step = int(low), int(high), int(step)
            n = (high - low) // step
            whole = (high - low) % step == 0
        else:
            try:
                ratio = (high - low) / step
            except OverflowError:  # a step or bound of hundreds of digits
                ratio = math.inf
            if not math.isfinite(ratio):
                raise ValueError(f"{where}: step {_short(step)} is too small for the range {low}..{high}; "
                                 "use a larger step")
            n = math.floor(ratio + 1e-9)
            whole = abs(ratio - round(ratio)) <= 1e-9 * max(1.0, abs(ratio))
        if not whole:
            raise ValueError(f"{where}: the range {low}..{high} is not a whole number of steps of {_short(step)}; "
                             f"use high {_short(low + n * step if kind == 'int' else float(f'{low + n * step:.12g}'))} "
                             "or another step")

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
        """The settings of one run: the study's fixed settings with ``factor_values`` applied,
        its network resolved (SettingError or ValidationError when a value is refused)."""
        sections: dict[str, dict[str, Any]] = {
            "model": self.model.model_dump(exclude_none=True), "training": self.training.model_dump(),
            "data": {"patch_size": self.data.patch_size}}
        for name, value in factor_values.items():
            section, field = setting_path(name)
            sections[section][field] = value
        training = TrainingConfig(**sections["training"])
        model = self._model_run(ModelConfig(**sections["model"]))
        try:
            patch = _PATCH.validate_python(sections["data"]["patch_size"])
        except ValidationError as exc:
            raise SettingError(f"data.patch_size: {_setting_message(exc)}") from None
        return RunConfig(model=model, training=training, patch_size=patch, base_dir=self._base_dir)

    def model_params(self) -> dict[str, Any]:
        """The ``model.*`` params of the study's parent run: its network as the runs see it
        when ``model.name`` is not a factor (SR-NET's with every default, as always), else
        the ``model:`` section as written."""
        if "model.name" in self.factor_names:
            return self.model.model_dump(mode="json", exclude_none=True)
        try:
            return self.run_config({}).model.params()
        except SettingError:  # a builder setting that only factors give
            return self.model.model_dump(mode="json", exclude_none=True)

    def fingerprint(self) -> str:
        """Hash of what defines the runs; a stored study with another fingerprint is another study.

        Where the data live (``source``, ``lr_source``) and how they are cached are left
        out: workers on other machines mount the same data at other paths, and a moved
        folder is still the same study. The model enters as :meth:`model_params` reads
        it, so an SR-NET study keeps the fingerprint it had before models were pluggable.
        """
        data = self.data.model_dump(mode="json", exclude={"source", "lr_source", "cache"})
        key = {"design": self.design.model_dump(mode="json"), "data": data,
               "model": self.model_params(), "training": self.training.model_dump(mode="json")}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # -- refine ------------------------------------------------------------------
    def _refine(self) -> RefineConfig:
        if self.refine is None:
            raise UserError(f"study {self.name!r} has no refine: section; add one, e.g. "
                            "refine: {space: {learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}}}")
        return self.refine

    def refine_kind(self, name: str) -> Literal["float", "int", "categorical"]:
        """How the engine samples ``name`` of ``refine.space``: a float or integer range,
        or a choice (any ``choices:`` list, and every word or true/false setting).
        KeyError if ``name`` is not in the space."""
        rng = self._refine().space[name]
        return "categorical" if rng.is_choices else self.setting_kind(name)

    def refine_param(self, name: str) -> dict[str, Any]:
        """The search range of ``name`` in the types its setting reads, for Optuna.

        ``{"choices": [...]}`` for a categorical (each choice as the setting reads it: the
        string "1e-3" becomes 0.001, ``yes`` becomes True), else ``{"low", "high", "log",
        "step"}`` with ints for an integer setting (``1e1`` becomes 10) and floats for a
        float setting; ``step`` may be None. These are the arguments of Optuna's
        ``CategoricalDistribution``/``IntDistribution``/``FloatDistribution``
        (``IntDistribution`` wants ``step=1`` where this says None). KeyError if ``name``
        is not in the space.
        """
        rng = self._refine().space[name]
        if rng.is_choices:
            return {"choices": [self.setting_value(name, c) for c in rng.choices]}
        cast = int if self.setting_kind(name) == "int" else float
        return {"low": cast(rng.low), "high": cast(rng.high), "log": rng.log,
                "step": None if rng.step is None else cast(rng.step)}

    def refine_fingerprint(self) -> str:
        """Hash of what defines a refinement (16 hex digits); another hash is another refinement.

        ``trials`` is left out: raising the budget extends the same refinement, whose
        finished trials stay valid. The space is hashed as :meth:`refine_param` reads it,
        so ``high: 128`` and ``high: 1.28e2`` of an integer setting are one refinement.
        The study's own :meth:`fingerprint` is not included; the engine keys a refinement
        by study and this hash together.
        """
        refine = self._refine()
        key = refine.model_dump(mode="json", exclude={"trials", "space"})
        key["space"] = {name: {"kind": self.refine_kind(name), **self.refine_param(name)} for name in refine.space}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class RunConfig(_Strict):
    """The effective settings of one run: its network, its training, its patch size.

    ``base_dir`` is the study file's folder, where a user's loss file is found."""

    model: ModelRun
    training: TrainingConfig
    patch_size: int = 64
    base_dir: str | None = None

    def value(self, section: str, field: str) -> Any:
        """One setting of the run by its :func:`setting_path`."""
        if section == "training":
            return getattr(self.training, field)
        if section == "data":
            return self.patch_size
        if field == "name":
            return self.model.name
        return self.model.settings.get(field)


def _setting_message(exc: Exception) -> str:
    """The reason a setting was refused, without the ``model.<name>:`` its own message
    starts with (the caller names the setting already)."""
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return _one_line(err["msg"].removeprefix("Value error, "))
    return _one_line(re.sub(r"^model\.\w+: ", "", str(exc)))


def _format_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(p if isinstance(p, str) and p.isidentifier() else
                   (str(p) if isinstance(p, int) else _short(p, 40)) for p in err["loc"])
    msg = _one_line(err["msg"].removeprefix("Value error, "))
    if err["type"] == "extra_forbidden":
        msg = "unknown key; remove it or check its spelling (see studies/quickstart.yaml)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "invalid_key":
        msg = "a key must be a word, not a number or null; check the spelling and indentation"
    return f"{loc}: {msg}" if loc else msg


def parse_study(data: Any, *, origin: str = "study", base_dir: str | Path | None = None) -> Study:
    """Validate a parsed YAML document (or a dict built in Python); raise UserError with a
    one-line message. ``base_dir``: where a user's builder or loss file is looked up (the
    study file's folder; the current folder by default)."""
    if not isinstance(data, dict):
        raise UserError(f"{origin}: a study file must be a YAML mapping with keys name, design, data, ...")
    try:
        return Study.model_validate(data, context={"base_dir": str(Path(base_dir or ".").resolve())})
    except ValidationError as exc:
        raise UserError(f"{origin}: {_format_error(exc)}") from None


#: A study file is a page of YAML; a megabyte is a pasted blob or the wrong file.
MAX_FILE_BYTES = 1 << 20
#: Nesting deeper than this is no study (which nests 5 levels) and would exhaust
#: Python's recursion limit in the YAML composer.
MAX_DEPTH = 32
#: Nodes of the document with every alias expanded: a "billion laughs" file of a few
#: hundred bytes expands to 10**9 nodes when validated.
MAX_NODES = 100_000


class _StudyYAMLError(yaml.YAMLError):
    """A document that parses but must not be loaded (duplicate key, too deep, too large)."""

    def __init__(self, problem: str, mark=None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class StudyLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the limits a study file needs.

    Why not ``yaml.safe_load``: it keeps the last of two equal keys (a study would then
    silently run something other than what its author reads at the top), recurses once
    per nesting level (``RecursionError`` on ``[[[[...]]]]``) and expands aliases without
    bound. Here duplicate keys are refused, nesting is bounded while composing, and the
    alias-expanded size is bounded before anything is constructed.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _StudyYAMLError(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # 2020-13-45, !!int abc, a 5000-digit number
            raise _StudyYAMLError(f"{_short(node.value) if isinstance(node, yaml.ScalarNode) else 'a value'} "
                                  f"is not a valid {node.tag.rsplit(':', 1)[-1]} ({_short(str(exc), 80)})",
                                  node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *base' then overriding a key is what merging is for
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # unhashable: the base class says so
            if first is not key_node.start_mark:
                raise _StudyYAMLError(f"key {_short(key)} appears twice (first on line {first.line + 1}); "
                                      "keep one of them", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return self.construct_document(node)


def _expanded_size(root) -> int:
    """Nodes of ``root`` with aliases expanded, refusing more than MAX_NODES or a cycle.

    Iterative with memoised sizes (an alias is the same node object), so a bomb is
    measured in time linear in its text, not in its expansion.
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = [] if isinstance(node, yaml.ScalarNode) else (
            [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else list(node.value))
        if done:
            open_.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_NODES:
                raise _StudyYAMLError(f"expands to more than {MAX_NODES} nodes through its aliases "
                                      "(a YAML bomb?); write the study out without nested aliases",
                                      node.start_mark)
            continue
        if key in sizes:
            continue
        if key in open_:
            raise _StudyYAMLError("an alias refers to the node that contains it (a recursive structure)",
                              node.start_mark)
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _decode(raw: bytes, path: Path) -> str:
    """The text of a study file: UTF-8, with or without a byte-order mark.

    Other encodings are refused rather than guessed: Windows editors save "Unicode" as
    UTF-16, whose bytes YAML would read as junk characters.
    """
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"{path} is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        "save it as UTF-8") from None


def _read(path: Path) -> str:
    if path.is_dir():
        raise UserError(f"study file {path} is a folder; pass the path of a YAML study inside it")
    if not path.is_file():
        raise UserError(f"study file {path} not found; pass the path of a YAML study such as studies/quickstart.yaml")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot read study file {path} ({exc.strerror or exc}); check its permissions") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UserError(f"study file {path} is larger than {MAX_FILE_BYTES >> 20} MiB; a study is a page of YAML, "
                        "check that this is the right file")
    return _decode(raw, path)


def load_yaml(text: str) -> Any:
    """Parse one YAML document with :class:`StudyLoader` (raises ``yaml.YAMLError``)."""
    loader = StudyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_study(path: str | Path) -> Study:
    """Read and validate a study file."""
    path = Path(path)
    text = _read(path)
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}:{where}: malformed YAML ({_one_line(problem)}); fix the syntax") from None
    return parse_study(data, origin=str(path), base_dir=path.resolve().parent)


def _one_line(text: str, limit: int = 300) -> str:
    """A message fragment on one line: a newline in user input must not split the message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
