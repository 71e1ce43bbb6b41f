"""Build a run's network from its :class:`~doe_sr.study.models.ModelRun`, and check it first.

The study layer resolved *which* builder and *which* keyword arguments (without Keras);
here the builder is called. :func:`check_models` builds each distinct network of a study
and runs it on a small dummy input before the first run trains, so a builder that
raises, returns something that is not a Keras model, or returns a model whose output
is not the right size for its declared input fails the study up front with one line,
not nine runs later.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from doe_sr.core.errors import UserError
from doe_sr.core.imports import load_object
from doe_sr.study.models import ModelRun


def _what(run: ModelRun) -> str:
    """How messages name the network: ``model edsr`` or ``model.builder nets/net.py:build``."""
    return f"model {run.name}" if ":" not in run.name else f"model.builder {run.builder}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 240 else text[:237] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def build_model(run: ModelRun, scale: int):
    """The Keras model of one run (UserError, one line, if the builder fails or returns
    something that is not a Keras model)."""
    import keras

    what = _what(run)
    builder = load_object(run.builder, base_dir=run.base_dir, what=what)
    try:
        model = builder(**run.kwargs(scale))
    except UserError:
        raise
    except Exception as exc:
        settings = ", ".join(f"{k}={v!r}" for k, v in run.kwargs(scale).items())
        raise UserError(f"{what} raised {_one_line(exc)} when built with {settings}; fix the builder or "
                        "the settings") from None
    if not isinstance(model, keras.Model):
        raise UserError(f"{what} returned a {type(model).__name__}, not a Keras model; return keras.Model(inputs, "
                        "outputs)")
    return model


def expected_shape(run: ModelRun, side: int, scale: int) -> tuple[int, int, int]:
    """The output an HxWx3 input of ``side`` pixels must give: the same size for a model of
    the bicubic image, ``scale`` times it for a model of the LR image."""
    out = side * scale if run.input == "lr" else side
    return out, out, 3


def check_model(run: ModelRun, scale: int) -> None:
    """Build ``run``'s network and run it on a dummy input; UserError (one line) when the
    output is not the image its input should give."""
    model = build_model(run, scale)
    side = 2 * run.multiple if run.input == "lr" else max(2 * run.multiple, 16)
    x = np.zeros((1, side, side, 3), dtype=np.float32)
    try:
        y = model(x, training=False)
    except Exception as exc:
        raise UserError(f"{_what(run)} fails on a {side}x{side}x3 input ({_one_line(exc)}); it must take "
                        f"images of any size (keras.Input(shape=(None, None, 3)))") from None
    shape = tuple(int(d) for d in np.shape(y)[1:])
    want = expected_shape(run, side, scale)
    if shape != want:
        kind = (f"x{scale} its {run.input} input" if run.input == "lr" else "the size of its bicubic input")
        raise UserError(f"{_what(run)} gives a {'x'.join(map(str, shape))} output for a {side}x{side}x3 input; "
                        f"a model with input: {run.input} must output {'x'.join(map(str, want))} ({kind}); "
                        "fix the network or model.input")


def check_models(runs: Iterable[ModelRun], scale: int) -> int:
    """:func:`check_model` once per distinct network; how many were built."""
    import keras

    seen: set[str] = set()
    for run in runs:
        key = run.model_dump_json()
        if key in seen:
            continue
        seen.add(key)
        check_model(run, scale)
        keras.backend.clear_session()
    return len(seen)


def main() -> int:
    """``python -m doe_sr.sr.models.registry``: :func:`check_models` of the runs given as JSON
    on stdin (``{"scale": 4, "runs": [ModelRun, ...]}``); a refusal is printed as one JSON
    line ``{"error": "..."}`` with exit code 2.

    Why a process of its own (see :meth:`doe_sr.engine.executor.Executor.check_models`): the
    session that checks the study must not import TensorFlow, which on a GPU machine takes
    the GPU's memory away from the workers that train.
    """
    import json
    import os
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    request = json.loads(sys.stdin.read())
    runs = [ModelRun(**r) for r in request["runs"]]
    try:
        count = check_models(runs, int(request["scale"]))
    except UserError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    print(json.dumps({"checked": count}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
