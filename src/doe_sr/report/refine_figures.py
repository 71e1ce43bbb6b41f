"""Paper figures of a Bayesian refinement (``doe-sr refine``): the optimisation history,
slice and contour plots of the refined factors, and Optuna's fANOVA importances next to
the Taguchi ANOVA contributions.

Why these figures: a refinement is judged against the array it started from. The history
draws the warm-start trials (the array's runs) and the new ones in two colours, with the
array's predicted optimum and any baseline as dashed lines, so a reader sees where the
search started and whether it went beyond what the array already knew. Slice and contour
plots show where in the continuous ranges the good trials lie (and whether the range
edges were reached); the importance comparison shows whether the sampler's view of which
factors matter agrees with the array's ANOVA.

Why this is the one report module that imports Optuna: its figures are drawn from the
Optuna study itself (its trials, distributions and Optuna's own slice/contour plots),
not from a table the analysis layer derived. The study is passed in by the workflow;
the import is lazy, so ``doe-sr design/status/analyze`` never load Optuna through here.

Every function writes ``out_stem`` + ``.pdf``, ``.svg`` and ``.png`` (300 dpi) through
:func:`doe_sr.report.plots._save` in the project's paper style and returns the paths.
Optuna builds its slice and contour plots through ``pyplot`` with its "ggplot" style
sheet; that happens inside ``matplotlib.rc_context`` (so the style cannot leak into later
figures), and the figures are then restyled to match the others and rendered on the Agg
canvas.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.ticker import MaxNLocator

from doe_sr.core.errors import UserError
from doe_sr.report.plots import NOTE_COLOR, _new_figure, _paper_style, _save

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["ARRAY_LABEL", "REFINE_LABEL", "best_so_far", "contour_plot", "history_table",
           "importance_comparison", "optimization_history", "slice_plot"]

#: Legend texts of the two kinds of trials (user attribute ``role``).
ARRAY_LABEL = "Taguchi array (warm start)"
REFINE_LABEL = "refinement"
OTHER_LABEL = "other trials"
ROLES = {"array_run": ARRAY_LABEL, "refine": REFINE_LABEL}

IMPORTANCE_COLUMNS = ("factor", "fanova_pct", "taguchi_pct", "held")


def best_so_far(values: Sequence[float], maximize: bool) -> list[float]:
    """The best value among the first ``i + 1`` values, for every ``i`` (the history's line)."""
    out: list[float] = []
    best = -math.inf if maximize else math.inf
    for v in values:
        v = float(v)
        best = max(best, v) if maximize else min(best, v)
        out.append(best)
    return out


def history_table(ost: optuna.Study) -> pd.DataFrame:
    """What :func:`optimization_history` draws: one row per COMPLETE trial in trial-number
    order, columns ``number``, ``value``, ``role`` (the user attribute, "" when absent)
    and ``best`` (the best value so far in the study's direction)."""
    import optuna
    import pandas as pd

    trials = sorted(ost.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                    key=lambda t: t.number)
    values = [float(t.value) for t in trials]
    maximize = ost.direction == optuna.study.StudyDirection.MAXIMIZE
    return pd.DataFrame({
        "number": [t.number for t in trials],
        "value": values,
        "role": [str(t.user_attrs.get("role", "")) for t in trials],
        "best": best_so_far(values, maximize),
    })


def optimization_history(ost: optuna.Study, out_stem: Path, *, metric: str,
                         reference: Mapping[str, float] | None = None) -> list[Path]:
    """The value of every COMPLETE trial by trial number, warm-start trials (role
    ``array_run``) and refinement trials (role ``refine``) in two colours and markers,
    the best-so-far line (steps, in the study's direction) and each ``reference`` as a
    labelled dashed horizontal line. Pruned and failed trials have no value to draw; their
    number is stated under the figure."""
    import optuna

    table = history_table(ost)
    if table.empty:
        raise UserError(f"no optimisation history: the Optuna study {ost.study_name!r} has no completed trial")
    maximize = ost.direction == optuna.study.StudyDirection.MAXIMIZE
    states = [t.state for t in ost.get_trials(deepcopy=False)]
    pruned = sum(s == optuna.trial.TrialState.PRUNED for s in states)
    failed = sum(s == optuna.trial.TrialState.FAIL for s in states)
    with _paper_style() as palette:
        fig = _new_figure(5.2, 3.2)
        ax = fig.subplots()
        styles = {ARRAY_LABEL: (palette[0], "s"), REFINE_LABEL: (palette[1], "o"), OTHER_LABEL: ("0.6", "^")}
        kinds = table["role"].map(lambda r: ROLES.get(r, OTHER_LABEL))
        for label, (color, marker) in styles.items():
            part = table[kinds == label]
            if len(part):
                points = ax.scatter(part["number"], part["value"], color=color, marker=marker, s=16,
                                    zorder=3, label=label, edgecolors="none")
                points.set_gid("trials-" + label.split()[0].lower())
        line, = ax.plot(table["number"], table["best"], drawstyle="steps-post", color="0.15", linewidth=1.1,
                        label="best so far", zorder=2)
        line.set_gid("best-so-far")
        refine = table.loc[kinds == REFINE_LABEL, "number"]
        if len(refine) and (kinds == ARRAY_LABEL).any():
            ax.axvline(float(refine.min()) - 0.5, color="0.6", linestyle=":", linewidth=0.8, zorder=1)
        for i, (name, value) in enumerate((reference or {}).items()):
            ref = ax.axhline(float(value), color=palette[(i + 2) % len(palette)], linestyle="--", linewidth=0.9,
                             label=f"{name}: {float(value):.2f}", zorder=1)
            ref.set_gid(f"reference-{i}")
        ax.set_xlabel("Trial")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric + (" (higher is better)" if maximize else " (lower is better)"))
        ax.legend(fontsize="x-small", frameon=False, loc="best")
        notes = []
        if pruned:
            notes.append(f"{pruned} pruned trial{'s' if pruned != 1 else ''}")
        if failed:
            notes.append(f"{failed} failed trial{'s' if failed != 1 else ''}")
        if notes:
            fig.supxlabel(" and ".join(notes) + " not shown (no final value)", fontsize="x-small", color=NOTE_COLOR)
        return _save(fig, out_stem)


