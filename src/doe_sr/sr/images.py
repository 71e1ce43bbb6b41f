"""Read PNG/JPEG images with a bound on how many pixels one file may make us decode.

Why: an image's memory is set by the size in its header, not by the file's size. A
420 KB PNG of 12000x12000 zeros decodes to 432 MB and drove ``upscale`` past 15 GB; a
100000x100000 header would ask for 30 GB. So the size is read from the header first
(Pillow's ``Image.open`` parses only the header) and an image over the cap is refused
with one line, before a single pixel is decoded.

The cap, ``DOE_SR_MAX_PIXELS``, counts the pixels of any image doe-sr reads *or makes*
(``upscale`` checks its output, input x scale^2, before decoding the input). The
default, 10^8, is 35 times a DIV2K HR image (2040x1404 = 2.9 MP), so every SR benchmark
and a x4 upscale of a whole DIV2K HR image (46 MP) fit, while the worst case stays at a
few GB: 10^8 RGB pixels are 0.3 GB as uint8 and 1.2 GB as float32. Raise it (e.g.
``DOE_SR_MAX_PIXELS=400000000``) for bigger images on a machine with the memory.

Pillow's own guard, ``Image.MAX_IMAGE_PIXELS``, is off while we read a header (we check
the size ourselves right after, and say it in one line) and set to the same cap for
decoding, so its ``DecompressionBombError`` and warning never reach the user.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from doe_sr.core.errors import UserError

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_PIXELS_ENV", "check_pixels", "image_size", "max_pixels", "read_image",
           "read_raw"]

MAX_PIXELS_ENV = "DOE_SR_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000


def max_pixels() -> int:
    """The pixel cap: ``$DOE_SR_MAX_PIXELS`` if set, else `DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{MAX_PIXELS_ENV}={raw!r} is not a positive whole number of pixels; "
                        f"unset it (default {DEFAULT_MAX_PIXELS}) or give e.g. 400000000")
    return value


def check_pixels(path: Path | str, height: int, width: int, *, made: str = "") -> None:
    """Refuse an image of ``height`` x ``width`` pixels over the cap, in one line.

    ``made`` describes a derived image (``"upscaled x4 would be"``) when the output, not
    the file itself, is what would be too large.
    """
    cap = max_pixels()
    if height * width > cap:
        what = f"{made or 'is'} {width}x{height}"
        raise UserError(f"image {path} {what} = {height * width} pixels, over the limit of {cap} pixels; "
                        f"use a smaller image or raise the limit with {MAX_PIXELS_ENV}=N (needs memory)")


def _short(exc: BaseException) -> str:
    """The first line of an exception's message: decoders' messages can run to several lines."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def _open_header(path: Path):  # noqa: ANN202 - a PIL.Image.Image
    """Open ``path`` with Pillow, which parses the header only, with its guard set to our cap."""
    from PIL import Image, UnidentifiedImageError

    cap = max_pixels()
    if not path.exists():
        raise UserError(f"image {path} not found")
    if not path.is_file():
        raise UserError(f"image {path} is not a file (a folder?); give a PNG or JPEG file")
    try:
        # Pillow's guard is off while only the header is read (our check follows, in one
        # line, with the size); it is the cap again for any decoding after.
        Image.MAX_IMAGE_PIXELS = None
        return Image.open(path)
    except UnidentifiedImageError:
        raise UserError(f"cannot read image {path}: not a PNG/JPEG image (wrong content for its name?); "
                        "remove or replace the file") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UserError(f"cannot read image {path}: {_short(exc)}; remove or replace the file") from None
    finally:
        Image.MAX_IMAGE_PIXELS = cap


def image_size(path: Path | str) -> tuple[int, int]:
    """(height, width) from the file header, checked against the cap, without decoding pixels."""
    path = Path(path)
    with _open_header(path) as im:
        width, height = im.size
    if width < 1 or height < 1:
        raise UserError(f"image {path} has no pixels ({width}x{height}); remove or replace the file")
    check_pixels(path, height, width)
    return height, width


def read_raw(path: Path | str) -> np.ndarray:
    """Decode an image as stored (HxW grey, HxWx3/4, any bit depth) after the header check."""
    import imageio.v3 as iio
    from PIL import Image

    path = Path(path)
    image_size(path)
    try:
        img = np.asarray(iio.imread(path))
    except Image.DecompressionBombError as exc:
        raise UserError(f"image {path} is too large ({_short(exc)}); raise {MAX_PIXELS_ENV}") from None
    except (OSError, ValueError, SyntaxError, EOFError, RuntimeError) as exc:  # truncated or corrupt data
        raise UserError(f"cannot read image {path}: {_short(exc)}; remove or replace the file") from None
    if img.size == 0 or img.ndim not in (2, 3):
        raise UserError(f"cannot read image {path}: it decodes to an array of shape {img.shape}; "
                        "give a single-frame PNG or JPEG")
    return img


def read_image(path: Path | str) -> np.ndarray:
    """Any PNG/JPEG as HxWx3 uint8, refused in one line when corrupt or over the pixel cap."""
    from doe_sr.sr.data import to_rgb

    return to_rgb(read_raw(path))
