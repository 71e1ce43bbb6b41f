"""Tiled inference equals untiled inference when the overlap covers the receptive field."""

from __future__ import annotations

import numpy as np
import pytest

from doe_sr.core.errors import UserError
from doe_sr.sr.models.esrgan import build_rrdbnet
from doe_sr.sr.tiling import upscale_tiled


@pytest.fixture(scope="module")
def tiny_net():
    # One RRDB: 17 LR convs plus a few at 2x/4x, so the receptive radius is about 18 LR
    # pixels; overlap 20 is enough for exact equality.
    model = build_rrdbnet(num_feat=8, num_block=1, num_grow_ch=4)
    rng = np.random.default_rng(0)
    for var in model.weights:
        var.assign(rng.normal(0, 0.3, var.shape).astype(np.float32))
    calls: list[tuple[int, ...]] = []

    def fn(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape)
        return np.asarray(model(x))

    return model, fn, calls


@pytest.mark.parametrize("hw", [(50, 37), (24, 90), (33, 33)])
def test_tiled_equals_untiled(tiny_net, hw) -> None:
    model, fn, calls = tiny_net
    lr = np.random.default_rng(1).random((*hw, 3), dtype=np.float32)
    whole = np.asarray(model(lr[None]))[0]
    calls.clear()
    tiled = upscale_tiled(fn, lr, scale=4, tile=16, overlap=20, batch=3)
    assert tiled.shape == whole.shape == (hw[0] * 4, hw[1] * 4, 3)
    assert np.abs(tiled - whole).max() <= 1e-5
    assert len(set(calls)) == 1  # every batch had one shape
    assert all(c[0] <= 3 for c in calls)


def test_too_little_overlap_shows_seams(tiny_net) -> None:
    """The equality above is not vacuous: with no context the tiles disagree."""
    model, fn, _ = tiny_net
    lr = np.random.default_rng(2).random((40, 40, 3), dtype=np.float32)
    whole = np.asarray(model(lr[None]))[0]
    assert np.abs(upscale_tiled(fn, lr, scale=4, tile=16, overlap=0) - whole).max() > 1e-3


def test_tiles_follow_a_known_function() -> None:
    """Nearest x2 upsampling is local, so any tiling must reproduce it exactly."""
    lr = np.arange(7 * 11 * 3, dtype=np.float32).reshape(7, 11, 3)
    fn = lambda x: x.repeat(2, axis=1).repeat(2, axis=2)  # noqa: E731
    out = upscale_tiled(fn, lr, scale=2, tile=3, overlap=1, batch=2)
    np.testing.assert_array_equal(out, lr.repeat(2, axis=0).repeat(2, axis=1))


def test_small_image_is_one_call() -> None:
    shapes = []

    def fn(x):
        shapes.append(x.shape)
        return x.repeat(4, axis=1).repeat(4, axis=2)

    upscale_tiled(fn, np.zeros((10, 12, 3), np.float32), scale=4, tile=16)
    assert shapes == [(1, 10, 12, 3)]


def test_bad_arguments() -> None:
    with pytest.raises(UserError, match="tile"):
        upscale_tiled(lambda x: x, np.zeros((4, 4, 3), np.float32), scale=1, tile=0)
    with pytest.raises(UserError, match="HxWxC"):
        upscale_tiled(lambda x: x, np.zeros((4, 4), np.float32), scale=1)
