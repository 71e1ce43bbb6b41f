"""Paper figures of a Taguchi analysis: main effects, interactions, ANOVA contributions.

Every function writes the same figure three times, ``out_stem`` + ``.pdf``, ``.svg``
(vector, for LaTeX/the web) and ``.png`` at 300 dpi (the usual journal minimum for
raster figures), and returns the three paths. Style: seaborn's "paper" context and
its "colorblind" palette (Waskom, seaborn docs, "Choosing color palettes"), so lines
stay distinguishable in grey-scale print and for colour-blind readers.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, not through
``pyplot``: no global backend switch, no figure registry to leak from, safe in
worker processes without a display; each figure is explicitly closed after saving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from doe_sr.core.errors import UserError

if TYPE_CHECKING:  # pandas/analysis only for types; the callers have them imported
    import pandas as pd

    from doe_sr.analysis.taguchi import Analysis

__all__ = ["comparison_bars", "comparison_crops", "contributions", "interactions", "main_effects"]

FORMATS = (".pdf", ".svg", ".png")
DPI = 300


@contextmanager
def _paper_style():
    import seaborn as sns  # ~0.5 s to import; only when a figure is drawn

    with sns.plotting_context("paper"), sns.axes_style("ticks"):
        with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
            yield sns.color_palette("colorblind")


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_stem: Path) -> list[Path]:
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        for suffix in FORMATS:
            # The contract is out_stem.with_suffix(...): a stem like "fig.v2" loses ".v2".
            path = out_stem.with_suffix(suffix)
            fig.savefig(path, dpi=DPI)
            paths.append(path)
    finally:
        fig.clf()
        _close(fig)
    return paths


def _close(fig: Figure) -> None:
    """Release the figure; pyplot.close is only needed if pyplot created it."""
    import sys

    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)


def main_effects(
    analysis: Analysis, out_stem: Path, *, labels: Mapping[str, str] | None = None
) -> list[Path]:
    """Main-effects plots as Minitab draws them: for each factor the mean of the
    run means (top row) and of the run S/N ratios (bottom row) at each level, with
    the grand mean dashed; rows share their y axis so effect sizes compare across
    factors."""
    labels = dict(labels or {})
    factors = analysis.factors
    panels = (
        ("mean", f"Mean of {analysis.response}", analysis.grand_mean),
        ("sn", "Mean of S/N ratios (dB)", analysis.grand_sn),
    )
    with _paper_style() as palette:
        fig = _new_figure(1.2 + 1.5 * len(factors), 4.2)
        axes = fig.subplots(2, len(factors), sharey="row", squeeze=False)
        for row, (which, ylabel, grand) in enumerate(panels):
            values = analysis.level_values(which)
            for col, factor in enumerate(factors):
                ax = axes[row][col]
                lvls = analysis.levels[factor]
                ax.plot(range(len(lvls)), [values[factor][v] for v in lvls],
                        marker="o", color=palette[row])
                ax.axhline(grand, linestyle="--", linewidth=0.8, color="0.5")
                ax.set_xticks(range(len(lvls)), lvls)
                ax.set_xlim(-0.4, len(lvls) - 0.6)
                ax.set_xlabel(labels.get(factor, factor))
                if col == 0:
                    ax.set_ylabel(ylabel)
        return _save(fig, out_stem)


def interactions(
    results: pd.DataFrame,
    factors: Sequence[str],
    response: str,
    out_stem: Path,
    *,
    levels: Mapping[str, Sequence[str]] | None = None,
) -> list[Path]:
    """Interaction plot matrix (Minitab's layout): the panel in row i, column j
    (i != j) plots the mean response against the levels of factor j, one line per
    level of factor i. Non-parallel lines hint at an interaction; in a saturated
    orthogonal array the cell means are few and aliased, so read them as hints only.
    """
    import pandas as pd

    from doe_sr.analysis.observations import as_text  # imports pandas; kept out of module import time

    factors = list(factors)
    if len(factors) < 2:
        raise UserError(f"an interaction plot needs at least two factors, got {factors}")
    data = results.copy()
    missing = [c for c in [*factors, response] if c not in data.columns]
    if missing:
        raise UserError(f"results table has no column(s) {missing}; its columns are {list(data.columns)}")
    for f in factors:
        data[f] = data[f].map(as_text)  # the analyzer's reading of level text
    data[response] = pd.to_numeric(data[response], errors="coerce")
    data = data[data[response].notna()]
    order = {f: [str(v) for v in (levels or {}).get(f, [])] or list(dict.fromkeys(data[f]))
             for f in factors}
    k = len(factors)
    with _paper_style():
        import seaborn as sns

        fig = _new_figure(1.9 * k, 1.7 * k)
        axes = fig.subplots(k, k, squeeze=False)
        for i, fi in enumerate(factors):
            palette = sns.color_palette("colorblind", len(order[fi]))
            for j, fj in enumerate(factors):
                ax = axes[i][j]
                if i == j:
                    ax.axis("off")
                    ax.text(0.5, 0.5, fi, ha="center", va="center", transform=ax.transAxes,
                            fontsize="large")
                    continue
                cells = data.groupby([fi, fj])[response].mean()
                for c, li in enumerate(order[fi]):
                    ys = [cells.get((li, lj), float("nan")) for lj in order[fj]]
                    ax.plot(range(len(order[fj])), ys, marker="o", color=palette[c],
                            label=li)
                ax.set_xticks(range(len(order[fj])), order[fj])
                ax.set_xlim(-0.4, len(order[fj]) - 0.6)
                if i == k - 1 or (i == k - 2 and j == k - 1):
                    ax.set_xlabel(fj)
                if j == 0 or (j == 1 and i == 0):
                    ax.set_ylabel(f"Mean {response}")
                if j == (1 if i == 0 else 0):
                    ax.legend(title=fi, fontsize="x-small", title_fontsize="x-small",
                              frameon=False)
        return _save(fig, out_stem)


def contributions(analysis: Analysis, out_stem: Path) -> list[Path]:
    """Horizontal bars of each ANOVA source's % contribution to the total sum of
    squares of the S/N ratios (pooled terms are shown inside "Error")."""
    table = analysis.anova
    shown = table[(table["source"] != "Total") & (~table["pooled"])]
    with _paper_style() as palette:
        fig = _new_figure(4.0, 0.5 + 0.35 * len(shown))
        ax = fig.subplots()
        names = list(shown["source"])
        values = [float(v) if v == v else 0.0 for v in shown["contribution_pct"]]
        colors = ["0.6" if n == "Error" else palette[0] for n in names]
        positions = range(len(names))[::-1]
        ax.barh(list(positions), values, color=colors)
        ax.set_yticks(list(positions), names)
        for y, v in zip(positions, values):
            ax.text(v, y, f" {v:.1f}%", va="center", fontsize="small")
        ax.set_xlim(0, max(values + [1.0]) * 1.18)
        ax.set_xlabel("Contribution to S/N variation (%)")
        title = "pooled: " + ", ".join(analysis.pooled) if analysis.pooled else None
        if title:
            ax.set_title(title, fontsize="small")
        return _save(fig, out_stem)


def comparison_bars(mean: pd.DataFrame, out_stem: Path) -> list[Path]:
    """Mean PSNR-Y and SSIM-Y per model side by side (the comparison's headline figure)."""
    with _paper_style() as palette:
        fig = _new_figure(6.0, 2.6)
        axes = fig.subplots(1, 2)
        for ax, col in zip(axes, ("PSNR-Y (dB)", "SSIM-Y")):
            values = mean[col].to_numpy(dtype=float)
            ax.barh(range(len(mean)), values, color=[palette[i % len(palette)] for i in range(len(mean))])
            ax.set_yticks(range(len(mean)), [str(m) for m in mean["model"]])
            ax.invert_yaxis()
            ax.set_xlabel(col)
            lo = float(values.min())
            ax.set_xlim(lo - (0.05 * lo if col.startswith("PSNR") else 0.1), None)
            for i, v in enumerate(values):
                ax.text(v, i, f" {v:.2f}" if col.startswith("PSNR") else f" {v:.3f}", va="center", fontsize=7)
        axes[1].set_yticklabels([])
        return _save(fig, out_stem)


def comparison_crops(hr, crops: Mapping[str, object], out_stem: Path, *, title: str = "") -> list[Path]:
    """The same crop of one test image from every model, beside the HR ground truth."""
    import numpy as np

    with _paper_style():
        panels = {"HR": hr, **crops}
        fig = _new_figure(1.6 * len(panels), 1.9)
        axes = fig.subplots(1, len(panels))
        for ax, (name, img) in zip(np.atleast_1d(axes), panels.items()):
            ax.imshow(img, cmap="gray" if np.asarray(img).ndim == 2 else None, vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_title(name, fontsize=7)
            ax.set_axis_off()
        if title:
            fig.suptitle(title, fontsize=8)
        return _save(fig, out_stem)
