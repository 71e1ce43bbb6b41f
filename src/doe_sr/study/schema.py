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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from doe_sr.core.errors import UserError
from doe_sr.core.objectives import OBJECTIVES, RESPONSE_METRICS

OPTIMIZERS = ("adam", "adadelta", "adagrad", "rmsprop", "sgd", "nadam", "adamw")
ACTIVATIONS = ("relu", "elu", "tanh", "leaky_relu", "selu", "gelu", "swish", "sigmoid")
LOSSES = ("mae", "mse")

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
        return _one_of("factor", v, TUNABLE)

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
        text = self.label or self.name.replace("_", " ")
        return f"{text} [{self.unit}]" if self.unit else text


class Design(_Strict):
    """Which orthogonal array, which factors on which columns, how many replicates."""

    array: str = Field(default="L9(3^4)", max_length=100)
    factors: list[Factor] = Field(min_length=1, max_length=len(TUNABLE))
    replicates: int = Field(default=1, ge=1, le=100)
    columns: list[int] | None = Field(default=None, max_length=len(TUNABLE))  # 1-based; default: in order

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


class ModelConfig(_Strict):
    """SR-NET's fixed options (factors override some of them per run)."""

    name: Literal["srnet"] = "srnet"
    filters: int = Field(default=64, ge=1, le=1024)
    activation: str = "relu"
    kernel_size: int = Field(default=3, ge=1, le=9)
    depth: int = Field(default=5, ge=1, le=7)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    residual: bool = True  # add the bicubic input to the output (VDSR-style global residual)
    head_width: int | None = Field(default=None, ge=1, le=1024)  # channels of the last up block; None = filters, 3 = seed

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        return _one_of("activation", v, ACTIVATIONS)


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
        return _one_of("loss", v, LOSSES)


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
    space: dict[str, SearchRange] = Field(min_length=1, max_length=len(TUNABLE))
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


def setting_kind(name: str) -> Literal["float", "int", "categorical"]:
    """How a range over the :data:`TUNABLE` setting ``name`` is sampled, from its field's type.

    Read from the pydantic annotations of :class:`ModelConfig`/:class:`TrainingConfig`, so
    a new tunable setting gets the right kind without a second list to keep in step:
    ``float`` fields take float ranges, ``int`` fields integer ranges, and the rest (words,
    true/false) only choices.
    """
    section, field = TUNABLE[name]
    annotation = (ModelConfig if section == "model" else TrainingConfig).model_fields[field].annotation
    if annotation is float:
        return "float"
    if annotation is int:
        return "int"
    return "categorical"


class Study(_Strict):
    """A whole study file."""

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

    @model_validator(mode="after")
    def _consistent(self) -> "Study":
        multiple = 2**self.model.depth
        if self.data.patch_size % multiple:
            raise ValueError(
                f"data.patch_size {self.data.patch_size} must be a multiple of {multiple} "
                f"(2**model.depth); use e.g. {max(multiple, self.data.patch_size // multiple * multiple)}"
            )
        for factor in self.design.factors:
            self._levels_differ(factor)
        return self

    def _levels_differ(self, factor: Factor) -> None:
        """Every level must be valid for its field and give a setting of its own.

        Labels that differ can still be one value once the field reads them: YAML 1.1
        reads ``1e-3`` as the string "1e-3", which the float field makes 0.001, so
        ``[0.001, 1e-3]`` would train the same settings twice under two names. So are
        ``[8, 8.0]`` and ``[true, 'yes']``. Comparing the validated values finds them all.
        """
        section, field = TUNABLE[factor.name]
        seen: dict[Any, Any] = {}
        for level in factor.levels:
            try:
                value = getattr(getattr(self.run_config({factor.name: level}), section), field)
            except ValidationError as exc:
                err = exc.errors()[0]
                raise ValueError(f"factor {factor.name!r} level {_short(level)}: {err['msg']}") from None
            if value in seen:
                raise ValueError(
                    f"factor {factor.name!r}: levels {_short(seen[value])} and {_short(level)} are the same "
                    f"value ({value!r}) written twice, so two levels would train the same settings; "
                    "give each level a different value")
            seen[value] = level

    @model_validator(mode="after")
    def _refine_consistent(self) -> "Study":
        """The refine section against the settings and the array; every message starts
        with the path of the field (``refine.space.<name>:``, ``refine.hold:``), since a
        study-level error has no location of its own."""
        if self.refine is None:
            return self
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
                if name not in TUNABLE:
                    raise ValueError(f"refine.try_first[{k}]: unknown setting {_short(name, 40)}; "
                                     f"use one of: {', '.join(TUNABLE)}")
                self._setting_value(name, raw, f"refine.try_first[{k}]: {name} {_short(raw)}")
        return self

    def _check_range(self, name: str, rng: SearchRange) -> None:
        where = f"refine.space.{_short(name, 40) if not name.isidentifier() else name}"
        if name not in TUNABLE:
            raise ValueError(f"{where}: unknown factor or setting {_short(name, 40)}; "
                             f"use one of: {', '.join(TUNABLE)}")
        kind = setting_kind(name)
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
            if value in seen:
                raise ValueError(f"{where}: choices {_short(seen[value])} and {_short(raw)} are the same value "
                                 f"({value!r}) written twice; list each value once")
            seen[value] = raw
        if not rng.is_choices and rng.step is not None:
            self._whole_steps(where, kind, rng)

    def _setting_value(self, name: str, raw: Any, what: str) -> Any:
        """``raw`` as the setting ``name`` reads it, or the setting's own message; as
        :meth:`_levels_differ` does, so a range can hold nothing a factor could not."""
        section, field = TUNABLE[name]
        try:
            return getattr(getattr(self.run_config({name: raw}), section), field)
        except ValidationError as exc:
            err = exc.errors()[0]
            msg = err["msg"].removeprefix("Value error, ")
            raise ValueError(f"{what} is not a valid {name} value ({msg})") from None

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
        return "categorical" if rng.is_choices else setting_kind(name)

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
        section, field = TUNABLE[name]
        if rng.is_choices:
            return {"choices": [getattr(getattr(self.run_config({name: c}), section), field) for c in rng.choices]}
        cast = int if setting_kind(name) == "int" else float
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
    """The effective settings of one array run."""

    model: ModelConfig
    training: TrainingConfig


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


def parse_study(data: Any, *, origin: str = "study") -> Study:
    """Validate a parsed YAML document; raise UserError with a one-line message."""
    if not isinstance(data, dict):
        raise UserError(f"{origin}: a study file must be a YAML mapping with keys name, design, data, ...")
    try:
        return Study.model_validate(data)
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
    return parse_study(data, origin=str(path))


def _one_line(text: str, limit: int = 300) -> str:
    """A message fragment on one line: a newline in user input must not split the message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
