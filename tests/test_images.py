"""Images are read with a pixel cap checked from the header, and large ones are upscaled in bounded memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from doe_sr.core.errors import UserError
from doe_sr.sr.images import DEFAULT_MAX_PIXELS, image_size, read_image


def _header_only_png(path: Path, width: int, height: int) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))


def test_cap_is_checked_from_the_header_and_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _header_only_png(tmp_path / "huge.png", 100000, 100000)
    with pytest.raises(UserError, match=rf"100000x100000 = 10000000000 pixels, over the limit of {DEFAULT_MAX_PIXELS}"):
        read_image(tmp_path / "huge.png")
    iio.imwrite(tmp_path / "small.png", np.zeros((30, 40, 3), np.uint8))
    assert image_size(tmp_path / "small.png") == (30, 40)
    monkeypatch.setenv("DOE_SR_MAX_PIXELS", "1000")
    with pytest.raises(UserError, match="40x30 = 1200 pixels, over the limit of 1000 pixels.*DOE_SR_MAX_PIXELS"):
        read_image(tmp_path / "small.png")


def test_messages_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_text("not an image\nat all\n")
    with pytest.raises(UserError) as info:
        read_image(tmp_path / "x.png")
    assert "\n" not in str(info.value) and "x.png" in str(info.value)


def test_tiled_bicubic_equals_the_whole_image() -> None:
    """Bicubic reads 2 LR pixels either side: tiles with 8 pixels of context change nothing."""
    from doe_sr.sr.compare import BicubicUpscaler

    lr = np.random.default_rng(1).random((150, 130, 3)).astype(np.float32)
    whole = BicubicUpscaler(scale=4, tile=1000)(lr)
    tiled = BicubicUpscaler(scale=4, tile=40)(lr)
    assert tiled.shape == (600, 520, 3)
    np.testing.assert_array_equal(tiled, whole)


_PEAK = """
import resource, sys
from doe_sr.cli.main import main
rc = main(sys.argv[1:])
print("peak_rss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(rc)
"""


def _peak_rss_gb(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    out = subprocess.run([sys.executable, "-c", _PEAK, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    kb = [int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("peak_rss_kb")]
    return out, (kb[0] / 2**20 if kb else float("nan"))


def test_large_upscale_runs_in_bounded_memory(tmp_path: Path) -> None:
    """2000x2000 x4 (64 MP out) stays under 3 GB; the landed whole-image imresize took several times that.

    About 0.7 GB of the peak is TensorFlow's import; the rest is the float32 output and
    its uint8 copy (15 bytes per output pixel), not imresize's float64 passes.
    """
    iio.imwrite(tmp_path / "zeros.png", np.zeros((2000, 2000, 3), np.uint8))
    out, peak = _peak_rss_gb(["upscale", str(tmp_path / "zeros.png"), "--model", "bicubic", "-o",
                              str(tmp_path / "out")], tmp_path)
    assert out.returncode == 0, out.stderr
    result = iio.imread(tmp_path / "out" / "zeros_x4.png")
    assert result.shape == (8000, 8000, 3) and not result.any()
    assert peak < 3.0, f"peak RSS {peak:.2f} GB"
