"""PSNR/SSIM conventions of the SR literature, checked against hand and independent values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import correlate2d

from doe_sr.sr.metrics import evaluate_pair, psnr, psnr_rgb, psnr_y, rgb_to_y, ssim_y, to_uint8


def _image(seed: int = 0, shape: tuple[int, ...] = (40, 48, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(20, 236, shape, dtype=np.uint8)


def test_rgb_to_y_on_pure_colours() -> None:
    colours = np.array(
        [[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8
    )
    np.testing.assert_allclose(
        rgb_to_y(colours)[0], [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-9
    )
    # float [0, 1] input means the same colours
    np.testing.assert_allclose(rgb_to_y(colours / 255.0), rgb_to_y(colours), atol=1e-9)
    with pytest.raises(ValueError, match="HxWx3"):
        rgb_to_y(np.zeros((4, 4)))


def test_to_uint8_rounds_half_up_and_saturates() -> None:
    x = np.array([-0.2, 0.0, 0.5 / 255, 1.49 / 255, 0.5, 1.0, 1.3])
    np.testing.assert_array_equal(to_uint8(x), [0, 0, 1, 1, 128, 255, 255])
    u = _image()
    assert to_uint8(u) is u
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(np.array([np.nan]))


def test_psnr_of_one_grey_level_offset() -> None:
    hr = _image()
    sr = hr + np.uint8(1)
    # MSE = 1 -> 10 log10(255^2) = 48.1308 dB
    assert psnr_rgb(sr, hr, shave=0) == pytest.approx(20 * math.log10(255), abs=1e-9)
    assert psnr_rgb(sr, hr, shave=0) == pytest.approx(48.13, abs=0.005)
    # On Y an offset of one level in R, G and B moves Y by 219/255.
    assert psnr_y(sr, hr, shave=0) == pytest.approx(20 * math.log10(255 / (219 / 255)), abs=1e-9)


def test_psnr_agrees_with_scikit_image() -> None:
    from skimage.metrics import peak_signal_noise_ratio

    hr, sr = _image(0), _image(1)
    assert psnr(sr, hr) == pytest.approx(peak_signal_noise_ratio(hr, sr, data_range=255), abs=1e-9)
    a, b = hr / 255.0, sr / 255.0
    assert psnr(a, b, data_range=1.0) == pytest.approx(psnr(hr, sr), abs=1e-9)


def test_identical_images() -> None:
    hr = _image()
    assert psnr_y(hr, hr, shave=4) == math.inf
    assert psnr_rgb(hr, hr, shave=4) == math.inf
    assert ssim_y(hr, hr, shave=4) == pytest.approx(1.0, abs=1e-12)


def test_float_inputs_are_evaluated_as_8_bit() -> None:
    hr = _image(0)
    sr = _image(1)
    sr_float = sr / 255.0 + 0.001  # sub-level noise disappears when quantised
    assert psnr_y(sr_float, hr / 255.0, shave=2) == pytest.approx(psnr_y(sr, hr, shave=2), abs=1e-12)
    assert ssim_y(sr_float, hr, shave=2) == pytest.approx(ssim_y(sr, hr, shave=2), abs=1e-12)


def test_shave_removes_the_border() -> None:
    hr = _image()
    sr = hr.copy()
    sr[:3] = 0
    sr[:, -3:] = 255
    assert psnr_rgb(sr, hr, shave=3) == math.inf
    assert psnr_y(sr, hr, shave=2) < 30
    # the interior alone decides the score
    sr[10, 10] = 0
    expected = psnr(sr[3:-3, 3:-3], hr[3:-3, 3:-3])
    assert psnr_rgb(sr, hr, shave=3) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr_rgb(sr, hr, shave=24)


def test_more_noise_scores_lower() -> None:
    hr = _image().astype(np.float64)
    rng = np.random.default_rng(3)
    noise = rng.normal(size=hr.shape)
    scores = []
    for sigma in (2, 8, 20):
        sr = np.clip(hr + sigma * noise, 0, 255).round().astype(np.uint8)
        scores.append((psnr_y(sr, hr.astype(np.uint8), shave=4), ssim_y(sr, hr.astype(np.uint8), shave=4)))
    assert scores[0][0] > scores[1][0] > scores[2][0]
    assert 1 > scores[0][1] > scores[1][1] > scores[2][1]


def _matlab_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s ssim_index.m: fspecial('gaussian', 11, 1.5), filter2 'valid'."""
    ax = np.arange(-5, 6)
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 1.5**2))
    w = g / g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def f(x: np.ndarray) -> np.ndarray:
        return correlate2d(x, w, mode="valid")

    mu1, mu2 = f(a), f(b)
    s11 = f(a * a) - mu1**2
    s22 = f(b * b) - mu2**2
    s12 = f(a * b) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return float(m.mean())


def test_ssim_matches_the_authors_matlab_formula_on_y() -> None:
    hr = _image(0, (37, 41, 3))
    rng = np.random.default_rng(5)
    sr = np.clip(hr + rng.normal(scale=12, size=hr.shape), 0, 255).round().astype(np.uint8)
    expected = _matlab_ssim(rgb_to_y(sr)[4:-4, 4:-4], rgb_to_y(hr)[4:-4, 4:-4])
    assert ssim_y(sr, hr, shave=4) == pytest.approx(expected, abs=1e-10)


def test_greyscale_is_evaluated_on_its_grey_values() -> None:
    hr = _image(0, (30, 30))
    sr = _image(1, (30, 30))
    assert psnr_y(sr, hr, shave=1) == pytest.approx(psnr(sr, hr, shave=1), abs=1e-12)
    assert psnr_y(sr[..., None], hr[..., None], shave=1) == pytest.approx(psnr(sr, hr, shave=1))
    # Stacked into RGB, Y shrinks the differences by 219/255.
    stacked = psnr_y(np.dstack([sr] * 3), np.dstack([hr] * 3), shave=1)
    assert stacked - psnr_y(sr, hr, shave=1) == pytest.approx(20 * math.log10(255 / 219), abs=1e-9)
    expected = _matlab_ssim(sr[1:-1, 1:-1].astype(float), hr[1:-1, 1:-1].astype(float))
    assert ssim_y(sr, hr, shave=1) == pytest.approx(expected, abs=1e-10)


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(40, 48, 3\) vs \(40, 44, 3\)"):
        psnr_y(_image(0), _image(0, (40, 44, 3)), shave=4)
    with pytest.raises(ValueError, match=r"\(30, 30\) vs \(30, 30, 3\)"):
        evaluate_pair(_image(0, (30, 30)), _image(0, (30, 30, 3)), scale=2)


def test_evaluate_pair_uses_scale_as_shave() -> None:
    hr = _image()
    sr = _image(1)
    result = evaluate_pair(sr, hr, scale=3)
    assert set(result) == {"psnr_y", "ssim_y", "psnr_rgb"}
    assert result["psnr_y"] == psnr_y(sr, hr, shave=3)
    assert result["ssim_y"] == ssim_y(sr, hr, shave=3)
    assert result["psnr_rgb"] == psnr_rgb(sr, hr, shave=3)
