"""Hostile images for `doe-sr evaluate` (an ``hr/`` folder) and `doe-sr upscale` (files).

Large images are written at test time: a PNG of zeros compresses about 1000:1, so the
12000x12000 one is 420 KB on disk and 432 MB decoded. The 100000x100000 one is a bare
header (no pixel data at all): only the header may be read before it is refused.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np


def _hr(work: Path) -> Path:
    folder = work / "hr"
    folder.mkdir(exist_ok=True)
    return folder


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _photo(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def text_named_png(work: Path) -> None:
    (_hr(work) / "x.png").write_text("this is not an image\nbut it has a png name\n")


def two_by_two(work: Path) -> None:
    iio.imwrite(_hr(work) / "tiny.png", _photo(2, 2))


def one_by_one(work: Path) -> None:
    iio.imwrite(_hr(work) / "dot.png", _photo(1, 1))


def zeros_12000(work: Path) -> None:
    iio.imwrite(work / "zeros.png", np.zeros((12000, 12000, 3), np.uint8))


def header_100000(work: Path) -> None:
    (_hr(work) / "huge.png").write_bytes(_png_header_only(100000, 100000))
    (work / "huge.png").write_bytes(_png_header_only(100000, 100000))


def truncated_png(work: Path) -> None:
    iio.imwrite(_hr(work) / "cut.png", _photo(64, 64))
    raw = (_hr(work) / "cut.png").read_bytes()
    (_hr(work) / "cut.png").write_bytes(raw[: len(raw) * 6 // 10])


def truncated_jpeg_named_png(work: Path) -> None:
    """A JPEG behind a .png name (read by its content), cut short."""
    iio.imwrite(work / "photo.jpg", _photo(64, 64), extension=".jpg")
    raw = (work / "photo.jpg").read_bytes()
    (_hr(work) / "photo.png").write_bytes(raw[: len(raw) // 2])


def empty_png(work: Path) -> None:
    (_hr(work) / "empty.png").write_bytes(b"")


def folder_named_png(work: Path) -> None:
    (_hr(work) / "x.png").mkdir()
    (work / "dir.png").mkdir()


def x4_over_the_cap(work: Path) -> None:
    """3000x3000 is allowed as input; its x4 output (144 MP) is not."""
    iio.imwrite(work / "big.png", np.zeros((3000, 3000, 3), np.uint8))


def good_hr(work: Path) -> None:
    iio.imwrite(_hr(work) / "ok.png", _photo(64, 64))
    (work / "lr").mkdir()
