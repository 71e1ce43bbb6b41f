"""Paper figures of a Taguchi analysis: main effects, interactions, ANOVA contributions,
Pareto chart of the contributions with its significance line, residual plots.

A figure never draws more certainty than the data hold: error bars, significance
marks and the Pareto chart's significance line appear only when the analysis has an
error estimate on that scale (:attr:`Analysis.noise`); without one the figure says so
in a visible note instead. ``standard_figures`` writes the whole set a study report
and ``doe-sr analyze --plots`` show, so both show the same figures.

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
import textwrap
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

__all__ = ["comparison_bars", "comparison_crops", "contributions", "interactions", "main_effects", "pareto",
           "residuals_four_in_one", "significance_line", "standard_figures"]

#: Colour of the notes that say what a figure cannot show.
NOTE_COLOR = "#b2182b"

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
    factors.

    Where a row's scale has an error estimate, each level mean carries its 95 %
    interval (:meth:`Analysis.level_intervals`, drawn as error bars whose SVG ids start
    with ``ci95``); factors significant in the ANOVA the noise source judges on get a
    ``*`` after their name, explained in the caption under the figure. A row without
    an estimate has no bars and says so; with no estimate at all the caption reads
    "no error estimate: effects cannot be judged against noise"."""
    labels = dict(labels or {})
    factors = analysis.factors
    panels = (
        ("mean", f"Mean of {analysis.response}", analysis.grand_mean),
        ("sn", "Mean of S/N ratios (dB)", analysis.grand_sn),
    )
    noise = analysis.noise
    judged = "mean" if noise is not None and noise.scale == "raw" else "sn"
    stars = {f: bool(analysis.significant.get(f)) for f in factors}
    with _paper_style() as palette:
        fig = _new_figure(1.2 + 1.5 * len(factors), 4.6)
        axes = fig.subplots(2, len(factors), sharey="row", squeeze=False)
        drawn = []
        for row, (which, ylabel, grand) in enumerate(panels):
            values = analysis.level_values(which)
            intervals = analysis.level_intervals(which)
            for col, factor in enumerate(factors):
                ax = axes[row][col]
                lvls = analysis.levels[factor]
                ys = [values[factor][v] for v in lvls]
                ax.plot(range(len(lvls)), ys, marker="o", color=palette[row])
                if intervals is not None:
                    lo = [ys[i] - intervals[factor][v][0] for i, v in enumerate(lvls)]
                    hi = [intervals[factor][v][1] - ys[i] for i, v in enumerate(lvls)]
                    bars = ax.errorbar(range(len(lvls)), ys, yerr=[lo, hi], fmt="none", ecolor=palette[row],
                                       elinewidth=0.9, capsize=3)
                    for i, collection in enumerate(bars.lines[2]):
                        collection.set_gid(f"ci95-{which}-{col}-{i}")
                ax.axhline(grand, linestyle="--", linewidth=0.8, color="0.5")
                ax.set_xticks(range(len(lvls)), lvls)
                ax.set_xlim(-0.4, len(lvls) - 0.6)
                name = labels.get(factor, factor)
                mark = " *" if which == judged and stars[factor] else ""
                ax.set_xlabel(name + mark + (" (pooled)" if factor in analysis.pooled and which == judged else ""))
                if col == 0:
                    ax.set_ylabel(ylabel)
            drawn.append(intervals is not None)
        caption = textwrap.fill(_main_effects_caption(analysis, judged, drawn), int(11 * fig.get_figwidth()))
        fig.supxlabel(caption, fontsize="small", color="black" if any(drawn) else NOTE_COLOR)
        return _save(fig, out_stem)


