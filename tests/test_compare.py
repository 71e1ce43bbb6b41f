"""Evaluation by the SR literature's protocol, through the real commands."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import doe_sr



@pytest.mark.parametrize("name, published", [("Set5", 28.42), ("Set14", 26.00)])
def test_bicubic_reproduces_published_numbers(shared_data, tmp_path, name, published):
    out = doe_sr("evaluate", "--model", "bicubic", "--hr", str(shared_data / "benchmarks" / name / "HR"),
                 "--scale", "4", "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc["images"][0]) >= {"name", "psnr_y", "ssim_y", "psnr_rgb"}
    assert len(doc["images"]) == (5 if name == "Set5" else 14)
    assert abs(doc["mean"]["psnr_y"] - published) <= 0.02


def test_given_lr_folder_is_used(shared_data, tmp_path):
    """An LR folder made with another resampler must change the result (the folder is really read)."""
    from doe_sr.sr.resize import imresize, modcrop

    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir(), lr_dir.mkdir()
    hr = modcrop(iio.imread(shared_data / "benchmarks" / "Set5" / "HR" / "bird.png"), 4)
    iio.imwrite(hr_dir / "bird.png", hr)
    nearest = hr[::4, ::4]  # point sampling: aliased, worse than antialiased bicubic
    iio.imwrite(lr_dir / "birdx4.png", nearest)
    own = json.loads(doe_sr("evaluate", "--model", "bicubic", "--hr", str(hr_dir), "--format", "json",
                            cwd=tmp_path).stdout)
    given = json.loads(doe_sr("evaluate", "--model", "bicubic", "--hr", str(hr_dir), "--lr", str(lr_dir),
                              "--format", "json", cwd=tmp_path).stdout)
    assert given["mean"]["psnr_y"] < own["mean"]["psnr_y"] - 0.5
    ref = imresize(imresize(hr, 0.25), 4.0)
    from doe_sr.sr.metrics import psnr_y

    assert abs(own["mean"]["psnr_y"] - psnr_y(ref, hr, shave=4)) < 1e-9


def test_bad_paths_exit_2(tmp_path):
    out = doe_sr("evaluate", "--model", "bicubic", "--hr", str(tmp_path / "nope"), cwd=tmp_path)
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    out = doe_sr("evaluate", "--model", "nosuchrun", "--hr", str(tmp_path), "--tracking-uri",
                 str(tmp_path / "mlruns"), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr


def test_upscale_writes_a_4x_png(shared_data, tmp_path):
    src = iio.imread(shared_data / "benchmarks" / "Set5" / "HR" / "butterfly.png")[:24, :40]
    iio.imwrite(tmp_path / "photo.png", src)
    out = doe_sr("upscale", str(tmp_path / "photo.png"), "--model", "realesrgan", "-o", str(tmp_path / "out"),
                 cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = iio.imread(tmp_path / "out" / "photo_x4.png")
    assert result.shape == (96, 160, 3) and result.dtype == np.uint8
    # a real super-resolution of the photo, not a blank: close to the source when shrunk back
    from doe_sr.sr.resize import imresize

    assert np.abs(imresize(result, 0.25).astype(float) - src.astype(float)).mean() < 12


def test_compare_on_a_finished_study(finished_tiny):
    cwd = finished_tiny.parent
    out = doe_sr("compare", str(finished_tiny), "--format", "json", cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    models = [r["model"] for r in doc["results"]]
    assert models[0].startswith("SR-NET (run ") and "Real-ESRGAN x4plus" in models and models[-1] == "bicubic"
    for r in doc["results"]:
        assert len(r["images"]) == 2 and all(np.isfinite(img["psnr_y"]) for img in r["images"])
    report = cwd / "reports" / "tiny"
    for name in ("comparison_mean.csv", "comparison_mean.tex", "comparison_per_image.md", "comparison.pdf",
                 "comparison_crops.png"):
        assert (report / name).stat().st_size > 0
    bicubic = doc["results"][-1]["mean"]["psnr_y"]
    srnet = doc["results"][0]["mean"]["psnr_y"]
    assert abs(srnet - bicubic) < 3  # a 4-step SR-NET is bicubic plus a small residual


def test_realesrgan_on_set5(shared_data, tmp_path):
    out = doe_sr("evaluate", "--model", "realesrgan", "--hr", str(shared_data / "benchmarks" / "Set5" / "HR"),
                 "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc["images"]) == 5
    assert 24 < doc["mean"]["psnr_y"] < 32
