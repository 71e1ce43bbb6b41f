"""Where the error estimate of an analysis comes from, and what it lets the report claim.

Why a separate, explicit object: a saturated, unreplicated L9 has no error term, so no
F, no p and no interval; a reader who is not told so takes a 0.1 dB spread for a
finding. Every claim of significance and every interval in the report is judged
against the one error estimate described here, and ``Noise.statement`` says in one or
two sentences, from the numbers, where it comes from.

Which ANOVA judges the effects (``Noise.scale``):

* ``"replicates"``: some run has >= 2 replicates. Effects are judged on the ANOVA of
  the raw responses (``anova_raw``), whose error holds the replicate scatter (pure
  error), plus lack of fit when the array has free columns, plus any pooled factors
  (``--pool``). Replicates win over pooling because pure error is the honest estimate:
  it was not chosen after seeing the effects. The S/N ANOVA still has one value per
  run, so it has no pure error.
* ``"pooled"``: no replicates, factors pooled into the error of the S/N ANOVA (Taguchi
  pooling). The pooled factors were chosen because they looked small, so the error is
  biased low and the F tests are optimistic; the statement says so.
* ``"residual"``: no replicates, nothing pooled, but the array has columns no factor
  uses (e.g. three 3-level factors in an L9): their dof estimate the error of the S/N
  ANOVA, assuming the interactions they carry are negligible.
* ``"none"``: saturated and unreplicated. No effect can be called significant; the
  statement says how to get an estimate.

``p_values``/``significant`` hold every ANOVA term (factors and interactions) of the
judged ANOVA: p is None without a usable error (no dof or a zero error MS) and for a
pooled term (it is part of the error, not tested: ``significant`` is then False,
Taguchi's reading of pooling). ``significant`` is None exactly when p cannot exist
because there is no estimate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from doe_sr.analysis import anova as _anova

__all__ = ["ALPHA", "NOISE_SOURCES", "Noise", "judge", "level_counts", "level_intervals", "noise_of"]

#: Significance level of every test and 95 % interval.
ALPHA = 0.05

NOISE_SOURCES = ("replicates", "pooled", "residual", "none")


@dataclass(frozen=True)
class Noise:
    """The error estimate the effects are judged against (module doc)."""

    source: str  # one of NOISE_SOURCES
    dof: int
    ms: float  # error mean square on ``scale`` (NaN without dof)
    pooled: tuple[str, ...]
    scale: str  # "raw" (ANOVA of the responses) or "sn" (ANOVA of the run S/N ratios)
    statement: str

    @property
    def usable(self) -> bool:
        """Whether F tests and intervals exist on ``scale`` (dof > 0 and MS > 0)."""
        return self.dof > 0 and math.isfinite(self.ms) and self.ms > 0

    @property
    def table(self) -> str:
        """Name of the report table that holds the judged ANOVA."""
        return "anova_raw" if self.scale == "raw" else "anova"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "dof": self.dof, "ms": self.ms, "pooled": list(self.pooled),
                "scale": self.scale, "table": self.table, "statement": self.statement}


def _g(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "undefined"


def noise_of(runs: pd.DataFrame, raw_sn: _anova.RawAnova, raw_obs: _anova.RawAnova,
             pooled: Sequence[str], response: str, pool_auto: bool = False) -> Noise:
    """The error estimate implied by the replicates in ``runs`` (columns ``n``) and the
    ``pooled`` terms; see the module doc for the rules and their order."""
    pooled = tuple(pooled)
    n_runs = len(runs)
    counts = runs["n"].astype(int)
    n_obs = int(counts.sum())
    pooled_dof = sum(dof for name, _, dof in raw_obs.terms if name in set(pooled))
    how = ("Taguchi's pooling-up rule" if pool_auto else "your --pool")
    optimistic = (f"pooled {', '.join(pooled)} into the error ({how}): chosen after seeing the data, "
                  "so its F tests are optimistic")
    if bool((counts > 1).any()):
        dof, ms = _anova.error_of(raw_obs, pooled)
        pure = n_obs - n_runs
        lack = dof - pure - pooled_dof
        if counts.nunique() == 1:
            where = f"{int(counts.iloc[0])} replicates of each of the {n_runs} runs"
        else:
            where = f"replicates of {int((counts > 1).sum())} of the {n_runs} runs (n from {counts.min()} to {counts.max()})"
        parts = [f"{pure} pure error"]
        if lack > 0:
            parts.append(f"{lack} lack of fit")
        if pooled_dof:
            parts.append(f"{pooled_dof} pooled")
        kind = "pure error" if len(parts) == 1 else " + ".join(parts)
        text = (f"Error estimate: {dof} dof from {where} ({kind}, MS = {_g(ms)} in "
                f"{response}^2); effects are judged on the ANOVA of the raw {response}.")
        if pooled:
            text += f" It also {optimistic}."
        if not (ms > 0):
            text += (" The error MS is zero (the replicates agree exactly and the model fits), so F and p "
                     "are undefined: no effect can be judged against noise.")
        return Noise("replicates", dof, ms, pooled, "raw", text)
    dof, ms = _anova.error_of(raw_sn, pooled)
    if pooled and dof > 0:
        text = (f"Error estimate: {dof} dof of the S/N ANOVA (MS = {_g(ms)} dB^2), from {optimistic}. "
                "Replicates (`replicates: 2` in the study) give an unbiased estimate.")
        return Noise("pooled", dof, ms, pooled, "sn", text)
    if dof > 0:
        text = (f"Error estimate: {dof} dof of the S/N ANOVA (MS = {_g(ms)} dB^2) from the array columns "
                "no factor uses, assuming the interactions they carry are negligible; no replicates.")
        return Noise("residual", dof, ms, pooled, "sn", text)
    used = sum(dof for _, _, dof in raw_sn.terms)
    text = (f"No error estimate: {n_runs} unreplicated runs give {n_runs - 1} dof and the terms use "
            f"{'all of them' if used >= n_runs - 1 else used}, so no effect can be called significant. "
            "Get an estimate with `replicates: 2` in the study (pure error) or `--pool auto` "
            "(pooling, optimistic).")
    return Noise("none", 0, math.nan, pooled, "sn", text)


def judge(noise: Noise, anova_sn: pd.DataFrame, anova_raw: pd.DataFrame | None
          ) -> tuple[dict[str, float | None], dict[str, bool | None]]:
    """``(p_values, significant)`` per ANOVA term, from the ANOVA ``noise`` names."""
    table = anova_raw if noise.scale == "raw" and anova_raw is not None else anova_sn
    p_values: dict[str, float | None] = {}
    significant: dict[str, bool | None] = {}
    for row in table.itertuples(index=False):
        if row.source in ("Error", "Total"):
            continue
        p = float(row.p)
        if bool(row.pooled):
            p_values[row.source], significant[row.source] = None, False
        elif math.isfinite(p):
            p_values[row.source], significant[row.source] = p, p < ALPHA
        else:
            p_values[row.source], significant[row.source] = None, None
    return p_values, significant


def level_intervals(level_means: Mapping[str, Mapping[str, float]], counts: Mapping[str, Mapping[str, int]],
                    dof: int, ms: float) -> dict[str, dict[str, tuple[float, float]]] | None:
    """95 % interval of each level mean: ``mean +- t(0.975, dof) * sqrt(ms / n_level)``,
    ``n_level`` the observations at that level on the scale used; None without an
    estimate (no dof, or an MS that is zero or undefined: an interval of width zero
    would claim certainty the data do not hold)."""
    if dof <= 0 or not math.isfinite(ms) or ms <= 0:
        return None
    from scipy import stats

    t = float(stats.t.ppf(1 - ALPHA / 2, dof))
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for factor, means in level_means.items():
        out[factor] = {}
        for level, m in means.items():
            half = t * math.sqrt(ms / counts[factor][level])
            out[factor][level] = (float(m - half), float(m + half))
    return out


def level_counts(frame: pd.DataFrame, factors: Sequence[str], levels: Mapping[str, Sequence[str]]
                 ) -> dict[str, dict[str, int]]:
    """Rows of ``frame`` at each level of each factor (runs for S/N, observations for means)."""
    out = {}
    for f in factors:
        vc = frame[f].value_counts()
        out[f] = {lvl: int(vc.get(lvl, 0)) for lvl in levels[f]}
    return out
