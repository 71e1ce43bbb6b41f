"""The plain-language verdict that opens a study's ``summary.md``.

Why generated and why each sentence names its table: the seed report read a 0.1 dB
spread across nine unreplicated runs as a finding. A verdict written from the numbers,
with the table each claim rests on, cannot say more than the data hold: without an
error estimate it says that no effect can be called significant and how to get one;
with one, it names exactly the factors whose p-value clears the 5 % level. A reader
checks every sentence against the table it cites.

Pure Python on the analysis' results: no TensorFlow, MLflow or Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from doe_sr.analysis.confirmation import Confirmation
    from doe_sr.analysis.taguchi import Analysis

__all__ = ["Sentence", "Verdict", "study_verdict"]

#: The significance level every sentence uses (the ANOVA's and the intervals' 95 %).
ALPHA = 0.05

#: Share of the between-run variation that one run alone must carry for the verdict to
#: warn that the "main effects" may be that run's interaction (see :func:`one_run_carries`).
ONE_RUN_SHARE = 0.8


@dataclass(frozen=True)
class Sentence:
    """One claim and the report table it rests on (``table`` names a file stem of the report)."""

    text: str
    table: str

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "table": self.table}


@dataclass(frozen=True)
class Verdict:
    """The verdict's sentences in reading order."""

    sentences: tuple[Sentence, ...]

    def to_markdown(self) -> str:
        """One paragraph per claim, each ending with the table to check it against."""
        return "\n\n".join(f"{s.text} *(see `{s.table}`)*" for s in self.sentences) + "\n"

    def to_text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    def to_dict(self) -> list[dict[str, str]]:
        return [s.to_dict() for s in self.sentences]


