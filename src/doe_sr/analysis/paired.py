"""Paired comparison of two super-resolvers on the same images: is the difference real?

Why paired: every model is scored on the *same* test images, and images differ far more
from each other (a flat sky against a textured wall: 10 dB) than good models differ from
one another (0.1-1 dB). Comparing the two means as if they were independent samples
would drown the model difference in the image-to-image spread; the per-image
*differences* remove it. So everything here works on ``d_i = a_i - b_i`` for the images
both methods scored (aligned by image name, never by position).

Three pieces of evidence, each reported:

* the paired t-test (``scipy.stats.ttest_rel``): assumes the differences are roughly
  normal; powerful when they are;
* the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, zeros dropped as Wilcoxon
  did): only assumes a symmetric distribution; robust to one odd image;
* a percentile bootstrap 95 % interval of the mean difference: ``N_RESAMPLES`` (10 000)
  resamples of the images with replacement, from ``numpy.random.default_rng(seed)``, so
  the same data give the same interval on every machine. The percentile interval is
  known to be too narrow for a handful of images, which is one reason it is never the
  only evidence.

The rule (``SIGNIFICANCE_RULE``): a difference is *significant* when both tests give
p < ``ALPHA`` (0.05) and the bootstrap interval excludes 0. Requiring all three is
deliberately conservative: a reader should not have to trust one test's assumptions.
There is no correction for the several pairs ``compare`` tests at once; the
three-way agreement is stricter than any single test, but it is not a family-wise bound.

With fewer than ``MIN_TESTABLE`` (6) images no test can reach p < 0.05: the smallest
two-sided exact Wilcoxon p-value with n images is 2/2^n (n = 5: 0.0625), so
``significant`` is ``None`` and the verdict says "not testable with n images" rather
than "no difference", which would be a claim the data cannot support either.

Pure numpy/scipy/pandas: no TensorFlow, MLflow or Optuna (import-linter contract).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from doe_sr.core.errors import UserError

__all__ = ["ALPHA", "METRIC_LABELS", "MIN_TESTABLE", "N_RESAMPLES", "SIGNIFICANCE_RULE", "PairedTest",
           "bootstrap_ci", "compare_models", "differences_table", "paired_test", "paired_tests_table",
           "pairs_of_interest"]

#: Significance level of both tests; the bootstrap interval is the matching 1 - ALPHA = 95 %.
ALPHA = 0.05
#: Fewest images at which an exact two-sided Wilcoxon p-value can fall below 0.05 (2/2^6 = 0.031).
MIN_TESTABLE = 6
#: Bootstrap resamples: the percentile interval's Monte-Carlo error is then ~0.01 of its width.
N_RESAMPLES = 10_000
#: How ``significant`` is decided, in the words the report prints.
SIGNIFICANCE_RULE = (f"significant = paired t-test p < {ALPHA} and Wilcoxon signed-rank p < {ALPHA} and the "
                     f"bootstrap 95% interval of the mean difference excludes 0; with fewer than {MIN_TESTABLE} "
                     "images no test can reach p < 0.05, so the pair is 'not testable'")

#: Metric keys of ``doe_sr.sr.compare`` results and how tables name them.
METRIC_LABELS = {"psnr_y": "PSNR-Y (dB)", "ssim_y": "SSIM-Y", "psnr_rgb": "PSNR-RGB (dB)"}


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


@dataclass(frozen=True)
class PairedTest:
    """The paired comparison of method ``a`` against method ``b`` on one metric.

    ``differences`` are ``a - b`` per image (positive: ``a`` scored higher; PSNR and SSIM
    are larger-is-better). ``significant`` is True/False, or None when ``n`` is too small
    for any test to reach p < ``alpha`` (see the module docstring for the rule).
    """

    metric: str
    a: str
    b: str
    images: tuple[str, ...]
    a_values: tuple[float, ...]
    b_values: tuple[float, ...]
    differences: tuple[float, ...]
    mean_diff: float
    median_diff: float
    sd_diff: float | None
    ci95: tuple[float, float]
    t_stat: float | None
    t_p: float | None
    wilcoxon_stat: float | None
    wilcoxon_p: float | None
    wins: int
    losses: int
    ties: int
    significant: bool | None
    verdict: str
    notes: tuple[str, ...] = field(default=())
    alpha: float = ALPHA
    n_resamples: int = N_RESAMPLES
    seed: int = 0

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def label(self) -> str:
        """``a - b``, the way the tables name a comparison."""
        return f"{self.a} − {self.b}"

    def to_dict(self) -> dict:
        """JSON-ready: NaN and infinities become null."""
        return {"metric": self.metric, "a": self.a, "b": self.b, "n": self.n,
                "mean_diff": _finite_or_none(self.mean_diff), "median_diff": _finite_or_none(self.median_diff),
                "sd_diff": _finite_or_none(self.sd_diff),
                "ci95": [_finite_or_none(self.ci95[0]), _finite_or_none(self.ci95[1])],
                "ci_method": f"percentile bootstrap, {self.n_resamples} resamples, seed {self.seed}",
                "t": {"statistic": _finite_or_none(self.t_stat), "p": _finite_or_none(self.t_p)},
                "wilcoxon": {"statistic": _finite_or_none(self.wilcoxon_stat), "p": _finite_or_none(self.wilcoxon_p)},
                "wins": self.wins, "losses": self.losses, "ties": self.ties,
                "significant": self.significant, "verdict": self.verdict, "alpha": self.alpha,
                "notes": list(self.notes),
                "images": [{"name": name, "a": float(va), "b": float(vb), "difference": float(d)}
                           for name, va, vb, d in zip(self.images, self.a_values, self.b_values, self.differences)]}


def bootstrap_ci(differences: Sequence[float] | np.ndarray, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences``.

    Each resample draws n indices with replacement (``default_rng(seed).integers(0, n,
    (rows, n))``, in blocks of rows so memory stays ~16 MB whatever n is; the draws are
    sequential, so blocks give the same stream as one big draw), takes the mean, and the
    interval is the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles (numpy's linear
    interpolation) of the ``n_resamples`` means.
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or d.size == 0:
        raise UserError("bootstrap: needs at least one difference")
    if not np.all(np.isfinite(d)):
        raise UserError("bootstrap: the differences must be finite numbers (drop NaN/inf images first)")
    if n_resamples < 1:
        raise UserError(f"bootstrap: n_resamples {n_resamples} must be at least 1")
    rng = np.random.default_rng(seed)
    n = d.size
    rows = max(1, 2_000_000 // n)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _align(a: Mapping[str, float], b: Mapping[str, float], a_name: str, b_name: str):
    """The images both methods scored, in ``a``'s order; names of the ones left out."""
    common = [k for k in a if k in b]
    only = sorted(set(a) ^ set(b))
    if not common:
        raise UserError(f"paired comparison {a_name} vs {b_name}: no image scored by both "
                        "(the per-image results must name the same images)")
    va = np.array([float(a[k]) for k in common])
    vb = np.array([float(b[k]) for k in common])
    finite = np.isfinite(va) & np.isfinite(vb)
    dropped = [k for k, ok in zip(common, finite) if not ok]
    names = [k for k, ok in zip(common, finite) if ok]
    if not names:
        raise UserError(f"paired comparison {a_name} vs {b_name}: no image has a finite value for both "
                        f"(not finite: {', '.join(dropped)})")
    return names, va[finite], vb[finite], only, dropped


