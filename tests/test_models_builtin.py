"""The built-in post-upsampling networks (EDSR, RRDBNet) at every scale doe-sr supports.

Parameter counts are checked against counts written out by hand from the papers'
layer lists; `PixelShuffle` against ``torch.nn.functional.pixel_shuffle``; save/load
round trips through real ``.keras`` files; training runs real ``model.fit`` steps.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from doe_sr.core.errors import UserError
from doe_sr.sr.models.edsr import build_edsr
from doe_sr.sr.models.esrgan import build_rrdbnet, load_state_dict, rrdbnet_winograd_forward
from doe_sr.sr.models.layers import PixelShuffle, torch_to_keras_channels

SCALES = (2, 3, 4, 8)
TINY_EDSR = dict(num_block=1, num_feat=8)
TINY_RRDB = dict(num_block=1, num_feat=8, num_grow_ch=4)


def _conv(cin: int, cout: int) -> int:
    return 3 * 3 * cin * cout + cout


@pytest.mark.parametrize("scale", SCALES)
def test_output_shapes(scale: int) -> None:
    x = np.random.default_rng(scale).random((2, 5, 7, 3), dtype=np.float32)
    for model in (build_edsr(scale=scale, **TINY_EDSR), build_rrdbnet(scale=scale, **TINY_RRDB)):
        y = model(x)
        assert tuple(y.shape) == (2, 5 * scale, 7 * scale, 3), model.name
        assert model.inputs[0].name == "lr" and model.get_layer("sr").dtype_policy.compute_dtype == "float32"


def test_edsr_baseline_parameter_count_by_hand() -> None:
    f = 64
    blocks = 16 * 2 * _conv(f, f)
    by_hand_x4 = _conv(3, f) + blocks + _conv(f, f) + 2 * _conv(f, 4 * f) + _conv(f, 3)
    assert by_hand_x4 == 1_517_571  # BasicSR EDSR-baseline x4 (~1.52 M in the paper's table)
    assert build_edsr(scale=4).count_params() == by_hand_x4
    by_hand_x3 = _conv(3, f) + blocks + _conv(f, f) + _conv(f, 9 * f) + _conv(f, 3)
    assert build_edsr(scale=3).count_params() == by_hand_x3
    by_hand_x8 = by_hand_x4 + _conv(f, 4 * f)
    assert build_edsr(scale=8).count_params() == by_hand_x8


def test_rrdbnet_parameter_count_by_hand() -> None:
    nf, gc, nb = 64, 32, 23
    rdb = sum(_conv(nf + i * gc, gc) for i in range(4)) + _conv(nf + 4 * gc, nf)
    x4 = _conv(3, nf) + nb * 3 * rdb + _conv(nf, nf) + 2 * _conv(nf, nf) + _conv(nf, nf) + _conv(nf, 3)
    assert x4 == 16_697_987  # the official ESRGAN x4 state dict's parameter count
    assert build_rrdbnet().count_params() == x4
    small = dict(num_block=2, num_feat=16, num_grow_ch=8)
    rdb_s = sum(_conv(16 + i * 8, 8) for i in range(4)) + _conv(16 + 32, 16)
    base = _conv(3, 16) + 2 * 3 * rdb_s + 2 * _conv(16, 16) + _conv(16, 3)  # conv_body, conv_hr; + conv_up*
    assert build_rrdbnet(scale=2, **small).count_params() == base + 1 * _conv(16, 16)
    assert build_rrdbnet(scale=3, **small).count_params() == base + 1 * _conv(16, 16)
    assert build_rrdbnet(scale=8, **small).count_params() == base + 3 * _conv(16, 16)


def test_rrdbnet_layer_names_per_scale_and_x4_unchanged() -> None:
    def convs(m: keras.Model) -> set[str]:
        return {layer.name for layer in m.layers if isinstance(layer, keras.layers.Conv2D)}

    rdb = {f"body.0.rdb{k}.conv{i}" for k in (1, 2, 3) for i in range(1, 6)}
    fixed = {"conv_first", "conv_body", "conv_hr", "conv_last"} | rdb
    assert convs(build_rrdbnet(scale=4, **TINY_RRDB)) == fixed | {"conv_up1", "conv_up2"}
    assert convs(build_rrdbnet(scale=8, **TINY_RRDB)) == fixed | {"conv_up1", "conv_up2", "conv_up3"}
    assert convs(build_rrdbnet(scale=2, **TINY_RRDB)) == fixed | {"conv_up1"}
    assert convs(build_rrdbnet(scale=3, **TINY_RRDB)) == fixed | {"conv_up1"}
    # x4 still takes a BasicSR state dict key for key (and the Winograd forward still applies)
    model = build_rrdbnet(scale=4, **TINY_RRDB)
    rng = np.random.default_rng(0)
    state = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            state[f"{layer.name}.weight"] = rng.normal(0, 0.1, (cout, cin, kh, kw)).astype(np.float32)
            state[f"{layer.name}.bias"] = rng.normal(0, 0.1, (cout,)).astype(np.float32)
    load_state_dict(model, state)
    w = model.get_layer("conv_up2").kernel.numpy()
    assert np.array_equal(w, state["conv_up2.weight"].transpose(2, 3, 1, 0))
    x = rng.random((1, 6, 6, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(rrdbnet_winograd_forward(model)(x)), np.asarray(model(x)), atol=1e-4)
    with pytest.raises(UserError, match="x4 RRDBNet"):
        rrdbnet_winograd_forward(build_rrdbnet(scale=8, **TINY_RRDB))


@pytest.mark.parametrize("build", [build_edsr, build_rrdbnet])
@pytest.mark.parametrize("scale", [1, 5, 16])
def test_unsupported_scale_is_one_line_user_error(build, scale: int) -> None:
    with pytest.raises(UserError) as err:
        build(scale=scale)
    assert "\n" not in str(err.value) and f"scale {scale}" in str(err.value) and "2, 3, 4, 8" in str(err.value)


@pytest.mark.parametrize("factor", [2, 3])
def test_pixel_shuffle_is_torch_pixel_shuffle_up_to_channel_permutation(factor: int) -> None:
    torch = pytest.importorskip("torch")
    c = 4 * factor * factor
    x = np.random.default_rng(factor).random((2, 3, 5, c), dtype=np.float32)  # channels last
    ref = torch.nn.functional.pixel_shuffle(torch.from_numpy(x.transpose(0, 3, 1, 2)), factor)
    ref = ref.numpy().transpose(0, 2, 3, 1)
    perm = torch_to_keras_channels(c, factor)
    assert sorted(perm) == list(range(c))
    out = np.asarray(PixelShuffle(factor)(x[..., perm]))
    assert out.shape == (2, 3 * factor, 5 * factor, 4)
    np.testing.assert_array_equal(out, ref)
    # without the permutation the orders differ (so the docstring's warning is real)
    assert not np.array_equal(np.asarray(PixelShuffle(factor)(x)), ref)


@pytest.mark.parametrize("make", [
    lambda: build_edsr(scale=3, num_block=2, num_feat=8, res_scale=0.1),
    lambda: build_edsr(scale=8, **TINY_EDSR),
    lambda: build_rrdbnet(scale=4, **TINY_RRDB),
    lambda: build_rrdbnet(scale=3, **TINY_RRDB),
], ids=["edsr-x3-res0.1", "edsr-x8", "rrdbnet-x4", "rrdbnet-x3"])
def test_keras_file_round_trip_gives_identical_outputs(make, tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    model = make()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    x = np.random.default_rng(2).random((1, 9, 11, 3), dtype=np.float32)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def _batch(scale: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed batch: smooth random HR images and their box-downsampled LR (24x24)."""
    rng = np.random.default_rng(0)
    coarse = rng.random((4, 6, 6, 3), dtype=np.float32)
    hr = np.repeat(np.repeat(coarse, 4 * scale, axis=1), 4 * scale, axis=2)
    hr = hr + 0.05 * rng.standard_normal(hr.shape).astype(np.float32)
    lr = hr.reshape(4, 24, scale, 24, scale, 3).mean(axis=(2, 4))
    return lr, hr


@pytest.fixture
def policy():
    """Set a dtype policy for one test and always restore float32 after it."""
    yield keras.mixed_precision.set_dtype_policy
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("which", ["edsr", "rrdbnet"])
def test_fit_reduces_loss_on_a_fixed_batch(which: str, dtype: str, policy) -> None:
    policy(dtype)
    keras.utils.set_random_seed(0)
    scale = 2
    lr, hr = _batch(scale)
    size = dict(num_block=2, num_feat=16)
    model = build_edsr(scale=scale, **size) if which == "edsr" else build_rrdbnet(scale=scale, **size)
    assert model.get_layer("conv_first").compute_dtype == ("bfloat16" if dtype != "float32" else "float32")
    # The float32 case runs the compiled graph that training uses; the mixed case is about
    # dtypes only, and eager steps spare it a second ~10 s trace of the gradient graph.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mae", run_eagerly=dtype != "float32")
    # one batch per epoch: each epoch's loss is the loss at the weights before its step
    losses = model.fit(lr, hr, batch_size=4, epochs=10, verbose=0, shuffle=False).history["loss"]
    before, after = losses[0], losses[-1]
    assert model(lr[:1]).dtype == "float32"
    assert np.isfinite(after) and after < 0.6 * before, (before, after)