def _main_effects_caption(analysis: Analysis, judged: str, drawn: list[bool]) -> str:
    noise = analysis.noise
    if noise is None or noise.source == "none" or not any(drawn):
        return "no error estimate: effects cannot be judged against noise"
    table = "raw-response ANOVA" if judged == "mean" else "S/N ANOVA"
    rows = " and ".join(name for name, ok in zip(("means", "S/N"), drawn) if ok)
    text = (f"* p < 0.05 in the {table} ({'S/N' if judged == 'sn' else 'means'} row); "
            f"bars ({rows}): 95% CI of each level mean from the error MS ({noise.source}, {noise.dof} dof)")
    if noise.source == "pooled":
        text += "; pooling is chosen after seeing the data, so these are optimistic"
    missing = [name for name, ok in zip(("means", "S/N"), drawn) if not ok]
    if missing:
        text += f"; no error estimate for the {missing[0]} (one value per run), so no bars there"
    return text


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


def _judged_table(analysis: Analysis):
    """The ANOVA the noise source judges on, and what its contributions are of."""
    table = analysis.judged_anova
    return table, (f"raw {analysis.response}" if table is analysis.anova_raw else "S/N ratios")


def significance_line(analysis: Analysis) -> dict[int, float] | None:
    """% contribution at which a term is significant at p = 0.05, per term dof.

    A term with ``d`` dof has p = 0.05 exactly when its F equals ``F(0.95; d, dof_e)``,
    that is when ``SS = F_crit * d * MS_e``; as a share of the total SS of the judged
    ANOVA this is ``100 * F_crit * d * MS_e / SS_total``. That is Minitab's Pareto
    reference line (the effect at which p = 0.05) in the units of the chart. None
    without an error estimate."""
    noise = analysis.noise
    if noise is None or not noise.usable:
        return None
    from scipy import stats

    table, _ = _judged_table(analysis)
    total = float(table.loc[table["source"] == "Total", "ss"].iloc[0])
    if not total > 0:
        return None
    terms = table[~table["source"].isin(["Error", "Total"]) & ~table["pooled"]]
    out = {}
    for d in sorted({int(x) for x in terms["dof"] if int(x) > 0}):
        f_crit = float(stats.f.ppf(0.95, d, noise.dof))
        out[d] = 100.0 * f_crit * d * noise.ms / total
    return out


def pareto(analysis: Analysis, out_stem: Path, *, labels: Mapping[str, str] | None = None) -> list[Path]:
    """Pareto chart of the % contributions of the unpooled terms of the judged ANOVA
    (raw responses with replicates, S/N otherwise), largest first, with the significance line of :func:`significance_line` (one per term dof)
    when an error estimate exists; significant terms are drawn dark, the others grey.
    Without an estimate: no line, and a note saying so."""
    labels = dict(labels or {})
    table, what = _judged_table(analysis)
    terms = table[~table["source"].isin(["Error", "Total"]) & ~table["pooled"]].copy()
    terms["contribution_pct"] = terms["contribution_pct"].fillna(0.0)
    terms = terms.sort_values("contribution_pct", ascending=False, kind="stable")
    lines = significance_line(analysis)
    with _paper_style() as palette:
        fig = _new_figure(4.6, 1.2 + 0.4 * len(terms))
        ax = fig.subplots()
        names = [labels.get(n, n) for n in terms["source"]]
        values = [float(v) for v in terms["contribution_pct"]]
        positions = list(range(len(names)))[::-1]
        colors = [palette[0] if analysis.significant.get(n) else "0.65" for n in terms["source"]]
        ax.barh(positions, values, color=colors)
        ax.set_yticks(positions, names)
        for y, v in zip(positions, values):
            ax.text(v, y, f" {v:.1f}%", va="center", fontsize="x-small")
        top = max(values + [1.0])
        if lines:
            for d, x in lines.items():
                line = ax.axvline(x, color=NOTE_COLOR, linestyle="--", linewidth=1.0,
                                  label=f"p = 0.05 ({d} dof): {x:.1f}%")
                line.set_gid(f"significance-line-{d}")
                top = max(top, x)
            caption = (f"dark: p < 0.05; line: contribution at which p = 0.05 "
                       f"(error: {analysis.noise.source}, {analysis.noise.dof} dof)")
        else:
            caption = "no error estimate: no term can be judged against noise"
        ax.set_xlim(0, top * 1.2)
        ax.set_xlabel(f"Contribution to the variation of the {what} (%)")
        if lines:
            ax.legend(fontsize="x-small", frameon=False, loc="lower right")
        fig.supxlabel(textwrap.fill(caption, int(14 * fig.get_figwidth())), fontsize="x-small",
                      color="black" if lines else NOTE_COLOR)
        return _save(fig, out_stem)


