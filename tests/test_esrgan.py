"""RRDBNet in Keras against an independent PyTorch RRDBNet, through real .pth files.

The PyTorch network below is written from the ESRGAN paper / BasicSR's rrdbnet_arch.py
(nn.Conv2d, F.interpolate nearest); weights are random, saved with torch.save in both
key namings, read back without torch (doe_sr.sr.weights.pth) and compared output to output.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from doe_sr.core.errors import UserError  # noqa: E402
from doe_sr.sr.models.esrgan import (  # noqa: E402
    KerasUpscaler,
    build_rrdbnet,
    esrgan_upscaler,
    load_esrgan,
    load_state_dict,
    normalize_keys,
    rrdbnet_winograd_forward,
)
from doe_sr.sr.weights.pth import read_pth  # noqa: E402


class _RDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x):
        a = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        x1 = a(self.conv1(x))
        x2 = a(self.conv2(torch.cat((x, x1), 1)))
        x3 = a(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = a(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        return self.conv5(torch.cat((x, x1, x2, x3, x4), 1)) * 0.2 + x


class _RRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = _RDB(nf, gc), _RDB(nf, gc), _RDB(nf, gc)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class TorchRRDBNet(nn.Module):
    def __init__(self, nf: int = 64, nb: int = 23, gc: int = 32) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.body = nn.Sequential(*[_RRDB(nf, gc) for _ in range(nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)

    def forward(self, x):
        a = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = a(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = a(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(a(self.conv_hr(feat)))


def to_original_naming(state: dict) -> dict:
    """BasicSR keys -> the original ESRGAN repository's keys (RRDBNet_arch.py)."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^body\.(\d+)\.rdb(\d)\.", r"RRDB_trunk.\1.RDB\2.", key)
        key = re.sub(r"^conv_body\.", "trunk_conv.", key)
        key = re.sub(r"^conv_up(\d)\.", r"upconv\1.", key)
        key = re.sub(r"^conv_hr\.", "HRconv.", key)
        out[key] = value
    return out


def _random_torch_net(nf: int, nb: int, gc: int, seed: int = 0) -> TorchRRDBNet:
    torch.manual_seed(seed)
    net = TorchRRDBNet(nf, nb, gc).eval()
    # Default init gives outputs near zero; widen biases so a transposed kernel or a
    # swapped concat order shows up far above the tolerance.
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 1:
                p.uniform_(-0.1, 0.1)
    return net


def _compare(net: TorchRRDBNet, model, shape=(1, 21, 17, 3), seed: int = 1) -> float:
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    got = np.asarray(model(x))
    assert got.shape == ref.shape == (shape[0], shape[1] * 4, shape[2] * 4, 3)
    assert np.abs(ref).max() > 0.05  # the comparison is not between two near-zero images
    return float(np.abs(got - ref).max())


@pytest.mark.parametrize("naming", ["basicsr", "original", "params_ema+module"])
def test_small_rrdbnet_matches_pytorch_via_pth(tmp_path: Path, naming: str) -> None:
    net = _random_torch_net(16, 2, 8)
    state = net.state_dict()
    if naming == "original":
        state = to_original_naming(state)
    elif naming == "params_ema+module":
        state = {"params_ema": {f"module.{k}": v for k, v in state.items()},
                 "params": {k: torch.zeros_like(v) for k, v in state.items()}}
    path = tmp_path / "w.pth"
    torch.save(state, path)
    model = build_rrdbnet(num_feat=16, num_block=2, num_grow_ch=8)
    load_state_dict(model, read_pth(path))
    assert _compare(net, model) <= 1e-4


def test_legacy_pth_format_loads_the_same(tmp_path: Path) -> None:
    net = _random_torch_net(16, 1, 8, seed=3)
    path = tmp_path / "legacy.pth"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=False)
    model = build_rrdbnet(num_feat=16, num_block=1, num_grow_ch=8)
    load_state_dict(model, read_pth(path))
    assert _compare(net, model, shape=(2, 9, 13, 3)) <= 1e-4


