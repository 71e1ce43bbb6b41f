"""MATLAB-exact bicubic resizing: hand-computed 1-D cases, invariants, published numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from doe_sr.sr.metrics import psnr_y, ssim_y
from doe_sr.sr.resize import imresize, modcrop


def test_upscale_x2_of_two_pixels_matches_hand_computation() -> None:
    # Output x = 1..4 maps to u = x/2 + 1/4 = 0.75, 1.25, 1.75, 2.25. For u = 0.75 the
    # taps at distances 1.75, 0.75, 0.25, 1.25 have Keys weights -3/128, 29/128, 111/128,
    # -9/128; taps -1 and 0 reflect onto pixels 2 and 1, so the value is
    # (29 + 111)/128 * v1 + (-3 - 9)/128 * v2. For u = 1.25: (-9 + 111)/128 * v1 +
    # (29 - 3)/128 * v2. The last two outputs mirror the first two.
    out = imresize(np.array([[0.0, 1.0]]), output_shape=(1, 4))
    expected = np.array([[-12 / 128, 26 / 128, 102 / 128, 140 / 128]])
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_antialiased_halving_matches_hand_computation() -> None:
    # Scale 1/2: kernel 0.5 * cubic(d / 2), 8 pixels wide. Output 1 sits at u = 1.5 and
    # sees taps -2..5 at distances 3.5, 2.5, ..., -3.5 with weights
    # -3/256, -9/256, 29/256, 111/256, 111/256, 29/256, -9/256, -3/256. With symmetric
    # reflection the taps read pixels 3, 2, 1, 1, 2, 3, 4, 4, whose values on the ramp
    # [0, 1, 2, 3] are 2, 1, 0, 0, 1, 2, 3, 3:
    # (-6 - 9 + 0 + 0 + 111 + 58 - 27 - 9) / 256 = 118/256.
    ramp = np.array([[0.0, 1.0, 2.0, 3.0]])
    out = imresize(ramp, output_shape=(1, 2))
    np.testing.assert_allclose(out, [[118 / 256, 3 - 118 / 256]], atol=1e-12)
    # The same along the other axis (a column), through the scale argument.
    np.testing.assert_allclose(imresize(ramp.T, 0.5).T, out, atol=1e-12)


def test_without_antialiasing_halving_samples_the_narrow_kernel() -> None:
    # Without antialiasing the kernel keeps width 4: u = 1.5 sees distances 1.5 and 0.5
    # on each side with weights -1/16 and 9/16, reading pixels 0 (-> 1 reflected), 1, 2, 3.
    ramp = np.array([[0.0, 1.0, 2.0, 3.0]])
    out = imresize(ramp, output_shape=(1, 2), antialiasing=False)
    first = (-1 * 0 + 9 * 0 + 9 * 1 - 1 * 2) / 16
    np.testing.assert_allclose(out, [[first, 3 - first]], atol=1e-12)


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 2, 3, 4])
def test_constant_image_stays_constant(scale: float) -> None:
    img = np.full((23, 17, 3), 0.3125)
    out = imresize(img, scale)
    assert out.shape == (math.ceil(23 * scale), math.ceil(17 * scale), 3)
    np.testing.assert_allclose(out, 0.3125, atol=1e-12)
    grey8 = np.full((23, 17), 201, dtype=np.uint8)
    assert np.all(imresize(grey8, scale) == 201)


def _reference_resize_1d(line: np.ndarray, out_len: int, scale: float) -> np.ndarray:
    """Per-pixel transcription of MATLAB's contributions() for one row (slow, independent)."""
    n = line.size
    width = 4.0 / scale if scale < 1 else 4.0
    out = np.empty(out_len)
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        acc = 0.0
        total = 0.0
        for j in range(left, left + math.ceil(width) + 2):
            d = (u - j) * (scale if scale < 1 else 1.0)
            a = abs(d)
            if a <= 1:
                w = 1.5 * a**3 - 2.5 * a**2 + 1
            elif a <= 2:
                w = -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
            else:
                w = 0.0
            # reflect: ..., 2, 1 | 1, 2, ..., n | n, n-1, ...
            k = j
            while k < 1 or k > n:
                k = 1 - k if k < 1 else 2 * n + 1 - k
            acc += w * line[k - 1]
            total += w
        out[x - 1] = acc / total
    return out


