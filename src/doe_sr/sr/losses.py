"""Training losses by name: ``mae`` (L1), ``mse`` (L2), ``charbonnier``, or the user's own.

Why Charbonnier: it is the smooth L1 that LapSRN and many later SR networks train with,
``sqrt((y - x)^2 + eps^2)``: L1's robustness to outliers without L1's kink at zero.
``eps`` is 1e-3 (LapSRN's); BasicSR's default 1e-12 makes it L1 in float32.

A user loss is named in the study as ``pkg.module:function`` or ``file.py:function`` (a
file next to the study); it is called as ``loss(y_true, y_pred)`` on batches of images
in [0, 1] and returns the loss (a scalar, or one value per image), with ``keras.ops``.
"""

from __future__ import annotations

from doe_sr.core.imports import load_object

#: Charbonnier's epsilon (LapSRN, Lai et al. 2017).
CHARBONNIER_EPS = 1e-3


def charbonnier(y_true, y_pred):
    """Mean ``sqrt((y_true - y_pred)^2 + eps^2)`` over pixels and channels, per image."""
    from keras import ops

    diff = ops.cast(y_true, y_pred.dtype) - y_pred
    return ops.mean(ops.sqrt(ops.square(diff) + CHARBONNIER_EPS**2), axis=(1, 2, 3))


def make_loss(name: str, base_dir: str | None = None):
    """What ``model.compile(loss=...)`` gets for the study's ``training.loss``: Keras' own
    name for ``mae``/``mse``, the Charbonnier function, or the user's function."""
    if name in ("mae", "mse"):
        return name
    if name == "charbonnier":
        return charbonnier
    return load_object(name, base_dir=base_dir, what="training.loss")