def test_old_flat_sequential_naming() -> None:
    """The first ESRGAN release's nn.Sequential keys (model.0 ... model.10)."""
    net = _random_torch_net(8, 2, 4, seed=5)
    flat = {}
    for key, value in net.state_dict().items():
        if m := re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(\w+)", key):
            key = f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"
        else:
            prefix, leaf = key.split(".")
            new = {"conv_first": "model.0", "conv_body": "model.1.sub.2", "conv_up1": "model.3",
                   "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}[prefix]
            key = f"{new}.{leaf}"
        flat[key] = value.numpy()
    assert set(normalize_keys(flat)) == set(net.state_dict())
    model = build_rrdbnet(num_feat=8, num_block=2, num_grow_ch=4)
    load_state_dict(model, flat)
    assert _compare(net, model) <= 1e-4


def test_full_23_block_rrdbnet_matches_pytorch(tmp_path: Path) -> None:
    net = _random_torch_net(64, 23, 32)
    torch.save({"params": to_original_naming(net.state_dict())}, tmp_path / "full.pth")
    model = build_rrdbnet()
    load_state_dict(model, read_pth(tmp_path / "full.pth"))
    assert _compare(net, model, shape=(1, 16, 12, 3)) <= 1e-4
    fast = rrdbnet_winograd_forward(model)
    assert _compare(net, lambda t: fast(t), shape=(1, 16, 12, 3)) <= 1e-4


def test_layer_names_are_basicsr_keys() -> None:
    model = build_rrdbnet(num_feat=8, num_block=3, num_grow_ch=4)
    net = TorchRRDBNet(8, 3, 4)
    convs = {layer.name for layer in model.layers if layer.weights}
    assert convs == {k.rsplit(".", 1)[0] for k in net.state_dict()}
    assert model.count_params() == sum(p.numel() for p in net.parameters())


def test_wrong_shape_names_key_and_both_shapes() -> None:
    state = {k: v.numpy() for k, v in TorchRRDBNet(8, 1, 4).state_dict().items()}
    state["body.0.rdb2.conv3.weight"] = np.zeros((4, 15, 3, 3), np.float32)
    model = build_rrdbnet(num_feat=8, num_block=1, num_grow_ch=4)
    with pytest.raises(UserError, match=r"body\.0\.rdb2\.conv3\.weight.*\(4, 15, 3, 3\).*\(4, 16, 3, 3\)"):
        load_state_dict(model, state)


def test_missing_and_unexpected_keys_are_listed() -> None:
    state = {k: v.numpy() for k, v in TorchRRDBNet(8, 2, 4).state_dict().items()}
    model = build_rrdbnet(num_feat=8, num_block=1, num_grow_ch=4)  # one block fewer
    with pytest.raises(UserError, match=r"unexpected body\.1\.rdb1\.conv1\.bias"):
        load_state_dict(model, state)
    del state["conv_hr.bias"]
    with pytest.raises(UserError, match=r"missing conv_hr\.bias"):
        load_state_dict(build_rrdbnet(num_feat=8, num_block=2, num_grow_ch=4), state)


def test_upscaler_clips_and_matches_model(tmp_path: Path) -> None:
    net = _random_torch_net(8, 1, 4, seed=7)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    up = esrgan_upscaler(tmp_path / "w.pth", tile=24, overlap=12, label="tiny",
                         num_feat=8, num_block=1, num_grow_ch=4)
    assert isinstance(up, KerasUpscaler) and up.name == "tiny" and up.scale == 4
    lr = np.random.default_rng(0).random((40, 23, 3), dtype=np.float32)
    out = up(lr)
    with torch.no_grad():
        ref = net(torch.from_numpy(lr).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert out.shape == (160, 92, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - np.clip(ref, 0, 1)).max() <= 1e-4


def test_load_esrgan_from_path_and_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_esrgan(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pth"):
        load_esrgan(tmp_path / "junk.pth")


@pytest.mark.parametrize(("shape", "jit"), [((2, 10, 14, 3), True), ((1, 7, 5, 3), False),
                                           ((1, 1, 2, 3), False)])
def test_winograd_forward_equals_direct_convolution(shape, jit: bool) -> None:
    """The fast path must be the same function as the Keras model (odd sizes included)."""
    import tensorflow as tf

    net = _random_torch_net(16, 2, 8, seed=11)
    model = build_rrdbnet(num_feat=16, num_block=2, num_grow_ch=8)
    load_state_dict(model, {k: v.numpy() for k, v in net.state_dict().items()})
    x = np.random.default_rng(2).random(shape, dtype=np.float32)
    fast = tf.function(rrdbnet_winograd_forward(model), jit_compile=jit)
    direct = np.asarray(model(x))
    assert np.abs(direct).max() > 0.05
    assert np.abs(np.asarray(fast(x)) - direct).max() <= 1e-4
    assert _compare(net, lambda t: fast(t), shape=shape) <= 1e-4
