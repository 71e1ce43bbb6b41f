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
    check_paired(doc, report, finished_tiny)


def check_paired(doc: dict, report, study) -> None:
    """The paired tests of ``compare``: numbers recomputed from the per-image results, the
    2-image test split reported as not testable, the tables written and filed with the parent."""
    import pandas as pd
    from mlflow.tracking import MlflowClient
    from scipy import stats

    from doe_sr.analysis.paired import METRIC_LABELS

    models = [r["model"] for r in doc["results"]]
    net, gan = models[0], "Real-ESRGAN x4plus"
    expected = [(net, "bicubic"), (net, gan), (gan, "bicubic")]
    assert [(p["a"], p["b"]) for p in doc["paired"] if p["metric"] == "psnr_y"] == expected
    assert {p["metric"] for p in doc["paired"]} == {"psnr_y", "ssim_y"} and "Wilcoxon" in doc["paired_rule"]
    per_image = pd.read_csv(report / "comparison_per_image.csv")
    values = {(row.model, row.name): row for row in per_image.itertuples()}
    tests = pd.read_csv(report / "paired_tests.csv")
    diffs = pd.read_csv(report / "per_image_differences.csv")
    for p in doc["paired"]:
        a = np.array([getattr(values[(p["a"], img["name"])], p["metric"]) for img in p["images"]])
        b = np.array([getattr(values[(p["b"], img["name"])], p["metric"]) for img in p["images"]])
        assert len(a) == 2  # the tiny study's test split: too few images for any test
        assert p["significant"] is None and p["verdict"] == "not testable with 2 images"
        assert p["mean_diff"] == pytest.approx((a - b).mean(), rel=1e-9, abs=1e-12)
        if np.any(a != b):
            assert p["wilcoxon"]["p"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
        if np.ptp(a - b) > 0:
            assert p["t"]["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
        assert min(a - b) - 1e-12 <= p["ci95"][0] <= p["ci95"][1] <= max(a - b) + 1e-12
        label = f"{p['a']} − {p['b']}"
        row = tests[(tests["comparison (a − b)"] == label) & (tests["metric"] == METRIC_LABELS[p["metric"]])]
        assert len(row) == 1 and row["significant"].iloc[0] == "not testable (n=2)"
        assert row["mean diff"].iloc[0] == pytest.approx(p["mean_diff"], rel=1e-9, abs=1e-12)
        mine = diffs[(diffs["comparison (a − b)"] == label) & (diffs["metric"] == row["metric"].iloc[0])]
        assert np.allclose(mine["difference"].to_numpy(), a - b, rtol=0, atol=1e-9)
    for name in ("paired_tests.md", "paired_tests.tex", "per_image_differences.md", "paired_differences.png"):
        assert (report / name).stat().st_size > 0
    assert "not testable (n=2)" in (report / "paired_tests.md").read_text()
    page = (report / "index.html").read_text()
    assert 'id="paired_differences"' in page and "not testable (n=2)" in page  # compare rebuilt the page
    client = MlflowClient(tracking_uri=f"sqlite:///{study.parent / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    parent = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("doe_sr.role") == "parent"][0]
    first = doc["paired"][0]
    assert first["a"] == net and first["metric"] == "psnr_y"
    key = "".join(ch if ch.isalnum() else "_" for ch in net.lower()).strip("_") + "_vs_bicubic"
    assert parent.data.metrics[f"paired_{key}_psnr_y_mean_diff"] == pytest.approx(first["mean_diff"])
    assert f"paired_{key}_psnr_y_significant" not in parent.data.metrics  # not testable: no 0/1 claimed
    assert parent.data.tags[f"doe_sr.paired.{key}.psnr_y"] == "not testable with 2 images"
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert "comparison/paired_tests.csv" in logged and "comparison/per_image_differences.csv" in logged


def test_realesrgan_on_set5(shared_data, tmp_path):
    out = doe_sr("evaluate", "--model", "realesrgan", "--hr", str(shared_data / "benchmarks" / "Set5" / "HR"),
                 "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc["images"]) == 5
    assert 24 < doc["mean"]["psnr_y"] < 32
