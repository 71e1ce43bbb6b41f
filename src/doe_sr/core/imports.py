"""A user's Python object named in a study file: ``package.module:name`` or ``file.py:name``.

Why one loader: a study names the user's network builder (``model.builder``) and may
name a loss (``training.loss``) the same way, and both must fail the same way: one
line saying which setting named what, and why it cannot be loaded, before anything
trains. A file path is read relative to the study file's folder (``base_dir``), so a
study and its ``nets/`` folder move together, and workers on other machines that mount
the study elsewhere find the same file.

A file is imported once per process under a name derived from its absolute path
(``doe_sr_user.<stem>_<hash>``) and kept in ``sys.modules``: loading it again (each
run of a worker, each validation) must not re-execute it, because a module that
registers Keras serialisable classes would register them twice. Its folder is put on
``sys.path``, so the file can import its sibling modules.

Standard library only (a leaf of the package, like the rest of ``core``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from doe_sr.core.errors import UserError

__all__ = ["before_user_imports", "is_file_spec", "load_object", "resolve_file"]

#: Called once before the first user module is imported (see :func:`before_user_imports`).
_BEFORE: list = []


def before_user_imports(hook) -> None:
    """Run ``hook()`` once before the first user module or file is imported.

    Why: a user's network file imports Keras, and TensorFlow writes its start-up notices
    to the terminal on first import; the CLI registers its quiet TensorFlow import here, so
    ``doe-sr design`` of a study with a user builder still prints only its table (and a
    bad study still one line). The core cannot import the CLI, hence a hook.
    """
    _BEFORE.append(hook)


def _run_hooks() -> None:
    while _BEFORE:
        _BEFORE.pop(0)()


def _split(spec: str, what: str) -> tuple[str, str]:
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise UserError(f"{what}: {spec!r} does not name a function; write it as package.module:function "
                        "or path/to/file.py:function")
    return target, name


def is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names a file (``nets/my_net.py:build``) rather than a module."""
    target = spec.rpartition(":")[0]
    return target.endswith(".py") or "/" in target or "\\" in target


def resolve_file(spec: str, base_dir: str | Path | None) -> Path:
    """The absolute path of the file a file spec names (relative to ``base_dir``)."""
    target = Path(spec.rpartition(":")[0]).expanduser()
    if not target.is_absolute():
        target = Path(base_dir or ".") / target
    return target.resolve()


def _import_file(path: Path, what: str):
    if not path.is_file():
        raise UserError(f"{what}: file {path} not found; give the path relative to the study file's folder")
    key = f"doe_sr_user.{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    module = sys.modules.get(key)
    if module is not None:
        return module
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[key]
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise UserError(f"{what}: importing {path} failed ({_reason(exc)}); fix that file") from None
    return module


def _import_module(name: str, what: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise UserError(f"{what}: no module named {exc.name!r}; install it, or check the spelling "
                            "(a file is written path/to/file.py:function)") from None
        raise UserError(f"{what}: importing {name} failed ({_reason(exc)})") from None
    except Exception as exc:  # the user's module itself is broken
        raise UserError(f"{what}: importing {name} failed ({_reason(exc)}); fix that module") from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_object(spec: str, *, base_dir: str | Path | None = None, what: str = "object"):
    """The object ``spec`` names; ``what`` (e.g. ``model.builder``) starts every error message.

    Raises :class:`UserError` (one line) when the module or file cannot be imported, or
    has no such name.
    """
    target, name = _split(spec, what)
    _run_hooks()
    module = _import_file(resolve_file(spec, base_dir), what) if is_file_spec(spec) else _import_module(target, what)
    try:
        return getattr(module, name)
    except AttributeError:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:8]
        hint = f"; it defines: {', '.join(public)}" if public else ""
        raise UserError(f"{what}: {target} has no {name!r}{hint}") from None