def _tests(d: np.ndarray, notes: list[str]):
    """(t, p_t, W, p_W), None where a test is undefined, with the reason in ``notes``."""
    from scipy import stats  # ~0.3 s; only when a comparison is made

    n = d.size
    t_stat = t_p = w_stat = w_p = None
    if n < 2:
        notes.append("one image: no variance, so neither test is defined")
        return t_stat, t_p, w_stat, w_p
    if np.all(d == 0):
        notes.append("the two methods score every image identically (all differences are 0)")
        return t_stat, t_p, w_stat, w_p
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = stats.ttest_rel(d, np.zeros_like(d))
        w = stats.wilcoxon(d)
    t_stat, t_p = float(t.statistic), float(t.pvalue)
    w_stat, w_p = float(w.statistic), float(w.pvalue)
    if np.ptp(d) == 0:
        notes.append("every difference is the same: the t statistic is infinite in exact arithmetic")
    zeros = int(np.sum(d == 0))
    if zeros:
        notes.append(f"Wilcoxon: {zeros} zero difference(s) dropped (Wilcoxon's zero_method)")
    nonzero = np.abs(d[d != 0])
    if nonzero.size != np.unique(nonzero).size:
        notes.append("Wilcoxon: tied |differences|; scipy's p-value is then approximate")
    return t_stat, t_p, w_stat, w_p