def p_text(p: float) -> str:
    """``p = 0.012`` or ``p < 0.001``: three decimals, never a misleading 0.000."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.{digits}f}".rstrip("0").rstrip(".")


def _contribution(table, factor: str) -> float | None:
    rows = table[table["source"] == factor]
    if rows.empty:
        return None
    value = rows["contribution_pct"].iloc[0]
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _share(pct: float) -> str:
    """A % contribution: whole percents, but a small share keeps its first digits
    (a significant factor with "0%" would read as a contradiction)."""
    return f"{pct:.0f}%" if pct >= 10 else f"{pct:.2g}%"


def _saturated(analysis: Analysis) -> str:
    """Why there is no error estimate, in the numbers of this study."""
    n = len(analysis.runs)
    used = sum(len(analysis.levels[f]) - 1 for f in analysis.factors)
    return (f"{n} unreplicated runs, with {'all ' if used >= n - 1 else ''}{min(used, n - 1)} of their "
            f"{n - 1} degrees of freedom taken by the {len(analysis.factors)} factors,")


def _significance(analysis: Analysis, labels: Mapping[str, str], budget_hint: str) -> Sentence:
    """Which factors clear the 5 % level, or why none can."""
    name = lambda f: labels.get(f, f)  # noqa: E731
    table = analysis.judged_anova
    table_name = "anova_raw" if table is analysis.anova_raw else "anova"
    if analysis.noise is None or not analysis.noise.usable:
        top = max(analysis.factors, key=lambda f: analysis.delta.get(f, -math.inf))
        share = _contribution(analysis.anova, top)
        why = (f"{_saturated(analysis)} leave no estimate of the noise" if analysis.noise is None
               or analysis.noise.source == "none" else
               "the replicates agree exactly, so the error mean square is zero and no F test exists")
        return Sentence(
            f"No factor can be called significant: {why}. The largest effect, {name(top)}, spans "
            f"{analysis.delta[top]:.3g} dB of S/N"
            + (f" ({share:.0f}% of the S/N variation)" if share is not None else "")
            + ", but without an error estimate it cannot be told from noise; rerun with `replicates: 2` "
            "in the study, or pool factors (`--pool`).", "anova")
    significant = [f for f in analysis.factors if analysis.significant.get(f)]
    if not significant:
        ps = {f: p for f, p in analysis.p_values.items() if p is not None}
        closest = min(ps, key=ps.get) if ps else None
        return Sentence(
            "No factor is distinguishable from noise at this training budget"
            + (f" (the smallest p-value is {name(closest)}'s, {p_text(ps[closest])})" if closest else "")
            + f"; {budget_hint}.", table_name)
    parts = []
    for f in sorted(significant, key=lambda f: analysis.p_values[f]):
        share = _contribution(table, f)
        spread = analysis.delta_mean.get(f)
        parts.append(f"{name(f)} ({p_text(analysis.p_values[f])}"
                     + (f", {_share(share)} of the variance" if share is not None else "")
                     + (f", level means {spread:.3g} apart" if spread is not None and math.isfinite(spread) else "")
                     + ")")
    best = _join([f"{name(f)} {analysis.optimum[f]}" for f in significant])
    if len(significant) == 1:
        head = f"{parts[0][0].upper()}{parts[0][1:]} is the only significant factor"
    else:
        head = f"{_join(parts)} are the significant factors"
        head = head[0].upper() + head[1:]
    others = [f for f in analysis.factors if f not in significant]
    tail = (f"; {_join([name(f) for f in others])} cannot be told from noise" if others else "")
    return Sentence(f"{head} at the 5% level; best level{'s' if len(significant) > 1 else ''}: {best}{tail}.",
                    table_name)


def one_run_carries(analysis: Analysis) -> tuple[int, float] | None:
    """``(run, share)`` when one run carries at least :data:`ONE_RUN_SHARE` of the variation
    between the run means, else None.

    Why: in an orthogonal array every run sits at one level of every factor, so a single
    run that differs from all the others (the one setting that learned, say) moves one
    level mean of EVERY factor by the same amount. The ANOVA then shows every factor with
    a similar share, all "significant" against a small replicate error, and each factor's
    best level is simply that run's level. The data cannot tell four main effects from
    one interaction here, and the additive prediction is untested; the verdict must say
    so. The share is that of the contrast "run r against the mean of the others" in the
    between-run sum of squares, each run weighted by its replicates.
    """
    runs = analysis.runs
    if len(runs) < 3 or "mean" not in runs:
        return None
    y = runs["mean"].to_numpy(dtype=float)
    n = runs["n"].to_numpy(dtype=float) if "n" in runs else [1.0] * len(y)
    total_n = float(sum(n))
    grand = float(sum(w * v for w, v in zip(n, y)) / total_n)
    between = float(sum(w * (v - grand) ** 2 for w, v in zip(n, y)))
    if not between > 0:
        return None
    best = None
    for i in range(len(y)):
        rest_n = total_n - n[i]
        rest = (grand * total_n - n[i] * y[i]) / rest_n
        share = n[i] * rest_n / total_n * (y[i] - rest) ** 2 / between
        if best is None or share > best[1]:
            best = (int(runs["run"].iloc[i]), float(share))
    return best if best[1] >= ONE_RUN_SHARE else None


def _one_run(analysis: Analysis, labels: Mapping[str, str]) -> Sentence | None:
    carried = one_run_carries(analysis)
    if carried is None:
        return None
    run, share = carried
    runs = analysis.runs.set_index("run")
    others = analysis.runs[analysis.runs["run"] != run]
    rest = float((others["mean"] * others["n"]).sum() / others["n"].sum())
    levels = ", ".join(f"{labels.get(f, f)} {runs.at[run, f]}" for f in analysis.factors)
    return Sentence(
        f"Caution: run {run} alone ({levels}; mean {runs.at[run, 'mean']:.3f} against {rest:.3f} for the "
        f"other runs) carries {share:.0%} of the variation between runs. One run moves one level of every "
        "factor, so these main effects cannot be told from an interaction of that combination, and each "
        "factor's best level is just that run's level; confirm the optimum (`doe-sr confirm`) or check the "
        "array against the full factorial (`doe-sr validate`).", "runs")


def _optimum(analysis: Analysis, labels: Mapping[str, str], confirmation: Confirmation | None) -> Sentence:
    """The predicted optimum, and what its confirmation runs said."""
    p = analysis.predicted
    levels = ", ".join(f"{labels.get(f, f)} {lvl}" for f, lvl in analysis.optimum.items())
    text = f"The predicted optimum ({levels}) has a predicted mean of {p.mean:.3f}"
    if p.ci95 is not None:
        text += f" (95% interval {p.ci95[0]:.3f} to {p.ci95[1]:.3f})"
    text += "."
    if confirmation is not None:
        v = confirmation.verdict
        runs = f"{v.r} confirmation run{'s' if v.r != 1 else ''}"
        if v.inside is None:
            text += f" {runs.capitalize()} gave a mean of {v.observed_mean:.3f}, which no interval can judge."
        elif v.inside:
            text += (f" It was confirmed by {runs}: their mean {v.observed_mean:.3f} lies inside the 95% "
                     f"confirmation interval {v.interval[0]:.3f} to {v.interval[1]:.3f}.")
        else:
            text += (f" It was NOT confirmed by {runs}: their mean {v.observed_mean:.3f} lies outside the 95% "
                     f"confirmation interval {v.interval[0]:.3f} to {v.interval[1]:.3f}, so an interaction or an "
                     "unmodelled effect is likely.")
        return Sentence(text, "confirmation")
    if p.ci95 is not None:
        text += " It has not been confirmed yet: `doe-sr confirm` (or `doe-sr run --confirm`) trains it."
    return Sentence(text, "optimum")


def _best_vs_baseline(best: Mapping[str, Any], baseline: float | None, metric: str) -> Sentence | None:
    value = best.get(metric)
    if value is None or baseline is None or not math.isfinite(float(value)) or not math.isfinite(baseline):
        return None
    diff = float(value) - baseline
    where = "above" if diff > 0 else "below" if diff < 0 else "equal to"
    amount = f"{abs(diff):.3f} dB " if diff else ""
    return Sentence(f"The best array run (run {best['run']}) reaches {float(value):.3f} dB of {metric}, "
                    f"{amount}{where} bicubic's {baseline:.3f} dB.", "best_vs_bicubic")


def study_verdict(analysis: Analysis, *, labels: Mapping[str, str] | None = None,
                  confirmation: Confirmation | None = None, best: Mapping[str, Any] | None = None,
                  baseline: float | None = None, flagged: str | None = None,
                  budget_hint: str = "rerun with `replicates: 2` (or more) or a larger training budget",
                  ) -> Verdict:
    """The verdict of one study: significance, optimum (and its confirmation), degenerate
    runs (``flagged``: the flag summary sentence, or None), best run against bicubic."""
    labels = dict(labels or {})
    sentences = [_significance(analysis, labels, budget_hint)]
    caution = _one_run(analysis, labels)
    if caution is not None:
        sentences.append(caution)
    sentences.append(_optimum(analysis, labels, confirmation))
    if flagged:
        sentences.append(Sentence(flagged, "flagged_runs"))
    if best is not None:
        extra = _best_vs_baseline(best, baseline, analysis.response)
        if extra is not None:
            sentences.append(extra)
    return Verdict(tuple(sentences))