def residuals_four_in_one(analysis: Analysis, out_stem: Path) -> list[Path]:
    """Minitab's "four in one" residual plots of the additive main-effects model on the
    raw responses (:attr:`Analysis.residuals`): normal probability plot, residuals
    versus fits, histogram, residuals versus observation order. Refused (UserError)
    when the model leaves no residual dof: there is nothing to check."""
    import numpy as np
    from scipy import stats

    table = analysis.residuals
    if table is None:
        raise UserError("no residual plots: the model leaves no residual degrees of freedom "
                        "(saturated and unreplicated); add replicates")
    resid = table["residual"].to_numpy(dtype=float)
    with _paper_style() as palette:
        fig = _new_figure(6.4, 4.8)
        axes = fig.subplots(2, 2)
        (osm, osr), (slope, intercept, _) = stats.probplot(resid, dist="norm")
        ax = axes[0][0]
        ax.plot(osr, osm, "o", color=palette[0], markersize=3)
        xs = np.array([osr.min(), osr.max()])
        ax.plot(xs, (xs - intercept) / slope if slope else xs * 0, color="0.3", linewidth=0.8)
        ax.set_xlabel("Residual")
        ax.set_ylabel("Normal quantile")
        ax.set_title("Normal probability plot", fontsize="small")
        ax = axes[0][1]
        ax.plot(table["fitted"], resid, "o", color=palette[0], markersize=3)
        ax.axhline(0, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_xlabel("Fitted value")
        ax.set_ylabel("Residual")
        ax.set_title("Versus fits", fontsize="small")
        ax = axes[1][0]
        ax.hist(resid, bins=min(10, max(3, len(resid) // 3)), color=palette[0], edgecolor="white")
        ax.set_xlabel("Residual")
        ax.set_ylabel("Frequency")
        ax.set_title("Histogram", fontsize="small")
        ax = axes[1][1]
        ax.plot(table["order"], resid, "o-", color=palette[0], markersize=3, linewidth=0.6)
        ax.axhline(0, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_xlabel("Observation order")
        ax.set_ylabel("Residual")
        ax.set_title("Versus order", fontsize="small")
        fig.suptitle(f"Residual plots for {analysis.response} (main-effects model)", fontsize="small")
        return _save(fig, out_stem)


def standard_figures(analysis: Analysis, results: pd.DataFrame, folder: Path,
                     labels: Mapping[str, str] | None = None,
                     levels: Mapping[str, Sequence[str]] | None = None) -> list[Path]:
    """Every figure of a study, in ``folder``: ``main_effects``, ``anova_contribution``,
    ``pareto``, ``interactions`` (two factors or more) and ``residuals`` (when the model
    leaves residual dof), each as PDF, SVG and 300-dpi PNG. One function so that
    ``doe-sr analyze --plots`` and the study report draw the same set."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = main_effects(analysis, folder / "main_effects", labels=labels)
    files += contributions(analysis, folder / "anova_contribution")
    files += pareto(analysis, folder / "pareto", labels=labels)
    if len(analysis.factors) >= 2:
        files += interactions(results, analysis.factors, analysis.response, folder / "interactions",
                              levels=levels or analysis.levels)
    if analysis.residuals is not None:
        files += residuals_four_in_one(analysis, folder / "residuals")
    return files


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
