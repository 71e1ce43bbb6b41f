"""The figure of the paired comparison: every image's difference, the mean and its interval.

Why dots and not bars: a bar of the mean difference hides whether one image carries the
whole effect. Each comparison is one row: a dot per image (a − b), the mean as a black
diamond with its bootstrap 95 % interval, and the zero line, so a reader sees at once
whether the interval crosses zero. Where there are too few images to test (fewer than
`doe_sr.analysis.paired.MIN_TESTABLE`) only the mean is drawn, hollow: the bootstrap of
two images is their range, not a 95 % interval. The row's label says what the tests concluded
(significant / n.s. / not testable with n images): the figure never draws more
certainty than the tests found. Written as PDF, SVG and 300-dpi PNG like every figure
(`doe_sr.report.plots`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from doe_sr.report.plots import _new_figure, _paper_style, _save

if TYPE_CHECKING:
    from doe_sr.analysis.paired import PairedTest

__all__ = ["paired_differences"]


def _status(t: PairedTest) -> str:
    if t.significant is None:
        return f"not testable (n={t.n})"
    return "significant" if t.significant else "n.s."


def paired_differences(tests: Sequence[PairedTest], out_stem: Path, *, unit: str = "dB") -> list[Path]:
    """One row per comparison of ``tests`` (all of one metric): per-image differences,
    mean with bootstrap 95 % interval, zero line, and the tests' conclusion."""
    import numpy as np

    with _paper_style() as palette:
        fig = _new_figure(6.4, 0.9 + 0.55 * len(tests))
        ax = fig.subplots()
        rng = np.random.default_rng(0)  # jitter only: fixed so the figure is reproducible
        for row, t in enumerate(tests):
            d = np.asarray(t.differences, dtype=float)
            jitter = rng.uniform(-0.15, 0.15, size=d.size) if d.size > 1 else np.zeros(d.size)
            ax.scatter(d, row + jitter, s=14, color=palette[row % len(palette)], alpha=0.75, linewidths=0,
                       zorder=2)
            if t.significant is None:  # a bootstrap of 1-5 images is not a 95% interval: draw none
                ax.plot([t.mean_diff], [row], "D", markerfacecolor="white", markeredgecolor="black", markersize=4,
                        zorder=3)
                continue
            lo, hi = t.ci95
            ax.errorbar([t.mean_diff], [row], xerr=[[t.mean_diff - lo], [hi - t.mean_diff]], fmt="D", color="black",
                        markersize=4, capsize=3, linewidth=1, zorder=3)
        ax.axvline(0.0, color="0.4", linewidth=0.8, linestyle="--", zorder=1)
        ax.set_yticks(range(len(tests)), [f"{t.label}\n[{_status(t)}]" for t in tests], fontsize=6.5)
        ax.set_ylim(len(tests) - 0.5, -0.5)
        metric = tests[0].metric.replace("_y", "-Y").upper() if tests else ""
        ax.set_xlabel(f"difference a − b, {metric}" + (f" ({unit})" if unit else ""))
        marks = []  # only the markers the figure uses, on a second line: the title must fit the width
        if any(t.significant is not None for t in tests):
            marks.append("◆ mean with bootstrap 95% interval")
        if any(t.significant is None for t in tests):
            marks.append("◇ mean (too few images for an interval)")
        ax.set_title("dots: images; dashed: no difference\n" + "; ".join(marks), fontsize="small")
        return _save(fig, out_stem)
