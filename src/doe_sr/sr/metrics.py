"""PSNR and SSIM as the super-resolution literature computes them.

The conventions, so that our numbers line up with published tables (EDSR, RCAN, ESRGAN,
and BasicSR's ``basicsr/metrics/psnr_ssim.py``, which reproduces them in Python):

* images are evaluated as 8-bit: float outputs in [0, 1] are rounded to ``uint8`` first;
* a border of ``scale`` pixels is shaved from every side before comparing;
* the main numbers are on the luma channel Y of ITU-R BT.601 YCbCr
  (``16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in [0, 1]), kept unrounded in
  the 0-255 range, as BasicSR does (MATLAB's ``rgb2ycbcr`` on ``uint8`` would round Y);
* PSNR uses a peak of 255;
* SSIM follows Wang et al.'s MATLAB ``ssim_index``: 11x11 Gaussian window with
  sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, averaged over the "valid" region where the
  window fits. scikit-image's ``structural_similarity`` with ``gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255`` computes exactly that: its
  window is the same truncated, normalised Gaussian and it averages over the same
  interior.

Greyscale (HxW or HxWx1) images are compared on their grey values directly, without the
BT.601 mapping: BasicSR's ``to_y_channel`` and the MATLAB evaluation scripts only convert
3-channel images. This matters for Set14's ``bridge.png``: evaluated as grey it gives the
published bicubic x4 mean of 26.00 dB (SSIM 0.7027); stacked to RGB and mapped to Y, its
PSNR rises by 20 log10(255/219) = 1.32 dB and the Set14 mean becomes 26.09 dB.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

__all__ = ["to_uint8", "rgb_to_y", "psnr", "psnr_y", "ssim_y", "psnr_rgb", "evaluate_pair"]


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Quantise a float image in [0, 1] to ``uint8``; ``uint8`` passes through unchanged.

    Rounds half away from zero and saturates, like MATLAB's ``im2uint8``, because the
    published numbers are computed on saved 8-bit images.
    """
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"expected a uint8 or float image, got dtype {img.dtype}")
    if np.isnan(img).any():
        raise ValueError("image contains NaN; cannot evaluate it")
    return np.clip(np.floor(img.astype(np.float64) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _as_rgb_or_grey(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3 and img.shape[2] == 1:
        return img[..., 0]
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3):
        return img
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {img.shape}")


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Luma Y of ITU-R BT.601 YCbCr in the 0-255 scale (16 for black, 235 for white).

    Accepts an HxWx3 RGB image, ``uint8`` (0-255) or float in [0, 1]; returns float64,
    not rounded (BasicSR's ``bgr2ycbcr(..., y_only=True) * 255``).
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an HxWx3 RGB image, got shape {img.shape}")
    rgb01 = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    return 16.0 + rgb01 @ np.array([65.481, 128.553, 24.966])


def _luma(img8: np.ndarray) -> np.ndarray:
    """The plane the Y metrics compare: BT.601 Y for RGB, the grey values for greyscale."""
    if img8.ndim == 2:
        return img8.astype(np.float64)
    return rgb_to_y(img8)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")


def _shave(img: np.ndarray, shave: int) -> np.ndarray:
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    if shave == 0:
        return img
    h, w = img.shape[:2]
    if 2 * shave >= min(h, w):
        raise ValueError(f"shaving {shave} pixels leaves nothing of a {h}x{w} image")
    return img[shave:-shave, shave:-shave, ...]


def psnr(a: np.ndarray, b: np.ndarray, *, shave: int = 0, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB.

    ``a`` and ``b`` are compared as given (in the units of ``data_range``; no
    quantisation), after shaving ``shave`` pixels from each border. Identical images
    give ``inf``.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    _check_pair(a, b)
    diff = _shave(a, shave).astype(np.float64) - _shave(b, shave).astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _prepare(sr: np.ndarray, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sr = np.asarray(sr)
    hr = np.asarray(hr)
    _check_pair(sr, hr)
    return _as_rgb_or_grey(to_uint8(sr)), _as_rgb_or_grey(to_uint8(hr))


def psnr_y(sr: np.ndarray, hr: np.ndarray, *, shave: int) -> float:
    """PSNR on the BT.601 Y channel (grey values for greyscale), 8-bit, ``shave`` cropped."""
    sr8, hr8 = _prepare(sr, hr)
    return psnr(_luma(sr8), _luma(hr8), shave=shave)


def psnr_rgb(sr: np.ndarray, hr: np.ndarray, *, shave: int) -> float:
    """PSNR over all RGB values of the 8-bit images, ``shave`` pixels cropped."""
    sr8, hr8 = _prepare(sr, hr)
    return psnr(sr8, hr8, shave=shave)


def ssim_y(sr: np.ndarray, hr: np.ndarray, *, shave: int) -> float:
    """SSIM on the BT.601 Y channel (Wang et al.'s MATLAB settings), ``shave`` cropped."""
    sr8, hr8 = _prepare(sr, hr)
    y_sr = _shave(_luma(sr8), shave)
    y_hr = _shave(_luma(hr8), shave)
    if min(y_sr.shape) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after shaving, got {y_sr.shape}")
    return float(
        structural_similarity(
            y_sr,
            y_hr,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255.0,
        )
    )


def evaluate_pair(sr: np.ndarray, hr: np.ndarray, *, scale: int) -> dict[str, float]:
    """The three numbers ``doe-sr evaluate`` reports for one image, shave = ``scale``."""
    return {
        "psnr_y": psnr_y(sr, hr, shave=scale),
        "ssim_y": ssim_y(sr, hr, shave=scale),
        "psnr_rgb": psnr_rgb(sr, hr, shave=scale),
    }
