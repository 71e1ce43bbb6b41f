"""Least-squares ANOVA machinery behind :mod:`doe_sr.analysis.taguchi` (private).

Why least squares and not the textbook column formulas: for an orthogonal array the
Taguchi formula ``SS_A = sum_l n_l (mean_l - grand)^2`` is exactly the sum of squares
that a linear model attributes to ``A``; but results tables also come from outside
(an external CSV, a study with a lost run that was imputed, unequal replicates), and
there the column formulas silently stop adding up. Fitting the model keeps every
number meaningful in both cases and reduces to the textbook values when the table is
orthogonal and balanced (the tests check this against statsmodels' ``anova_lm``).

Sums of squares are "Type II" (Fox, *Applied Regression Analysis*, sec. 8.2; the
``typ=2`` of statsmodels): a term is adjusted for every other term that does not
contain it, so a main effect is adjusted for the other main effects and an
interaction for all main effects. Degrees of freedom are rank increases, so they stay
correct when a level is observed in few runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from doe_sr.core.errors import UserError

ANOVA_COLUMNS = ["source", "dof", "ss", "ms", "f", "p", "contribution_pct", "pooled"]


@dataclass(frozen=True)
class Term:
    """One ANOVA source: a name, the factors it involves (for marginality) and its
    model columns (treatment-coded dummies; any full-rank coding gives the same SS)."""

    name: str
    factors: frozenset[str]
    columns: np.ndarray  # shape (n_obs, nominal_dof)

    @property
    def nominal_dof(self) -> int:
        return int(self.columns.shape[1])


def dummies(codes: np.ndarray, n_levels: int) -> np.ndarray:
    """Treatment coding of integer level codes 0..n_levels-1 (level 0 is the baseline)."""
    out = np.zeros((len(codes), max(n_levels - 1, 0)))
    for level in range(1, n_levels):
        out[:, level - 1] = codes == level
    return out


def interaction_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All pairwise products of two dummy blocks: with the main effects they span the
    space of the a x b cell means, i.e. the full (k_a - 1)(k_b - 1)-dof interaction."""
    if a.shape[1] == 0 or b.shape[1] == 0:
        return np.zeros((a.shape[0], 0))
    return np.einsum("ni,nj->nij", a, b).reshape(a.shape[0], -1)


def _fit(y: np.ndarray, blocks: Sequence[np.ndarray]) -> tuple[float, int]:
    """Residual sum of squares and rank of intercept + blocks."""
    x = np.column_stack([np.ones(len(y)), *blocks]) if blocks else np.ones((len(y), 1))
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    return float(resid @ resid), int(np.linalg.matrix_rank(x))


def check_estimable(terms: Sequence[Term], n_obs: int) -> None:
    """Refuse terms the data cannot separate, naming them.

    Why refuse: if a requested interaction lies (partly) in the space of the main
    effects (e.g. A x B in an L9 carrying four factors, whose interaction columns
    are the C and D columns), any SS split between the two is arbitrary; Taguchi's
    rule is to leave interaction columns free. Same for two factors with identical
    columns in an external table.
    """
    y = np.zeros(n_obs)
    blocks: list[np.ndarray] = []
    _, rank = _fit(y, blocks)
    for term in terms:
        _, new_rank = _fit(y, [*blocks, term.columns])
        gained = new_rank - rank
        if gained < term.nominal_dof:
            others = ", ".join(t.name for t in terms[: terms.index(term)]) or "the intercept"
            raise UserError(
                f"ANOVA term '{term.name}' is confounded with {others} in this table "
                f"({gained} of its {term.nominal_dof} degrees of freedom are estimable); "
                "leave the interaction columns of the array free of other factors, "
                "or drop the term"
            )
        blocks.append(term.columns)
        rank = new_rank


@dataclass
class RawAnova:
    """Sums of squares before pooling."""

    terms: list[tuple[str, float, int]]  # (name, ss, dof)
    error_ss: float
    error_dof: int
    total_ss: float
    total_dof: int


def sums_of_squares(y: np.ndarray, terms: Sequence[Term]) -> RawAnova:
    """Type II sums of squares of each term, residual and total (see module doc)."""
    y = np.asarray(y, dtype=float)
    rss_full, rank_full = _fit(y, [t.columns for t in terms])
    rows = []
    for term in terms:
        # Terms that contain this one (e.g. A:B for A) are left out of both fits.
        kept = [
            t.columns
            for t in terms
            if t is not term and not (term.factors < t.factors)
        ]
        rss_without, rank_without = _fit(y, kept)
        rss_with, rank_with = _fit(y, [*kept, term.columns])
        rows.append((term.name, max(rss_without - rss_with, 0.0), rank_with - rank_without))
    total_ss = float(((y - y.mean()) ** 2).sum())
    # Round-off can leave a tiny negative or noisy residual in a saturated fit, or in a
    # model that fits exactly (identical replicates): 1e-29 would give F = 1e30 and
    # p = 0, a certainty the data do not hold. A residual below 1e-20 of sum(y^2) is
    # least-squares round-off (relative 1e-10 in the responses), so it is zero.
    error_dof = len(y) - rank_full
    exact = rss_full <= 1e-20 * float(y @ y)
    error_ss = 0.0 if error_dof == 0 or exact else max(rss_full, 0.0)
    return RawAnova(rows, error_ss, error_dof, total_ss, len(y) - 1)


