"""The paired comparison of models (`doe_sr.analysis.paired`) on synthetic per-image data,
checked against scipy.stats and against hand computations of the bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from doe_sr.analysis.paired import (
    MIN_TESTABLE,
    bootstrap_ci,
    compare_models,
    differences_table,
    paired_test,
    pairs_of_interest,
    paired_tests_table,
)
from doe_sr.core.errors import UserError


def scores(values) -> dict[str, float]:
    return {f"img{i:02d}": float(v) for i, v in enumerate(values)}


def result(model: str, values, ssim=None) -> dict:
    ssim = np.full(len(values), 0.7) if ssim is None else ssim
    return {"model": model, "images": [{"name": f"img{i:02d}", "psnr_y": float(v), "ssim_y": float(s)}
                                       for i, (v, s) in enumerate(zip(values, ssim))]}


@pytest.fixture
def sample():
    rng = np.random.default_rng(42)
    b = 24 + 2 * rng.normal(size=15)  # image-to-image spread far above the model difference
    a = b + 0.3 + 0.25 * rng.normal(size=15)
    return a, b


def test_tests_equal_scipy(sample):
    a, b = sample
    t = paired_test(scores(a), scores(b), a_name="A", b_name="B")
    ref_t, ref_w = stats.ttest_rel(a, b), stats.wilcoxon(a, b)
    assert t.t_stat == pytest.approx(ref_t.statistic, rel=1e-12) and t.t_p == pytest.approx(ref_t.pvalue, rel=1e-12)
    assert t.wilcoxon_stat == ref_w.statistic and t.wilcoxon_p == pytest.approx(ref_w.pvalue, rel=1e-12)
    d = a - b
    assert t.mean_diff == pytest.approx(d.mean()) and t.sd_diff == pytest.approx(d.std(ddof=1))
    assert t.t_stat == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(15)))  # by hand
    assert (t.wins, t.losses, t.ties) == (int((d > 0).sum()), int((d < 0).sum()), 0)
    # the paired test sees what an unpaired one drowns in the image-to-image spread
    assert t.significant is True and t.verdict == "A better"
    assert stats.ttest_ind(a, b).pvalue > 0.05


def test_images_are_aligned_by_name_not_position(sample):
    a, b = sample
    shuffled = dict(reversed(list(scores(b).items())))
    shuffled["extra"] = 99.0
    t = paired_test(scores(a), shuffled, a_name="A", b_name="B")
    assert t.n == 15 and t.differences == pytest.approx(tuple(a - b))
    assert any("extra" in note for note in t.notes)


def test_bootstrap_equals_hand_computation():
    d = np.array([0.4, -0.1, 0.25, 0.3, 0.05, 0.6, 0.2])
    rng = np.random.default_rng(7)
    means = d[rng.integers(0, d.size, size=(2000, d.size))].mean(axis=1)
    assert bootstrap_ci(d, n_resamples=2000, seed=7) == tuple(np.percentile(means, [2.5, 97.5]))


def test_bootstrap_in_blocks_equals_one_draw():
    """Large n is resampled in blocks of rows to bound memory; the numbers must not change."""
    d = np.random.default_rng(1).normal(size=700)  # 2e6 // 700 = 2857 rows per block: 4 blocks
    rng = np.random.default_rng(3)
    means = d[rng.integers(0, d.size, size=(10_000, d.size))].mean(axis=1)
    assert bootstrap_ci(d, seed=3) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), abs=1e-15)


def test_bootstrap_of_a_constant_is_that_constant():
    assert bootstrap_ci([0.37] * 9) == pytest.approx((0.37, 0.37), abs=1e-15)


def test_bootstrap_is_close_to_the_t_interval_for_large_n():
    d = np.random.default_rng(5).normal(0.2, 1.0, size=400)
    lo, hi = bootstrap_ci(d, seed=0)
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    assert lo < d.mean() < hi
    assert abs((hi - lo) / 2 - half) < 0.05 * half
    assert abs((hi + lo) / 2 - d.mean()) < 0.1 * half
    ref = stats.bootstrap((d,), np.mean, n_resamples=10_000, method="percentile", rng=np.random.default_rng(9))
    assert abs(lo - ref.confidence_interval.low) < 0.05 * half
    assert abs(hi - ref.confidence_interval.high) < 0.05 * half
    assert bootstrap_ci(d, seed=0) == (lo, hi)  # seeded: the same on every call


def test_all_three_must_agree():
    """t says p < 0.05, Wilcoxon does not (one small reversal gets rank 1): not significant."""
    d = np.array([1.0, 1.1, 0.9, 1.2, 1.05, -0.1])
    t = paired_test(scores(d), scores(np.zeros(6)), a_name="A", b_name="B")
    assert t.t_p < 0.05 and t.wilcoxon_p == pytest.approx(stats.wilcoxon(d).pvalue) and t.wilcoxon_p > 0.05
    assert t.ci95[0] > 0
    assert t.significant is False and t.verdict == "no significant difference"


def test_b_better_and_noise():
    rng = np.random.default_rng(0)
    base = rng.normal(25, 2, size=12)
    worse = paired_test(scores(base - 0.5 + 0.1 * rng.normal(size=12)), scores(base), a_name="A", b_name="B")
    assert worse.significant is True and worse.verdict == "B better" and worse.ci95[1] < 0
    noise = paired_test(scores(base + 0.3 * rng.normal(size=12)), scores(base), a_name="A", b_name="B")
    assert noise.significant is False and noise.ci95[0] < 0 < noise.ci95[1]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_small_n_is_not_testable(n):
    """Even a large, consistent effect: with n < 6 no exact Wilcoxon p can be < 0.05."""
    a, b = np.arange(n) + 3.0, np.arange(n) + 0.0 + 0.01 * np.arange(n)
    t = paired_test(scores(a), scores(b), a_name="A", b_name="B")
    assert n < MIN_TESTABLE and t.significant is None and t.verdict == f"not testable with {n} images"
    assert t.wilcoxon_p == pytest.approx(stats.wilcoxon(a, b).pvalue) and t.wilcoxon_p >= 2.0 ** (1 - n)
    assert t.t_p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert any(f"at least {MIN_TESTABLE} images" in note for note in t.notes)
    assert t.to_dict()["significant"] is None


def test_one_image():
    t = paired_test({"x": 30.0}, {"x": 29.5}, a_name="A", b_name="B")
    assert t.n == 1 and t.significant is None and t.verdict == "not testable with 1 image"
    assert t.t_p is None and t.wilcoxon_p is None and t.sd_diff is None and t.ci95 == (0.5, 0.5)
    doc = t.to_dict()
    assert doc["t"] == {"statistic": None, "p": None} and doc["mean_diff"] == 0.5


def test_identical_methods():
    t = paired_test(scores(np.linspace(20, 30, 8)), scores(np.linspace(20, 30, 8)), a_name="A", b_name="B")
    assert t.significant is False and t.t_p is None and t.wilcoxon_p is None and t.ci95 == (0.0, 0.0)
    assert t.ties == 8 and any("identically" in note for note in t.notes)


def test_constant_difference():
    b = np.linspace(20, 30, 8)
    t = paired_test(scores(b + 0.2), scores(b), a_name="A", b_name="B")
    assert t.ci95 == pytest.approx((0.2, 0.2)) and t.significant is True
    assert any("same" in note for note in t.notes)


def test_non_finite_values_are_left_out_and_named():
    a = scores([25.0, float("nan"), 26.0, float("inf"), 27.0])
    b = scores([24.0, 24.0, 25.0, 25.0, 26.0])
    t = paired_test(a, b, a_name="A", b_name="B")
    assert t.images == ("img00", "img02", "img04") and t.differences == (1.0, 1.0, 1.0)
    assert any("img01" in note and "img03" in note for note in t.notes)
    assert np.isfinite(t.mean_diff) and t.significant is None


@pytest.mark.parametrize("a, b, says", [
    ({"x": 1.0}, {"y": 1.0}, "no image scored by both"),
    ({"x": float("nan")}, {"x": 1.0}, "no image has a finite value"),
])
def test_unusable_input_is_one_line_user_error(a, b, says):
    with pytest.raises(UserError, match=says) as err:
        paired_test(a, b, a_name="A", b_name="B")
    assert "\n" not in str(err.value)


def test_duplicate_image_names_are_refused():
    bad = {"model": "A", "images": [{"name": "x", "psnr_y": 1.0, "ssim_y": 0.5}] * 2}
    with pytest.raises(UserError, match="appears twice"):
        compare_models([bad, result("bicubic", [1.0])])


def test_pairs_of_interest():
    models = ["SR-NET (run 3)", "Real-ESRGAN x4plus", "ESRGAN", "bicubic"]
    assert pairs_of_interest(models, network="SR-NET (run 3)") == [
        ("SR-NET (run 3)", "bicubic"), ("SR-NET (run 3)", "Real-ESRGAN x4plus"), ("SR-NET (run 3)", "ESRGAN"),
        ("Real-ESRGAN x4plus", "bicubic"), ("ESRGAN", "bicubic")]
    assert pairs_of_interest(["net", "bicubic"], network="net") == [("net", "bicubic")]
    with pytest.raises(UserError):
        pairs_of_interest(models, network="nope")


def test_compare_models_and_tables():
    rng = np.random.default_rng(11)
    base = rng.normal(25, 2, size=10)
    net, gan = base + 0.5 + 0.1 * rng.normal(size=10), base - 1 + 0.5 * rng.normal(size=10)
    ssim = 0.7 + 0.01 * rng.normal(size=10)
    tests = compare_models([result("net", net, ssim + 0.01), result("gan", gan, ssim), result("bicubic", base, ssim)])
    assert [(t.metric, t.a, t.b) for t in tests] == [
        ("psnr_y", "net", "bicubic"), ("psnr_y", "net", "gan"), ("psnr_y", "gan", "bicubic"),
        ("ssim_y", "net", "bicubic"), ("ssim_y", "net", "gan"), ("ssim_y", "gan", "bicubic")]
    assert tests[0].mean_diff == pytest.approx((net - base).mean())
    assert tests[3].differences == pytest.approx(tuple(np.full(10, 0.01)))
    table = paired_tests_table(tests)
    assert list(table["significant"]) == [{True: "yes", False: "no", None: "n/a"}[t.significant] for t in tests]
    assert table.loc[0, "t p"] == pytest.approx(stats.ttest_rel(net, base).pvalue)
    diffs = differences_table(tests)
    assert len(diffs) == 6 * 10
    assert np.allclose(diffs["difference"], diffs["a"] - diffs["b"])
    first = diffs[diffs["comparison (a − b)"] == "net − gan"].iloc[0]
    assert first["difference"] == pytest.approx(net[0] - gan[0]) and first["metric"] == "PSNR-Y (dB)"


def test_write_paired_files_and_marks(tmp_path):
    """The tables and the figure from `workflow.compare.write_paired`; the CSV holds the
    same numbers as the tests, the Markdown marks the significant rows in bold."""
    from doe_sr.workflow.compare import paired_metrics, write_paired

    rng = np.random.default_rng(2)
    base = rng.normal(25, 2, size=8)
    tests = compare_models([result("SR-NET (run 3)", base + 0.4 + 0.05 * rng.normal(size=8)),
                            result("bicubic", base)], metrics=("psnr_y",))
    files = write_paired(tests, tmp_path)
    names = {p.name for p in files}
    assert {"paired_tests.csv", "paired_tests.md", "paired_tests.tex", "per_image_differences.csv",
            "paired_differences.png", "paired_differences.pdf"} <= names
    csv = pd.read_csv(tmp_path / "paired_tests.csv")
    assert csv.loc[0, "mean diff"] == pytest.approx(tests[0].mean_diff, rel=1e-12)
    assert csv.loc[0, "Wilcoxon p"] == pytest.approx(tests[0].wilcoxon_p, rel=1e-12)
    assert csv.loc[0, "significant"] == "yes"
    md = (tmp_path / "paired_tests.md").read_text()
    assert "**SR-NET (run 3) − bicubic**" in md and "| **yes** |" in md and "Rule: significant =" in md
    metrics, tags = paired_metrics(tests)
    assert metrics["paired_sr_net__run_3_vs_bicubic_psnr_y_significant"] == 1.0
    assert metrics["paired_sr_net__run_3_vs_bicubic_psnr_y_mean_diff"] == tests[0].mean_diff
    assert tags["doe_sr.paired.sr_net__run_3_vs_bicubic.psnr_y"] == "yes: SR-NET (run 3) better"


def test_compare_prints_the_paired_tests(capsys, monkeypatch):
    from doe_sr.cli.models import _print_paired

    monkeypatch.setenv("COLUMNS", "200")  # one line per row, whatever the terminal

    base = np.linspace(20, 30, 2)
    _print_paired(compare_models([result("SR-NET (run 3)", base + 0.3), result("bicubic", base)]))
    out = capsys.readouterr().out
    assert "SR-NET (run 3) − bicubic" in out and "not testable (n=2)" in out and "[+0.300, +0.300]" in out