def paired_test(a: Mapping[str, float], b: Mapping[str, float], *, a_name: str, b_name: str,
                metric: str = "psnr_y", alpha: float = ALPHA, n_resamples: int = N_RESAMPLES,
                seed: int = 0) -> PairedTest:
    """Compare ``a`` (image name -> value) with ``b`` on the images both scored.

    Images only one method scored, or with a non-finite value (PSNR of a perfect copy
    is inf), are left out and named in ``notes``. Raises `UserError` when no image is left.
    """
    names, va, vb, only, dropped = _align(a, b, a_name, b_name)
    d = va - vb
    n = d.size
    notes: list[str] = []
    if only:
        notes.append(f"scored by one method only, left out: {', '.join(only)}")
    if dropped:
        notes.append(f"not finite, left out: {', '.join(dropped)}")
    t_stat, t_p, w_stat, w_p = _tests(d, notes)
    lo, hi = bootstrap_ci(d, n_resamples=n_resamples, seed=seed, level=1.0 - alpha)
    mean = float(d.mean())
    if n < MIN_TESTABLE:
        significant = None
        verdict = f"not testable with {n} image{'s' if n != 1 else ''}"
        notes.append(f"with n = {n} the smallest possible Wilcoxon p-value is {2.0 ** (1 - n) if n > 1 else 1.0:.3g}"
                     f"; at least {MIN_TESTABLE} images are needed for p < {alpha}")
    else:
        significant = bool(t_p is not None and w_p is not None and t_p < alpha and w_p < alpha
                           and (lo > 0 or hi < 0))
        if significant:
            verdict = f"{a_name} better" if mean > 0 else f"{b_name} better"
        else:
            verdict = "no significant difference"
    return PairedTest(metric=metric, a=a_name, b=b_name, images=tuple(names), a_values=tuple(map(float, va)),
                      b_values=tuple(map(float, vb)), differences=tuple(map(float, d)), mean_diff=mean,
                      median_diff=float(np.median(d)), sd_diff=float(d.std(ddof=1)) if n > 1 else None,
                      ci95=(lo, hi), t_stat=t_stat, t_p=t_p, wilcoxon_stat=w_stat, wilcoxon_p=w_p,
                      wins=int(np.sum(d > 0)), losses=int(np.sum(d < 0)), ties=int(np.sum(d == 0)),
                      significant=significant, verdict=verdict, notes=tuple(notes), alpha=alpha,
                      n_resamples=n_resamples, seed=seed)


def pairs_of_interest(models: Sequence[str], *, network: str, baseline: str = "bicubic") -> list[tuple[str, str]]:
    """(a, b) pairs, each read as "a minus b": the network against the baseline, the network
    against every other model, and every other model against the baseline."""
    if network not in models:
        raise UserError(f"paired comparison: model {network!r} is not among {', '.join(models)}")
    others = [m for m in models if m not in (network, baseline)]
    pairs = [(network, baseline)] if baseline in models else []
    pairs += [(network, m) for m in others]
    if baseline in models:
        pairs += [(m, baseline) for m in others]
    return pairs


def _per_image(result: Mapping, metric: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for img in result["images"]:
        if img["name"] in values:
            raise UserError(f"paired comparison: image {img['name']!r} appears twice in {result['model']}'s "
                            "results; image names must be unique")
        values[img["name"]] = float(img[metric])
    return values


def compare_models(results: Sequence[Mapping], *, network: str | None = None, baseline: str = "bicubic",
                   metrics: Sequence[str] = ("psnr_y", "ssim_y"), alpha: float = ALPHA,
                   n_resamples: int = N_RESAMPLES, seed: int = 0) -> list[PairedTest]:
    """Every pair of interest (`pairs_of_interest`) on every metric, from evaluation
    results as `doe_sr.sr.compare.evaluate_pairs` returns them (``{"model", "images":
    [{"name", "psnr_y", ...}]}``); ``network`` defaults to the first model."""
    if not results:
        raise UserError("paired comparison: no model results")
    by_model = {r["model"]: r for r in results}
    network = network or results[0]["model"]
    out = []
    for metric in metrics:
        values = {m: _per_image(r, metric) for m, r in by_model.items()}
        for a, b in pairs_of_interest(list(by_model), network=network, baseline=baseline):
            out.append(paired_test(values[a], values[b], a_name=a, b_name=b, metric=metric, alpha=alpha,
                                   n_resamples=n_resamples, seed=seed))
    return out


def _significance(t: PairedTest) -> str:
    return {True: "yes", False: "no", None: f"not testable (n={t.n})"}[t.significant]


def paired_tests_table(tests: Sequence[PairedTest]):
    """One row per comparison: n, mean difference, bootstrap interval, both p-values,
    wins/losses/ties, ``significant`` (yes / no / not testable (n=k)) and the verdict."""
    import pandas as pd

    return pd.DataFrame([{"metric": METRIC_LABELS.get(t.metric, t.metric), "comparison (a − b)": t.label,
                          "n": t.n, "mean diff": t.mean_diff, "CI95 low": t.ci95[0], "CI95 high": t.ci95[1],
                          "t p": t.t_p if t.t_p is not None else math.nan,
                          "Wilcoxon p": t.wilcoxon_p if t.wilcoxon_p is not None else math.nan,
                          "wins/losses/ties": f"{t.wins}/{t.losses}/{t.ties}",
                          "significant": _significance(t), "verdict": t.verdict} for t in tests])


def differences_table(tests: Sequence[PairedTest]):
    """One row per (comparison, image): both values, their difference (a − b) and whether
    that comparison is significant."""
    import pandas as pd

    return pd.DataFrame([{"metric": METRIC_LABELS.get(t.metric, t.metric), "comparison (a − b)": t.label,
                          "image": name, "a": va, "b": vb, "difference": d, "significant": _significance(t)}
                         for t in tests
                         for name, va, vb, d in zip(t.images, t.a_values, t.b_values, t.differences)])