@pytest.mark.parametrize(("shape", "out_shape"), [((9, 14), (3, 4)), ((5, 6), (13, 11)), ((12, 7), (5, 19))])
def test_matches_per_pixel_reference_and_resizes_smaller_scale_first(
    shape: tuple[int, int], out_shape: tuple[int, int]
) -> None:
    rng = np.random.default_rng(0)
    img = rng.random(shape)
    sh, sw = out_shape[0] / shape[0], out_shape[1] / shape[1]

    def along_rows(a: np.ndarray) -> np.ndarray:
        return np.stack([_reference_resize_1d(r, out_shape[1], sw) for r in a])

    def along_cols(a: np.ndarray) -> np.ndarray:
        return np.stack([_reference_resize_1d(c, out_shape[0], sh) for c in a.T]).T

    # MATLAB resizes along the dimension with the smaller scale first; with uint8 the
    # order changes the result through the intermediate rounding.
    ref = along_rows(along_cols(img)) if sh <= sw else along_cols(along_rows(img))
    np.testing.assert_allclose(imresize(img, output_shape=out_shape), ref, atol=1e-12)

    img8 = (img * 255).round().astype(np.uint8)

    def q(a: np.ndarray) -> np.ndarray:
        return np.clip(np.floor(a + 0.5), 0, 255)

    if sh <= sw:
        ref8 = q(along_rows(q(along_cols(img8.astype(float)))))
    else:
        ref8 = q(along_cols(q(along_rows(img8.astype(float)))))
    out8 = imresize(img8, output_shape=out_shape)
    assert out8.dtype == np.uint8
    np.testing.assert_array_equal(out8, ref8.astype(np.uint8))


def test_dtypes_and_channels() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((8, 10, 3)).astype(np.float32) * 3 - 1  # out of [0, 1] on purpose
    out = imresize(img, 2)
    assert out.dtype == np.float32 and out.shape == (16, 20, 3)
    # Floats are not clipped: overshoot of the cubic kernel survives.
    assert out.max() > img.max() or out.min() < img.min()
    # Each channel is resized independently.
    np.testing.assert_allclose(out[..., 1], imresize(img[..., 1].astype(np.float64), 2), rtol=1e-5, atol=1e-5)
    assert imresize(img.astype(np.float64), 0.5).dtype == np.float64


def test_bad_arguments_raise() -> None:
    img = np.zeros((4, 4))
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img, 2, output_shape=(8, 8))
    with pytest.raises(ValueError, match="positive"):
        imresize(img, 0)
    with pytest.raises(ValueError, match="shape"):
        imresize(np.zeros((2, 2, 2, 2)), 2)


def test_modcrop() -> None:
    img = np.arange(11 * 10 * 3).reshape(11, 10, 3)
    out = modcrop(img, 4)
    assert out.shape == (8, 8, 3)
    np.testing.assert_array_equal(out, img[:8, :8])
    assert modcrop(img[..., 0], 5).shape == (10, 10)
    assert modcrop(img, 1).shape == img.shape


def _bicubic_x4_scores(folder: Path) -> tuple[float, float]:
    """The SR literature's bicubic x4 protocol on a folder of HR images."""
    psnrs, ssims = [], []
    for path in sorted(folder.glob("*.png")):
        hr = modcrop(np.asarray(Image.open(path)), 4)
        sr = imresize(imresize(hr, 1 / 4), 4)
        assert sr.shape == hr.shape
        psnrs.append(psnr_y(sr, hr, shave=4))
        ssims.append(ssim_y(sr, hr, shave=4))
    return float(np.mean(psnrs)), float(np.mean(ssims))


def test_bicubic_x4_reproduces_published_set5_and_set14(shared_data: Path) -> None:
    # Published bicubic x4 (VDSR, EDSR, RCAN tables): Set5 28.42 dB / 0.8104,
    # Set14 26.00 dB / 0.7027. Set14's bridge.png is greyscale and, as in the MATLAB
    # scripts, is evaluated on its grey values.
    set5_psnr, set5_ssim = _bicubic_x4_scores(shared_data / "benchmarks" / "Set5" / "HR")
    set14_psnr, set14_ssim = _bicubic_x4_scores(shared_data / "benchmarks" / "Set14" / "HR")
    assert set5_psnr == pytest.approx(28.42, abs=0.02)
    assert set14_psnr == pytest.approx(26.00, abs=0.02)
    assert set5_ssim == pytest.approx(0.8104, abs=0.002)
    assert set14_ssim == pytest.approx(0.7027, abs=0.002)
