"""Which networks a study can train: the built-ins, entry points and the user's own builders.

A model is a *builder*: a function that takes ``scale`` and the model's settings as
keyword arguments and returns a Keras model. The study file names one:

* a built-in by ``model.name``: ``srnet`` (the seed's U-Net, takes the bicubic-upscaled
  image), ``rrdbnet`` (ESRGAN's generator) or ``edsr`` (EDSR-baseline), both of which
  take the LR image and upscale it themselves;
* a name another package registers through the entry-point group ``doe_sr.models``;
* the user's own function, ``model.builder: my_pkg.nets:build`` or
  ``model.builder: nets/my_net.py:build`` (a file next to the study file).

Each model declares its *input*: ``lr`` (post-upsampling: the network sees the LR image
and outputs ``scale`` times its size) or ``bicubic`` (pre-upsampling: the network sees
the bicubic-upscaled image and outputs an image of the same size). The data pipeline,
validation, test, ``evaluate``, ``compare`` and ``upscale`` follow it. A built-in
declares it here; a user model says it in the study (``model.input``) or as an
attribute of its builder (``build.model_input = "lr"``).

Why the settings are checked here, without Keras: the whole study is validated before
the first run. A built-in's settings are a pydantic model (types and ranges); a user
builder's are read from its signature (a setting it does not accept is an error naming
it; an annotated parameter checks its values' type). Building the network and checking
its output shape on a dummy input needs Keras and happens in
:func:`doe_sr.sr.models.registry.check_models` before the first run trains.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from doe_sr.core.errors import UserError
from doe_sr.core.imports import is_file_spec, load_object, resolve_file

INPUTS = ("lr", "bicubic")
ACTIVATIONS = ("relu", "elu", "tanh", "leaky_relu", "selu", "gelu", "swish", "sigmoid")
#: the entry-point group through which a package registers models by name
ENTRY_POINT_GROUP = "doe_sr.models"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SrnetSettings(_Settings):
    """SR-NET (:func:`doe_sr.sr.models.srnet.build_srnet`)."""

    filters: int = Field(default=64, ge=1, le=1024)
    activation: str = "relu"
    kernel_size: int = Field(default=3, ge=1, le=9)
    depth: int = Field(default=5, ge=1, le=7)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    residual: bool = True  # add the bicubic input to the output (VDSR-style global residual)
    head_width: int | None = Field(default=None, ge=1, le=1024)  # channels of the last up block; None = filters

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        if v not in ACTIVATIONS:
            raise ValueError(f"unknown activation {v!r}; use one of: {', '.join(ACTIVATIONS)}")
        return v


class RrdbnetSettings(_Settings):
    """ESRGAN's RRDBNet (:func:`doe_sr.sr.models.esrgan.build_rrdbnet`); ESRGAN's sizes by default."""

    num_block: int = Field(default=23, ge=1, le=100)
    num_feat: int = Field(default=64, ge=1, le=1024)
    num_grow_ch: int = Field(default=32, ge=1, le=1024)


class EdsrSettings(_Settings):
    """EDSR (:func:`doe_sr.sr.models.edsr.build_edsr`); EDSR-baseline's sizes by default."""

    num_block: int = Field(default=16, ge=1, le=256)
    num_feat: int = Field(default=64, ge=1, le=1024)
    res_scale: float = Field(default=1.0, gt=0.0, le=1.0)


@dataclass(frozen=True)
class Builtin:
    builder: str
    input: Literal["lr", "bicubic"]
    settings: type[_Settings]


BUILTINS: dict[str, Builtin] = {
    "srnet": Builtin("doe_sr.sr.models.srnet:build_srnet", "bicubic", SrnetSettings),
    "rrdbnet": Builtin("doe_sr.sr.models.esrgan:build_rrdbnet", "lr", RrdbnetSettings),
    "edsr": Builtin("doe_sr.sr.models.edsr:build_edsr", "lr", EdsrSettings),
}


class ModelRun(BaseModel):
    """The network of one run, resolved: what to call, with which keyword arguments.

    ``builder`` is a ``module:function`` or ``file.py:function`` spec (a file relative to
    ``base_dir``); ``settings`` are the keyword arguments besides ``scale``;
    ``multiple``: the input's sides must be a multiple of it (SR-NET's ``2**depth``),
    so whole images are padded to it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    builder: str
    input: Literal["lr", "bicubic"]
    multiple: int = 1
    settings: dict[str, Any] = Field(default_factory=dict)
    base_dir: str | None = None
    takes_scale: bool = True

    def __getattr__(self, item: str) -> Any:
        """A setting read as an attribute (``run.model.filters``), as the ``model:`` section's."""
        try:
            return super().__getattr__(item)
        except AttributeError:
            settings = self.__dict__.get("settings") or {}
            if item in settings:
                return settings[item]
            raise

    def params(self) -> dict[str, Any]:
        """The run's ``model.*`` MLflow params: the name and the settings (a user model also
        its builder and input). SR-NET's keys are those runs have always logged."""
        out: dict[str, Any] = {"name": self.name, **self.settings}
        if self.name not in BUILTINS:
            out.update({"builder": self.builder, "input": self.input})
            if is_file_spec(self.builder):
                out["builder_file"] = str(resolve_file(self.builder, self.base_dir))
        elif self.name != "srnet":
            out["input"] = self.input
        if self.multiple != 1 and self.name != "srnet":
            out["multiple"] = self.multiple
        return out

    def kwargs(self, scale: int) -> dict[str, Any]:
        """What the builder is called with."""
        return {**({"scale": scale} if self.takes_scale else {}), **self.settings}