def auto_pool(raw: RawAnova) -> list[str]:
    """Taguchi's pooling-up rule, as Ross states it (*Taguchi Techniques for Quality
    Engineering*, 2nd ed., ch. 6): pool the terms with the smallest SS into the error,
    one by one, until the error has at least half of the total degrees of freedom.

    Exactly: sort the terms by SS ascending (ties keep table order); while
    ``error_dof < total_dof / 2`` and more than one term is still unpooled, pool the
    next term and add its SS and dof to the error. Nothing is pooled when the error
    already has half of the dof (e.g. a replicated raw-response ANOVA). For an L9
    with four 3-level factors (8 dof, none for error) this pools the two smallest.
    """
    pooled: list[str] = []
    error_dof = raw.error_dof
    for name, _ss, dof in sorted(raw.terms, key=lambda row: row[1]):
        if error_dof >= raw.total_dof / 2 or len(raw.terms) - len(pooled) <= 1:
            break
        pooled.append(name)
        error_dof += dof
    return pooled


def anova_table(raw: RawAnova, pooled: Sequence[str]) -> pd.DataFrame:
    """The printed ANOVA: one row per term, then Error (with pooled terms folded in)
    and Total. Pooled rows keep their SS/dof/MS for the record but have no F, p or
    contribution: their share is inside the error row, so contributions add to 100 %
    for an orthogonal table.

    % contribution is ``SS / SS_total * 100`` (the plain ratio most hyperparameter
    studies report), not Ross's "pure SS" variant.
    """
    from scipy import stats  # scipy.stats costs ~0.5 s to import; only pay when used

    pooled_set = set(pooled)
    error_dof, error_ss, error_ms = _pooled_error(raw, pooled)
    usable_error = error_dof > 0 and error_ms > 0
    total = raw.total_ss

    def pct(ss: float) -> float:
        return ss / total * 100.0 if total > 0 else math.nan

    records = []
    for name, ss, dof in raw.terms:
        ms = ss / dof if dof > 0 else math.nan
        is_pooled = name in pooled_set
        f = ms / error_ms if usable_error and not is_pooled and dof > 0 else math.nan
        p = float(stats.f.sf(f, dof, error_dof)) if not math.isnan(f) else math.nan
        records.append([name, dof, ss, ms, f, p, math.nan if is_pooled else pct(ss), is_pooled])
    records.append(["Error", error_dof, error_ss, error_ms, math.nan, math.nan, pct(error_ss), False])
    records.append(["Total", raw.total_dof, total, math.nan, math.nan, math.nan, 100.0, False])
    table = pd.DataFrame(records, columns=ANOVA_COLUMNS)
    table["dof"] = table["dof"].astype(int)
    table["pooled"] = table["pooled"].astype(bool)
    return table


def _pooled_error(raw: RawAnova, pooled: Sequence[str]) -> tuple[int, float, float]:
    """(dof, SS, MS) of the error with the ``pooled`` terms folded in; MS is NaN without dof."""
    pooled_set = set(pooled)
    error_ss = raw.error_ss + sum(ss for name, ss, _ in raw.terms if name in pooled_set)
    error_dof = raw.error_dof + sum(dof for name, _, dof in raw.terms if name in pooled_set)
    return error_dof, error_ss, error_ss / error_dof if error_dof > 0 else math.nan


def error_of(raw: RawAnova, pooled: Sequence[str] = ()) -> tuple[int, float]:
    """(dof, MS) of the error once ``pooled`` terms are folded in: what F tests and
    confidence intervals divide by. Computed from the sums of squares, the same numbers
    as the Error row of ``anova_table(raw, pooled)``, so no caller reads a display table back."""
    dof, _, ms = _pooled_error(raw, pooled)
    return dof, ms


def balance_warnings(runs: pd.DataFrame, factors: Sequence[str]) -> list[str]:
    """Warnings when the run table is not a balanced orthogonal array.

    Balance: every level of a factor appears in the same number of runs. Pairwise
    orthogonality: the level-count table of each pair of factors satisfies the
    proportional-frequency condition ``n_ij = n_i * n_j / N`` (Addelman 1962), which
    is what makes main-effect estimates independent of each other.
    """
    out = []
    n = len(runs)
    codes = {f: pd.factorize(runs[f])[0] for f in factors}
    for factor in factors:
        counts = runs[factor].value_counts()
        if counts.nunique() > 1:
            detail = ", ".join(f"{lvl}: {c}" for lvl, c in counts.items())
            out.append(
                f"factor '{factor}' is unbalanced across runs ({detail}); level means "
                "are not comparable like-for-like"
            )
    for i, a in enumerate(factors):
        for b in factors[i + 1 :]:
            # Level-count table by hand: pd.crosstab costs ~10 ms a pair.
            table = np.zeros((codes[a].max() + 1, codes[b].max() + 1))
            np.add.at(table, (codes[a], codes[b]), 1.0)
            expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
            if not np.allclose(table, expected):
                out.append(
                    f"factors '{a}' and '{b}' are not orthogonal in this table (their "
                    "level combinations are not proportionally represented); effects "
                    "are partly confounded and the SS of the factors need not add up "
                    "to the total"
                )
    return out