def _target_name(ost: optuna.Study, metric: str | None) -> str:
    if metric:
        return metric
    names = getattr(ost, "metric_names", None)
    return names[0] if names else "Objective value"


@contextmanager
def _optuna_figure():
    """Optuna's plot functions quietly (they are experimental) and without their style
    sheet outliving the call."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        with matplotlib.rc_context():
            yield


def _strip_quotes(ax) -> None:
    """Categorical levels as their text (Optuna's slice plot labels them with repr quotes)."""
    for axis in (ax.xaxis, ax.yaxis):
        labels = axis.get_ticklabels()
        texts = [t.get_text() for t in labels]
        if texts and any(len(s) > 1 and s[0] == s[-1] and s[0] in "'\"" for s in texts):
            axis.set_ticks(axis.get_ticklocs(), [s.strip("'\"") for s in texts])


def _restyle(fig, width: float, height: float) -> None:
    """Optuna's ggplot look turned into the project's: white axes without grid, dark spines
    and ticks, paper-sized text, no title (the caption is the report's)."""
    FigureCanvasAgg(fig)  # render on Agg whatever pyplot's backend is
    fig.set_size_inches(width, height)
    fig.set_facecolor("white")
    if fig._suptitle is not None:
        fig._suptitle.set_text("")
    for ax in fig.axes:
        ax.set_facecolor("white")
        ax.grid(False)
        ax.set_title("")
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_color("0.15")
            spine.set_linewidth(0.7)
        ax.tick_params(which="both", colors="0.15", labelcolor="0.15", labelsize=6.5, direction="out")
        for label in (ax.xaxis.label, ax.yaxis.label):
            label.set_color("black")
            label.set_fontsize(8)
        _strip_quotes(ax)


def _fit(fig, pad: float = 0.02) -> None:
    """Rescale the axes so that they and their labels fill the figure (Optuna's contour
    figure places its colorbar by hand, which constrained layout cannot re-solve, and
    leaves room for the title removed here). Decorations keep their size in inches, so
    one pass moves the union of the axes to where the labels just fit."""
    boxes = [ax.get_position() for ax in fig.axes]
    x0, x1 = min(b.x0 for b in boxes), max(b.x1 for b in boxes)
    y0, y1 = min(b.y0 for b in boxes), max(b.y1 for b in boxes)
    tight = fig.get_tightbbox(fig.canvas.get_renderer())
    w, h = fig.get_size_inches()
    left, right = x0 - tight.x0 / w, tight.x1 / w - x1  # decorations outside the axes
    bottom, top = y0 - tight.y0 / h, tight.y1 / h - y1
    nx0, nx1 = pad + left, 1 - pad - right
    ny0, ny1 = pad + bottom, 1 - pad - top
    if not (nx1 > nx0 and ny1 > ny0 and x1 > x0 and y1 > y0):
        return
    sx, sy = (nx1 - nx0) / (x1 - x0), (ny1 - ny0) / (y1 - y0)
    for ax, b in zip(fig.axes, boxes):
        ax.set_position([nx0 + (b.x0 - x0) * sx, ny0 + (b.y0 - y0) * sy, b.width * sx, b.height * sy])


def _save_optuna(fig, out_stem: Path) -> list[Path]:
    """Save under the paper style's rc settings: texts stay text in the SVG and PDF."""
    with _paper_style():
        return _save(fig, out_stem)


def _check_params(ost: optuna.Study, params: Sequence[str]) -> list[str]:
    params = list(dict.fromkeys(params))
    known = set()
    for t in ost.get_trials(deepcopy=False):
        known.update(t.distributions)
    missing = [p for p in params if p not in known]
    if missing:
        raise UserError(f"the Optuna study {ost.study_name!r} has no parameter(s) {missing}; "
                        f"its parameters are {sorted(known)}")
    return params


def slice_plot(ost: optuna.Study, out_stem: Path, params: Sequence[str], *,
               metric: str | None = None) -> list[Path]:
    """Optuna's slice plot (``optuna.visualization.matplotlib.plot_slice``): the value of
    every completed trial against each parameter in ``params`` (log-scale parameters on a
    log axis), coloured by trial number. ``metric`` names the value axis (default: the
    study's metric name, else "Objective value"). Returns [] without parameters."""
    import numpy as np
    from optuna.visualization.matplotlib import plot_slice

    params = _check_params(ost, params)
    if not params:
        return []
    with _optuna_figure():
        axes = plot_slice(ost, params=params, target_name=_target_name(ost, metric))
        fig = np.atleast_1d(axes).ravel()[0].figure
        _restyle(fig, 1.1 + 1.9 * len(params), 2.6)
        fig.set_layout_engine("constrained")  # one row of axes and a colorbar: it re-solves cleanly
    return _save_optuna(fig, out_stem)


def contour_plot(ost: optuna.Study, out_stem: Path, params: Sequence[str], *,
                 metric: str | None = None) -> list[Path]:
    """Optuna's contour plot (``optuna.visualization.matplotlib.plot_contour``) of the
    value over each pair of ``params`` (log-scale parameters on log axes), with the trials
    as dots; for three or more parameters the matrix of all pairs, labelled on its outer
    edges only. Returns [] with fewer than two parameters: there is no pair to draw."""
    import numpy as np
    from optuna.visualization.matplotlib import plot_contour

    params = _check_params(ost, params)
    if len(params) < 2:
        return []
    with _optuna_figure():
        axes = plot_contour(ost, params=params, target_name=_target_name(ost, metric))
        grid = np.atleast_2d(axes)
        fig = grid.ravel()[0].figure
        k = grid.shape[0]
        _restyle(fig, 3.8 if k == 1 else 1.0 + 1.75 * k, 3.0 if k == 1 else 0.6 + 1.6 * k)
        if k > 1:
            for i in range(k):
                for j in range(k):
                    ax = grid[i][j]
                    if i == j:  # Optuna leaves the diagonal empty: name the parameter there
                        name = ax.get_xlabel()
                        ax.cla()
                        ax.set_axis_off()
                        ax.text(0.5, 0.5, name, ha="center", va="center", transform=ax.transAxes, fontsize=8)
                        continue
                    if i != k - 1 and not (i == k - 2 and j == k - 1):
                        ax.set_xlabel("")
                    if j != 0 and not (j == 1 and i == 0):
                        ax.set_ylabel("")
        _fit(fig)
    return _save_optuna(fig, out_stem)


def importance_comparison(table: pd.DataFrame, out_stem: Path) -> list[Path]:
    """Grouped horizontal bars per factor (first row of ``table`` at the top): Optuna's
    fANOVA importance over every completed trial (array and refinement) (``fanova_pct``) beside the array's
    ANOVA % contribution (``taguchi_pct``). Factors held at their Taguchi optimum during
    the refinement (``held``) are marked "(held)": the sampler never varied them, so they
    have no fANOVA bar. A missing (NaN) value is drawn as no bar."""
    missing = [c for c in IMPORTANCE_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"importance table has no column(s) {missing}; its columns are {list(table.columns)}")
    if table.empty:
        raise UserError("importance table is empty: no factor to compare")
    rows = list(table.itertuples(index=False))
    names = [f"{r.factor} (held)" if _truthy(r.held) else str(r.factor) for r in rows]
    measures = (("fanova_pct", "fANOVA importance (array + refinement trials)"),
                ("taguchi_pct", "Taguchi ANOVA contribution (array)"))
    height = 0.36
    with _paper_style() as palette:
        fig = _new_figure(4.8, 0.9 + 0.55 * len(rows))
        ax = fig.subplots()
        top = 1.0
        n = len(rows)
        for m, (column, label) in enumerate(measures):
            values = [_number(getattr(r, column)) for r in rows]
            ys = [(n - 1 - i) + (0.5 - m) * height for i in range(n)]
            shown = [(y, v) for y, v in zip(ys, values) if v is not None]
            bars = ax.barh([y for y, _ in shown], [v for _, v in shown], height=height, color=palette[m],
                           label=label)
            for (y, _), patch in zip(shown, bars.patches):
                patch.set_gid(f"bar-{column}-{round(n - 1 - y + (0.5 - m) * height)}")  # the factor's row
            for y, v in shown:
                ax.text(v, y, f" {v:.1f}%", va="center", fontsize="x-small")
                top = max(top, v)
        ax.set_yticks(list(range(n))[::-1], names)
        ax.set_ylim(-0.7, n - 0.3)
        ax.set_xlim(0, top * 1.22)
        ax.set_xlabel("Share of the variation explained (%)")
        ax.legend(fontsize="x-small", frameon=False, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=1)
        held = [str(r.factor) for r in rows if _truthy(r.held)]
        if held:
            caption = ("held at the Taguchi optimum during refinement: " + ", ".join(held)
                       + " (not varied, so no fANOVA importance)")
            fig.supxlabel(textwrap.fill(caption, int(14 * fig.get_figwidth())), fontsize="x-small")
        return _save(fig, out_stem)


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _truthy(value) -> bool:
    try:
        return bool(value) and value == value  # NaN counts as not held
    except (TypeError, ValueError):
        return False