#: How each built-in is labelled in tables and figures.
LABELS = {"srnet": "SR-NET", "rrdbnet": "RRDBNet", "edsr": "EDSR"}


def model_label(name: str | None) -> str:
    """A model as tables name it: SR-NET, RRDBNet, EDSR, a registered name, or a builder's
    function name (``nets/espcn.py:build`` -> ``build``... its file's stem: ``espcn``)."""
    name = name or "srnet"
    if name in LABELS:
        return LABELS[name]
    if ":" in name:
        target = name.rpartition(":")[0]
        return Path(target).stem if target.endswith(".py") else target.rpartition(".")[2]
    return name


@dataclass(frozen=True)
class Signature:
    """What a user builder accepts: named parameters (name -> annotation or None), whether
    it takes any keyword (``**kwargs``), and the ones without a default."""

    params: dict[str, Any]
    any_keyword: bool
    required: tuple[str, ...]
    model_input: str | None

    def accepts(self, name: str) -> bool:
        return self.any_keyword or name in self.params


def _signature(fn, what: str) -> Signature:
    if not callable(fn):
        raise UserError(f"{what}: {fn!r} is not a function; name a function that returns a Keras model")
    try:
        sig = inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{what}: cannot read the function's signature ({exc})") from None
    except ValueError as exc:
        raise UserError(f"{what}: cannot read the function's signature ({exc})") from None
    params: dict[str, Any] = {}
    required: list[str] = []
    any_keyword = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            any_keyword = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            ann = None if p.annotation is p.empty or isinstance(p.annotation, str) else p.annotation
            params[p.name] = ann
            if p.default is p.empty and p.name != "scale":
                required.append(p.name)
    model_input = getattr(fn, "model_input", None)
    return Signature(params, any_keyword, tuple(required), model_input if model_input in INPUTS else None)


@lru_cache(maxsize=None)
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_names() -> list[str]:
    """Every model name a study can use: the built-ins, then those of entry points."""
    return [*BUILTINS, *sorted(n for n in _entry_points() if n not in BUILTINS)]


@dataclass(frozen=True)
class Resolved:
    """A model name or builder resolved to what builds it, with its settings' checker."""

    name: str
    builder: str
    input: Literal["lr", "bicubic"] | None
    settings: type[_Settings] | None  # a built-in's; None: read from the signature
    signature: Signature | None
    base_dir: str | None

    def accepts(self, setting: str) -> bool:
        if self.settings is not None:
            return setting in self.settings.model_fields
        return self.signature.accepts(setting)

    def accepted(self) -> list[str]:
        if self.settings is not None:
            return list(self.settings.model_fields)
        return [p for p in self.signature.params if p != "scale"]

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        """The settings as the builder will receive them (typed, defaults filled for a
        built-in), or a ValueError naming the first bad one."""
        if self.settings is not None:
            try:
                return self.settings(**settings).model_dump()
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = ".".join(str(p) for p in err["loc"])
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    msg = (f"model {self.name} takes no setting {loc!r}; its settings are: "
                           f"{', '.join(self.accepted())}")
                    raise ValueError(f"{where}{msg}") from None
                raise ValueError(f"{where}model.{loc}: {msg}") from None
        sig = self.signature
        out: dict[str, Any] = {}
        for key, value in settings.items():
            if not sig.accepts(key):
                raise ValueError(f"{where}model.{key}: {self.builder} does not accept a {key!r} argument; "
                                 f"it takes: {', '.join(self.accepted()) or 'only scale'} (add {key} to its "
                                 "signature, or remove the setting)")
            ann = sig.params.get(key)
            if ann is not None:
                try:
                    value = TypeAdapter(ann).validate_python(value)
                except ValidationError as exc:
                    msg = exc.errors()[0]["msg"]
                    raise ValueError(f"{where}model.{key}: {value!r} does not fit the builder's annotation "
                                     f"({msg})") from None
                except Exception:  # an annotation pydantic cannot check: pass the value as written
                    pass
            out[key] = value
        missing = [r for r in sig.required if r not in out]
        if missing:
            raise ValueError(f"{where}{self.builder} needs {', '.join(missing)} (no default); set "
                             f"model.{missing[0]} in the study or make it a factor")
        return out


def resolve(name: str | None, builder: str | None, base_dir: str | Path | None) -> Resolved:
    """The built-in, entry point or user builder a ``model:`` section (or a level of
    ``model.name``) names. Raises UserError naming what is wrong."""
    base = None if base_dir is None else str(base_dir)
    if builder is not None:
        fn = load_object(builder, base_dir=base, what="model.builder")
        sig = _signature(fn, "model.builder")
        return Resolved(builder, builder, sig.model_input, None, sig, base)
    name = name or "srnet"
    if name in BUILTINS:
        b = BUILTINS[name]
        return Resolved(name, b.builder, b.input, b.settings, None, base)
    points = _entry_points()
    if name in points:
        fn = load_object(points[name], what=f"model.name {name} (entry point {ENTRY_POINT_GROUP})")
        sig = _signature(fn, f"model.name {name}")
        return Resolved(name, points[name], sig.model_input, None, sig, base)
    raise UserError(f"model.name: unknown model {name!r}; use one of: {', '.join(known_names())}, "
                    "or give your own with model.builder: path/to/file.py:function")


def multiple_of(resolved: Resolved, settings: dict[str, Any], declared: int | None) -> int:
    """The multiple an input's sides must have: ``model.multiple`` if given, SR-NET's
    ``2**depth``, else 1."""
    if declared is not None:
        return declared
    if resolved.name == "srnet":
        return 2 ** settings["depth"]
    return 1
