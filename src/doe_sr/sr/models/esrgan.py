"""ESRGAN's generator (RRDBNet) in Keras, loadable from the official PyTorch weights.

The network follows ESRGAN (Wang et al., "ESRGAN: Enhanced Super-Resolution Generative
Adversarial Networks", ECCV Workshops 2018) exactly as BasicSR implements it
(``basicsr/archs/rrdbnet_arch.py``): 23 Residual-in-Residual Dense Blocks of 64 features
with growth 32, LeakyReLU(0.2), residual scaling 0.2, two nearest-neighbour x2
upsamplings each followed by a conv, then ``conv_hr`` and ``conv_last``. Every Keras
layer is named after its BasicSR state-dict prefix (``body.0.rdb1.conv1`` ...), so a
PyTorch state dict maps onto the model key for key, without importing torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from doe_sr.core.errors import UserError

# The official ESRGAN x4 weights (DF2K + OST, GAN-trained), republished by the BasicSR
# author in the Real-ESRGAN v0.1.1 release.
ESRGAN_URL = (
    "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.1/"
    "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth"
)
ESRGAN_FILENAME = "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth"
# BasicSR names released files "<name>-<first 8 hex digits of the sha256>.pth". The full
# digest is not published anywhere we could find, so we pin those 8 digits instead of
# inventing a full hash; `download.fetch` checks them before the file takes its name.
ESRGAN_SHA256_PREFIX = "ff704c30"
# The file is 67 MB (16.7 M float32 parameters); reading stops past this bound.
ESRGAN_MAX_BYTES = 128 << 20

# ESRGAN's LeakyReLU slope and residual scale; the 0.2 scale keeps the 69 stacked residual
# branches from blowing up the activations of such a deep net without batch norm
# (ESRGAN, section 3.1).
_SLOPE = 0.2
_RES_SCALE = 0.2


# ---------------------------------------------------------------------------- network


def _conv(filters: int, name: str) -> keras.layers.Conv2D:
    # "same" zero padding of 1 is what nn.Conv2d(…, 3, 1, 1) does.
    return keras.layers.Conv2D(filters, 3, padding="same", name=name)


def _lrelu(x: Any) -> Any:
    return keras.ops.leaky_relu(x, negative_slope=_SLOPE)


def _rdb(x: Any, num_feat: int, num_grow_ch: int, prefix: str) -> Any:
    """Residual dense block: five convs, each fed the concatenation of all before it."""
    feats = [x]
    for i in range(1, 5):
        inp = feats[0] if i == 1 else keras.layers.Concatenate(axis=-1)(feats)
        feats.append(_lrelu(_conv(num_grow_ch, f"{prefix}.conv{i}")(inp)))
    out = _conv(num_feat, f"{prefix}.conv5")(keras.layers.Concatenate(axis=-1)(feats))
    return out * _RES_SCALE + x


def _rrdb(x: Any, num_feat: int, num_grow_ch: int, prefix: str) -> Any:
    out = x
    for k in (1, 2, 3):
        out = _rdb(out, num_feat, num_grow_ch, f"{prefix}.rdb{k}")
    return out * _RES_SCALE + x


SCALES = (2, 3, 4, 8)


def build_rrdbnet(
    *,
    num_feat: int = 64,
    num_block: int = 23,
    num_grow_ch: int = 32,
    scale: int = 4,
    name: str = "rrdbnet",
) -> keras.Model:
    """ESRGAN's RRDBNet, channels-last: RGB in [0, 1] of any size -> RGB x``scale`` (not clipped).

    Scale 4 is exactly the official ESRGAN network (two nearest x2 steps, ``conv_up1`` and
    ``conv_up2``), so its weights load with `load_state_dict`. So that the network can be
    trained at every scale doe-sr supports, x2 has one nearest x2 step (``conv_up1``),
    x8 three (``conv_up3`` added) and x3 one nearest x3 step (``conv_up1``). These are the
    natural extension of ESRGAN's upsampler, not BasicSR's x2/x1 variants (which
    pixel-unshuffle the input and reuse the x4 tail); no official weights exist for them.
    The output passes a float32 ``linear`` layer ``sr`` (no weights, identity in float32)
    so that mixed precision policies keep the output and the loss in float32.
    """
    if scale not in SCALES:
        raise UserError(f"RRDBNet scale {scale} is not supported; use one of {', '.join(map(str, SCALES))}")
    if num_block < 0 or num_feat < 1 or num_grow_ch < 1:
        raise UserError(f"RRDBNet needs num_block >= 0, num_feat >= 1 and num_grow_ch >= 1, "
                        f"got {num_block}, {num_feat} and {num_grow_ch}")
    inp = keras.Input(shape=(None, None, 3), name="lr")
    feat = _conv(num_feat, "conv_first")(inp)
    body = feat
    for n in range(num_block):
        body = _rrdb(body, num_feat, num_grow_ch, f"body.{n}")
    feat = feat + _conv(num_feat, "conv_body")(body)
    # Nearest upsampling + conv rather than sub-pixel conv, as in ESRGAN (avoids
    # checkerboard artefacts); UpSampling2D "nearest" equals F.interpolate(mode="nearest").
    steps = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
    for k, r in enumerate(steps, start=1):
        feat = keras.layers.UpSampling2D(r, interpolation="nearest", name=f"up{k}")(feat)
        feat = _lrelu(_conv(num_feat, f"conv_up{k}")(feat))
    out = _conv(3, "conv_last")(_lrelu(_conv(num_feat, "conv_hr")(feat)))
    out = keras.layers.Activation("linear", dtype="float32", name="sr")(out)
    return keras.Model(inp, out, name=name)


# ------------------------------------------------------------------------- state dicts

# Original ESRGAN repository (RRDBNet_arch.py) -> BasicSR names.
_ORIGINAL = [
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$"), r"body.\1.rdb\2.conv\3.\4"),
    (re.compile(r"^trunk_conv\.(weight|bias)$"), r"conv_body.\1"),
    (re.compile(r"^upconv(\d)\.(weight|bias)$"), r"conv_up\1.\2"),
    (re.compile(r"^HRconv\.(weight|bias)$"), r"conv_hr.\1"),
]
# The "old architecture" files of the first ESRGAN release (a flat nn.Sequential):
# model.0 conv_first, model.1.sub.N RRDBs then model.1.sub.<num_block> the trunk conv,
# model.3/model.6 the upsampling convs (after Upsample layers 2 and 5), model.8 conv_hr,
# model.10 conv_last.
_OLD_RRDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_OLD_FLAT = {"model.0": "conv_first", "model.3": "conv_up1", "model.6": "conv_up2",
             "model.8": "conv_hr", "model.10": "conv_last"}


def _rename(key: str) -> str:
    for pattern, repl in _ORIGINAL:
        if pattern.match(key):
            return pattern.sub(repl, key)
    if m := _OLD_RRDB.match(key):
        return f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"
    if m := _OLD_TRUNK.match(key):
        return f"conv_body.{m[2]}"
    prefix, _, leaf = key.rpartition(".")
    if prefix in _OLD_FLAT:
        return f"{_OLD_FLAT[prefix]}.{leaf}"
    return key


def normalize_keys(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Return a state dict in BasicSR naming, whichever ESRGAN naming it came in.

    Accepts BasicSR's own (``body.N.rdbK.convJ``, ``conv_body``, ``conv_up1`` ...), the
    original ESRGAN repository's (``RRDB_trunk.N.RDBK.convJ``, ``trunk_conv``, ``upconv1``,
    ``HRconv``) and the first release's flat ``model.*`` names; unwraps BasicSR's
    ``{"params_ema": ...}`` / ``{"params": ...}`` checkpoints (EMA preferred, as
    Real-ESRGAN's inference does) and the ``module.`` prefix DataParallel adds.
    """
    if not isinstance(state, Mapping):
        raise UserError(f"weights are a {type(state).__name__}, not a state dict; pass an RRDBNet .pth file")
    for wrapper in ("params_ema", "params"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
            break
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        key = str(key)
        if key.startswith("module."):
            key = key[len("module."):]
        new = _rename(key)
        if new in out:
            raise UserError(f"weights name {new!r} twice (as {key!r}); the .pth mixes two namings")
        out[new] = np.asarray(value)
    return out


def _conv_layers(model: keras.Model) -> dict[str, keras.layers.Conv2D]:
    return {layer.name: layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}


def load_state_dict(model: keras.Model, state: Mapping[str, Any]) -> None:
    """Copy a PyTorch RRDBNet state dict into a model from `build_rrdbnet`, strictly.

    Conv weights go from PyTorch's OIHW to Keras' HWIO. Like ``load_state_dict(strict=True)``
    every key must be used and every layer filled: missing and unexpected keys are listed,
    and a shape mismatch names the key with both shapes (in PyTorch's layout), so a file
    for another variant (e.g. 6 blocks, 32 features) fails with a message, not garbage.
    """
    state = normalize_keys(state)
    layers = _conv_layers(model)
    expected: dict[str, tuple[Any, tuple[int, ...]]] = {}
    for name, layer in layers.items():
        kh, kw, cin, cout = layer.kernel.shape
        expected[f"{name}.weight"] = (layer.kernel, (cout, cin, kh, kw))
        expected[f"{name}.bias"] = (layer.bias, (cout,))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(
            "weights do not fit this RRDBNet: "
            f"missing {_short(missing)}; unexpected {_short(unexpected)}; "
            "check num_block/num_feat/num_grow_ch or that the file is an ESRGAN/RRDBNet x4 .pth"
        )
    for key, (variable, torch_shape) in expected.items():
        value = state[key]
        if tuple(value.shape) != torch_shape:
            raise UserError(
                f"weight {key!r} has shape {tuple(value.shape)} but the model needs {torch_shape}; "
                "the file is for a different RRDBNet configuration"
            )
        value = value.astype(np.float32)
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        variable.assign(value)


def _short(keys: list[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# ----------------------------------------------------------------------------- loading


def load_esrgan(
    weights: str | Path = "auto",
    *,
    cache_dir: Path | None = None,
    num_feat: int = 64,
    num_block: int = 23,
    num_grow_ch: int = 32,
) -> keras.Model:
    """Build RRDBNet and fill it from a ``.pth`` (path) or the official ESRGAN x4 ("auto").

    "auto" downloads ``ESRGAN_SRx4_DF2KOST_official-ff704c30.pth`` once into the cache
    (``doe_sr.sr.download.default_cache_dir()`` unless ``cache_dir``) and reuses it after.
    """
    from doe_sr.sr.weights.pth import read_pth

    path = _fetch_official(cache_dir) if str(weights) == "auto" else Path(weights)
    state = read_pth(path)  # first: a bad file is refused before a model is built
    model = build_rrdbnet(num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch,
                          name=path.stem.replace(".", "_") or "rrdbnet")
    load_state_dict(model, state)
    return model


def _fetch_official(cache_dir: Path | None, url: str = ESRGAN_URL) -> Path:
    """The official file in the cache, downloaded and verified (hash prefix, size bound) first.

    A cached file that does not verify (e.g. left by an older doe-sr) is replaced.
    """
    from doe_sr.sr import download

    dest = Path(cache_dir) if cache_dir is not None else download.default_cache_dir()
    return download.fetch(url, dest / ESRGAN_FILENAME, sha256=ESRGAN_SHA256_PREFIX, max_size=ESRGAN_MAX_BYTES)


# ------------------------------------------------------------------- fast CPU forward

# Winograd F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
# CVPR 2016): a 3x3 conv over 4x4 input tiles with stride 2 becomes 16 independent
# matrix products, 16 multiplies per 2x2 outputs instead of 36 (2.25x fewer). The
# interpolation points 0, +1, -1 keep the transforms to additions, so float32 results
# stay within ~1e-6 of direct convolution. B^T, G, A^T below are the paper's matrices.
_WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)


def _wino_kernel(kernel: Any) -> Any:
    """HWIO 3x3 kernel -> (16, I, O): G k G^T for every input/output channel pair."""
    import tensorflow as tf

    u = tf.einsum("ah,hwio,bw->abio", _WINO_G, kernel, _WINO_G)
    return tf.reshape(u, [16, kernel.shape[2], kernel.shape[3]])


def _wino_input(x: Any) -> tuple[Any, tuple[Any, ...]]:
    """N,H,W,C -> (16, tiles, C): B^T d B of every 4x4 tile (zero 'same' padding)."""
    import tensorflow as tf

    shape = tf.shape(x)
    n, h, w = shape[0], shape[1], shape[2]
    th, tw = (h + 1) // 2, (w + 1) // 2
    xp = tf.pad(x, [[0, 0], [1, 2 * th + 1 - h], [1, 2 * tw + 1 - w], [0, 0]])
    r = [xp[:, i:i + 2 * th:2] for i in range(4)]
    rows = [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]]
    out = []
    for row in rows:
        c = [row[:, :, j:j + 2 * tw:2] for j in range(4)]
        out += [c[0] - c[2], c[1] + c[2], c[2] - c[1], c[1] - c[3]]
    return tf.reshape(tf.stack(out), [16, -1, x.shape[-1]]), (n, h, w, th, tw)


def _wino_output(m: Any, dims: tuple[Any, ...], bias: Any) -> Any:
    """(16, tiles, O) -> N,H,W,O: A^T m A, the 2x2 outputs of each tile, plus bias."""
    import tensorflow as tf

    n, h, w, th, tw = dims
    cout = m.shape[-1]
    m = tf.reshape(m, [4, 4, n, th, tw, cout])
    halves = [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
    y = tf.stack([tf.stack([t[0] + t[1] + t[2], t[1] - t[2] - t[3]], axis=3) for t in halves], axis=2)
    return tf.reshape(y, [n, 2 * th, 2 * tw, cout])[:, :h, :w] + bias


def rrdbnet_winograd_forward(model: keras.Model) -> Any:
    """The forward of a `build_rrdbnet` model with every 3x3 conv done by Winograd F(2,3).

    Why: on CPU the direct convolutions of RRDBNet run close to the FMA peak already, so
    the only way to be much faster is fewer multiplies. Dense blocks suit Winograd: each
    feature map is transformed once and reused by every later conv of its block, and a
    conv over a concatenation is the sum of the products of its pieces (no concat copy).
    Reads the model's weights at call time, so it follows `load_state_dict`. Equal to the
    Keras model within float32 round-off (tests check 1e-4); use inside tf.function.
    """
    if not _is_rrdbnet(model):
        raise UserError(f"the Winograd forward needs an x4 RRDBNet; {model.name!r} is not one")
    layers = _conv_layers(model)
    num_block = sum(1 for name in layers if name.endswith(".rdb1.conv1"))

    import tensorflow as tf

    def conv(name: str, pieces: list[Any], dims: tuple[Any, ...]) -> Any:
        layer = layers[name]
        u = _wino_kernel(layer.kernel)
        acc, start = None, 0
        for v in pieces:
            c = v.shape[-1]
            part = tf.linalg.matmul(v, u[:, start:start + c])
            acc = part if acc is None else acc + part
            start += c
        return _wino_output(acc, dims, layer.bias)

    def plain(name: str, x: Any) -> Any:
        v, dims = _wino_input(x)
        return conv(name, [v], dims)

    def rdb(x: Any, prefix: str) -> Any:
        v, dims = _wino_input(x)
        pieces = [v]
        for i in range(1, 5):
            y = _lrelu(conv(f"{prefix}.conv{i}", pieces, dims))
            pieces.append(_wino_input(y)[0])
        return conv(f"{prefix}.conv5", pieces, dims) * _RES_SCALE + x

    def forward(x: Any) -> Any:
        feat = plain("conv_first", x)
        body = feat
        for n in range(num_block):
            out = body
            for k in (1, 2, 3):
                out = rdb(out, f"body.{n}.rdb{k}")
            body = out * _RES_SCALE + body
        feat = feat + plain("conv_body", body)
        for k in (1, 2):
            feat = tf.repeat(tf.repeat(feat, 2, axis=1), 2, axis=2)  # nearest x2
            feat = _lrelu(plain(f"conv_up{k}", feat))
        return plain("conv_last", _lrelu(plain("conv_hr", feat)))

    return forward


def _is_rrdbnet(model: keras.Model) -> bool:
    """True for an x4 `build_rrdbnet` model, the only layout the Winograd forward knows."""
    names = set(_conv_layers(model))
    return ({"conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"} <= names
            and "conv_up3" not in names)


# ---------------------------------------------------------------------------- inference


@dataclass
class KerasUpscaler:
    """An x``scale`` super-resolver: HxWx3 float RGB in [0, 1] -> (sH)x(sW)x3, clipped.

    Wraps any Keras model with that contract (ESRGAN, Real-ESRGAN ...) so comparisons
    treat them alike. The forward is one ``tf.function`` traced once per input shape;
    images larger than ``tile`` go through `doe_sr.sr.tiling.upscale_tiled`, which batches
    equal-size tiles so that function sees one shape.

    Defaults come from bench/esrgan_speed.py on 2 shared CPU cores (128x128 LR, full
    RRDBNet): the plain graph (TensorFlow's oneDNN kernels) ran at 0.93x PyTorch's time
    with no compile cost. ``jit=True`` (XLA) was between 1.0x and 1.7x PyTorch's time after
    a 30 s compile; ``winograd=True`` with ``jit=True`` (`rrdbnet_winograd_forward`) was
    the fastest Keras path (0.84x) but XLA needs about 3 minutes to compile it per input
    shape, which only pays off for many images of one tile size.
    """

    model: keras.Model
    name: str
    scale: int = 4
    tile: int = 128
    overlap: int = 16
    batch: int = 4
    jit: bool = False
    winograd: bool = False
    _forward: Any = field(default=None, init=False, repr=False)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self._forward is None:
            import tensorflow as tf

            model = self.model
            if self.winograd and _is_rrdbnet(model):
                fn = rrdbnet_winograd_forward(model)
            else:
                fn = lambda t: model(t, training=False)  # noqa: E731
            self._forward = tf.function(fn, jit_compile=self.jit, reduce_retracing=False)
        return np.asarray(self._forward(np.ascontiguousarray(x, dtype=np.float32)))

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        from doe_sr.sr.tiling import upscale_tiled

        lr = np.asarray(lr)
        if lr.ndim != 3 or lr.shape[2] != 3:
            raise UserError(f"{self.name} needs an HxWx3 RGB image, got shape {lr.shape}")
        out = upscale_tiled(self._predict, lr.astype(np.float32, copy=False), scale=self.scale,
                            tile=self.tile, overlap=self.overlap, batch=self.batch)
        return np.clip(out, 0.0, 1.0)


def esrgan_upscaler(
    weights: str | Path = "auto",
    *,
    tile: int = 128,
    overlap: int = 16,
    batch: int = 4,
    label: str = "ESRGAN",
    cache_dir: Path | None = None,
    jit: bool = False,
    winograd: bool = False,
    num_feat: int = 64,
    num_block: int = 23,
    num_grow_ch: int = 32,
) -> KerasUpscaler:
    """ESRGAN (official x4 weights by default, or any RRDBNet .pth) as a `KerasUpscaler`."""
    model = load_esrgan(weights, cache_dir=cache_dir, num_feat=num_feat,
                        num_block=num_block, num_grow_ch=num_grow_ch)
    return KerasUpscaler(model, name=label, scale=4, tile=tile, overlap=overlap, batch=batch, jit=jit,
                         winograd=winograd)
