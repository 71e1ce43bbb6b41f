"""Figures of ``doe-sr validate``: the array's additive model against every combination, and
the array's main effects overlaid on the larger set's.

Same conventions as :mod:`doe_sr.report.plots` (whose style and saving helpers these
use): PDF, SVG and 300-dpi PNG, seaborn's paper context, the colour-blind palette.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from doe_sr.report.plots import _new_figure, _paper_style, _save

if TYPE_CHECKING:
    from doe_sr.analysis.taguchi import Analysis
    from doe_sr.analysis.validation import Validation

__all__ = ["effects_overlay", "predicted_vs_observed"]


def predicted_vs_observed(result: Validation, out_stem: Path) -> list[Path]:
    """The array's additive prediction (x) against the observed mean (y) of every combination.

    The identity line is where a perfect additive model would put every point; the
    array's own runs are filled, the others hollow; the array's optimum and the true
    best are labelled. Why observed on y: the distance above the line is what the model
    missed for a combination that did better than predicted.
    """
    c = result.combinations
    with _paper_style() as palette:
        fig = _new_figure(3.8, 4.0)
        ax = fig.add_subplot()
        lo = float(min(c["predicted"].min(), c["observed"].min()))
        hi = float(max(c["predicted"].max(), c["observed"].max()))
        pad = (hi - lo) * 0.05 or 0.1
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=0.8, ls="--", label="identity")
        other, arr = c[~c["in_array"]], c[c["in_array"]]
        ax.scatter(other["predicted"], other["observed"], s=16, facecolors="none", edgecolors=palette[0],
                   linewidths=0.8, label=f"{result.against} combinations")
        ax.scatter(arr["predicted"], arr["observed"], s=22, color=palette[1], marker="s", label="array runs")
        best = c.iloc[0]
        ax.scatter([best["predicted"]], [best["observed"]], s=90, marker="*", color=palette[2], zorder=3,
                   label="true best")
        if result.optimum_in_set:
            opt = c[(c[result.factors] == [result.array_optimum[f] for f in result.factors]).all(axis=1)].iloc[0]
            ax.scatter([opt["predicted"]], [opt["observed"]], s=70, marker="D", facecolors="none",
                       edgecolors=palette[3], linewidths=1.2, zorder=3, label="array optimum")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_xlabel(f"predicted {result.response} (array's additive model)")
        ax.set_ylabel(f"observed {result.response} (mean)")
        ax.set_title(f"RMSE {result.rmse:.3g}, r = {result.correlation:.2f}", fontsize="medium")
        fig.legend(*ax.get_legend_handles_labels(), fontsize="x-small", frameon=False, ncols=3,
                   loc="outside lower center")  # below the axes: points may sit anywhere inside
    return _save(fig, out_stem)


def effects_overlay(analysis: Analysis, result: Validation, out_stem: Path) -> list[Path]:
    """Each factor's level means of the response: the array's (from its runs) and the larger set's
    (from every combination), on one shared y axis, with Kendall's tau per panel."""
    import pandas as pd

    factors = result.factors
    array_means = analysis.level_values("mean")
    obs = result.combinations
    k = len(factors)
    with _paper_style() as palette:
        fig = _new_figure(1.9 * k + 0.4, 2.7)
        axes = fig.subplots(1, k, sharey=True, squeeze=False)[0]
        taus = result.kendall_tau
        for ax, f in zip(axes, factors):
            levels = analysis.levels[f]
            x = range(len(levels))
            full = (obs.assign(w=obs["observed"] * obs["n"]).groupby(f)[["w", "n"]].sum())
            full_means = pd.Series(full["w"] / full["n"]).reindex(levels)
            ax.plot(x, [array_means[f][lvl] for lvl in levels], marker="o", color=palette[0],
                    label=f"array ({result.array_runs} runs)")
            ax.plot(x, full_means.to_numpy(), marker="s", ls="--", color=palette[1],
                    label=f"{result.against} ({result.n_combinations} combinations)")
            ax.set_xticks(list(x), levels, rotation=30 if max(len(lv) for lv in levels) > 5 else 0)
            tau = taus.get(f)
            ax.set_title(f"{f}\ntau = {tau:.2f}" if tau is not None else f"{f}\ntau n/a", fontsize="small")
        axes[0].set_ylabel(f"mean of {result.response}")
        fig.legend(*axes[0].get_legend_handles_labels(), fontsize="x-small", frameon=False, ncols=2,
                   loc="outside lower center")
    return _save(fig, out_stem)
