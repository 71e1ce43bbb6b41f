"""Taguchi analysis of an orthogonal-array study: S/N ratios, response tables, ANOVA,
optimum levels, additive prediction with confidence intervals, confirmation.

Conventions (so a reader can check every number):

* S/N ratios in decibels as defined by Taguchi and tabulated by Ross, *Taguchi
  Techniques for Quality Engineering* (2nd ed., ch. 9) and Phadke, *Quality
  Engineering Using Robust Design* (ch. 5); they are the formulas Minitab prints.
* Response tables as Minitab's "Analyze Taguchi Design": the mean of the run S/N
  values (and of the run means) at each level, Delta = max - min, Rank 1 = largest
  Delta. Each run weighs the same, whatever its number of replicates.
* ANOVA on the run S/N values (one per run; an L9 with four 3-level factors leaves
  no error dof, so F and p are undefined unless factors are pooled) and on the raw
  responses (every replicate). Type II least squares, equal to the textbook column
  sums of squares for a balanced orthogonal array (see ``_anova``).
* Optimum: the level with the highest mean S/N (Taguchi's rule, whatever the
  objective). Prediction: the additive model ``grand + sum(level mean - grand)`` over
  the unpooled factors, with Ross's confidence intervals
  ``+- sqrt(F(0.05; 1, dof_e) * MS_e / n_eff)``, ``n_eff = N / (1 + dof of the
  factors used)``, and ``+- sqrt(F * MS_e * (1/n_eff + 1/r))`` for the mean of r
  confirmation runs.

S/N ratios live in :mod:`doe_sr.core.objectives`, the prediction in
:mod:`~doe_sr.analysis.prediction`, the confirmation verdict in
:mod:`~doe_sr.analysis.confirmation`.

Pure pandas/numpy/scipy: no TensorFlow, no MLflow, so this imports and tests fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from doe_sr.analysis import anova as _anova
from doe_sr.analysis import noise as _noise
from doe_sr.analysis import observations as _observations
from doe_sr.analysis.dispersion import dispersion_tables
from doe_sr.analysis.formatting import interval as _interval
from doe_sr.analysis.formatting import number
from doe_sr.analysis.noise import Noise
from doe_sr.analysis.prediction import Prediction, predict
from doe_sr.analysis.residuals import residual_table
from doe_sr.core.errors import UserError
from doe_sr.core.objectives import OBJECTIVE_TEXT, sn_ratio

__all__ = ["Analysis", "Noise", "Prediction", "analyze"]


@dataclass
class Analysis:
    """Everything a Taguchi analysis reports; ``to_dict`` is the JSON contract of
    ``doe-sr analyze --format json`` (ARCHITECTURE.md)."""

    response: str
    objective: str
    factors: list[str]
    levels: dict[str, list[str]]
    runs: pd.DataFrame  # run, factors..., n, mean, sd, sn
    sn_response: pd.DataFrame  # Minitab layout: rows 1..k, Delta, Rank; columns factors
    mean_response: pd.DataFrame
    delta: dict[str, float]  # of the S/N table (Taguchi ranks factors by S/N)
    rank: dict[str, int]
    anova: pd.DataFrame  # on the run S/N values
    anova_raw: pd.DataFrame | None  # on every replicate; None when each run has one
    pooled: list[str]
    optimum: dict[str, str]  # best level by S/N
    predicted: Prediction
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    optimum_mean: dict[str, str | None] = field(default_factory=dict)
    delta_mean: dict[str, float] = field(default_factory=dict)
    rank_mean: dict[str, int] = field(default_factory=dict)
    grand_sn: float = math.nan
    grand_mean: float = math.nan
    interactions: list[str] = field(default_factory=list)
    #: Where the error estimate comes from (:mod:`doe_sr.analysis.noise`).
    noise: Noise | None = None
    #: p of every ANOVA term in the ANOVA ``noise`` judges on; None untested or without estimate.
    p_values: dict[str, float | None] = field(default_factory=dict)
    #: p < 0.05; False for a pooled term; None without an error estimate.
    significant: dict[str, bool | None] = field(default_factory=dict)
    #: sd, ln(s), nominal S/N type I/II response tables; empty without replicates.
    dispersion: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: Observations (run, factors, y) in run order: the residuals and level counts read them.
    observations: pd.DataFrame | None = None

    @property
    def judged_anova(self) -> pd.DataFrame:
        """The ANOVA the noise source judges effects on (``noise.table``): the raw responses
        with replicates, the S/N ratios otherwise. The verdict, the Pareto chart and the
        significance line all read this one table."""
        if self.noise is not None and self.noise.scale == "raw" and self.anova_raw is not None:
            return self.anova_raw
        return self.anova

    def level_intervals(self, which: str = "mean") -> dict[str, dict[str, tuple[float, float]]] | None:
        """95 % interval of each level mean of the ``"mean"`` or ``"sn"`` response table:
        ``mean +- t(0.975, dof_e) sqrt(MS_e / n_level)`` with the error (pooled terms
        folded in) of the raw-response ANOVA for ``"mean"`` (n_level = observations at
        the level) or of the S/N ANOVA for ``"sn"`` (n_level = runs at the level).
        None when that scale has no error estimate. With unequal replicates the level
        mean weighs runs equally while n_level counts observations: an approximation."""
        if which not in ("mean", "sn"):
            raise UserError(f"level_intervals: which must be 'mean' or 'sn', not {which!r}")
        p = self.predicted
        if which == "sn":
            counts = _noise.level_counts(self.runs, self.factors, self.levels)
            return _noise.level_intervals(self.level_values("sn"), counts, p.sn_error_dof, p.sn_error_ms)
        frame = self.observations if self.observations is not None else self.runs
        counts = _noise.level_counts(frame, self.factors, self.levels)
        return _noise.level_intervals(self.level_values("mean"), counts, p.error_dof, p.error_ms)

    @property
    def residuals(self) -> pd.DataFrame | None:
        """Residuals of the additive main-effects model (unpooled factors) on the raw
        responses (:func:`~doe_sr.analysis.residuals.residual_table`); None when the
        model leaves no residual dof (saturated and unreplicated: nothing to plot)."""
        if self.observations is None:
            return None
        used = [f for f in self.factors if f not in set(self.pooled)]
        table, dof = residual_table(self.observations, used, self.levels)
        return table if dof > 0 else None

    def level_values(self, which: str = "sn") -> dict[str, dict[str, float]]:
        """``{factor: {level: mean}}`` of the S/N (``"sn"``) or means (``"mean"``) table."""
        table = self.sn_response if which == "sn" else self.mean_response
        return {
            f: {lvl: float(table.at[str(i + 1), f]) for i, lvl in enumerate(self.levels[f])}
            for f in self.factors
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN and inf become None, numpy scalars plain Python)."""
        out = {
            "response": self.response,
            "objective": self.objective,
            "factors": self.factors,
            "levels": self.levels,
            "sn_response": self.level_values("sn"),
            "mean_response": self.level_values("mean"),
            "delta": self.delta,
            "rank": self.rank,
            "delta_mean": self.delta_mean,
            "rank_mean": self.rank_mean,
            "grand_sn": self.grand_sn,
            "grand_mean": self.grand_mean,
            "anova": self.anova.to_dict(orient="records"),
            "anova_raw": None if self.anova_raw is None else self.anova_raw.to_dict(orient="records"),
            "pooled": self.pooled,
            "interactions": self.interactions,
            "optimum": self.optimum,
            "optimum_mean": self.optimum_mean,
            "predicted": self.predicted.to_dict(),
            "runs": self.runs.to_dict(orient="records"),
            "warnings": self.warnings,
            "notes": self.notes,
            "noise": None if self.noise is None else self.noise.to_dict(),
            "p_values": self.p_values,
            "significant": self.significant,
        }
        return _json_clean(out)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Paper tables, ready for CSV/Markdown/LaTeX: ``runs``, ``sn_response``,
        ``mean_response``, ``anova``, ``optimum`` (and ``anova_raw``); with replicates
        also ``sd_response``, ``ln_s_response``, ``sn_nominal_1_response`` and
        ``sn_nominal_2_response`` (:mod:`~doe_sr.analysis.dispersion`)."""
        out = {
            "runs": self.runs.copy(),
            "sn_response": self.sn_response.copy(),
            "mean_response": self.mean_response.copy(),
            "anova": _paper_anova(self.anova),
            "optimum": self._optimum_table(),
        }
        if self.anova_raw is not None:
            out["anova_raw"] = _paper_anova(self.anova_raw)
        out.update({name: table.copy() for name, table in self.dispersion.items()})
        return out

    def _optimum_table(self) -> pd.DataFrame:
        sn = self.level_values("sn")
        means = self.level_values("mean")
        rows = []
        for f in self.factors:
            best_mean = self.optimum_mean.get(f)
            rows.append(
                {
                    "Factor": f,
                    "Best level (S/N)": self.optimum[f],
                    "S/N at best (dB)": sn[f][self.optimum[f]],
                    "Best level (mean)": best_mean if best_mean is not None else "",
                    "Mean at best": means[f][best_mean] if best_mean is not None else math.nan,
                    "Used in prediction": f in self.predicted.factors_used,
                }
            )
        return pd.DataFrame(rows)

    def to_text(self) -> str:
        """Plain-text report for the terminal."""
        def fmt(value):
            return number(value, missing="-")

        lines = [
            f"Taguchi analysis of '{self.response}' ({OBJECTIVE_TEXT[self.objective]})",
            "",
            "Levels: "
            + "; ".join(
                f"{f}: " + ", ".join(f"{i + 1}={lvl}" for i, lvl in enumerate(self.levels[f]))
                for f in self.factors
            ),
            "",
            "Runs",
            self.runs.to_string(index=False, float_format=fmt),
            "",
            "Response table for S/N ratios (dB)",
            self.sn_response.to_string(float_format=fmt),
            "",
            "Response table for means",
            self.mean_response.to_string(float_format=fmt),
            "",
            "ANOVA of S/N ratios" + (f" (pooled: {', '.join(self.pooled)})" if self.pooled else ""),
            self.anova.to_string(index=False, float_format=fmt, na_rep="-"),
        ]
        if self.noise is not None:
            lines += ["", self.noise.statement]
        from doe_sr.analysis.dispersion import DISPERSION_TABLES

        for name, table in self.dispersion.items():
            lines += ["", f"Response table for {DISPERSION_TABLES[name]}",
                      table.to_string(float_format=fmt, na_rep="-")]
        if self.anova_raw is not None:
            lines += [
                "",
                f"ANOVA of raw '{self.response}'",
                self.anova_raw.to_string(index=False, float_format=fmt, na_rep="-"),
            ]
        p = self.predicted
        lines += [
            "",
            "Optimum (best S/N level): " + ", ".join(f"{f}={lvl}" for f, lvl in self.optimum.items()),
            f"Predicted S/N {fmt(p.sn)} dB, CI95 {_interval(p.sn_ci95)}",
            f"Predicted mean {fmt(p.mean)}, CI95 {_interval(p.ci95)}; "
            f"for {p.confirmation_r} confirmation run(s) {_interval(p.confirmation_ci95)}",
            f"(factors used: {', '.join(p.factors_used)}; n_eff = {fmt(p.n_eff)})",
        ]
        for title, items in (("Warnings", self.warnings), ("Notes", self.notes)):
            if items:
                lines += ["", title] + [f"- {item}" for item in items]
        return "\n".join(lines)


def analyze(
    results: pd.DataFrame,
    factors: Sequence[str],
    response: str,
    objective: str = "larger",
    *,
    levels: Mapping[str, Sequence[str]] | None = None,
    pool: Sequence[str] | str | None = None,
    design: pd.DataFrame | None = None,
    impute: str | None = None,
    interactions: Sequence[tuple[str, str]] = (),
) -> Analysis:
    """Analyze a results table (one row per array run and replicate).

    ``results`` holds the factor columns (levels as text, e.g. "0.001", "adam"), a
    1-based ``run`` column (without it, rows with equal levels are one run),
    optionally ``replicate``, and ``response``. ``levels`` fixes the level order
    (otherwise: order of first appearance by run number). ``design`` (``run`` +
    factors) lets lost runs be detected; lost runs raise ``UserError`` unless
    ``impute="worst"``. ``pool`` is a list of factors to pool into the error or
    ``"auto"`` (see ``_anova.auto_pool``). ``interactions`` are factor pairs: if the
    results have a column ``"a:b"`` (or ``a×b``, ``a*b``, ``axb``) holding the level
    of the array column assigned to the interaction, that column is the term;
    otherwise the full two-factor interaction is estimated from the data (it must
    not be confounded with the main effects, which ``UserError`` reports).
    """
    interactions = [tuple(pair) for pair in interactions]
    prep = _observations.prepare(
        results, factors, response, objective,
        levels=levels, design=design, impute=impute, interactions=interactions,
    )
    factors = list(factors)
    warnings, notes = list(prep.warnings), list(prep.notes)
    runs = _run_summary(prep.obs, factors, list(prep.interaction_columns.values()), objective, response)

    counts = runs["n"].unique()
    if len(counts) > 1:
        warnings.append(
            "runs have unequal numbers of replicates ("
            + ", ".join(f"run {r}: {n}" for r, n in zip(runs["run"], runs["n"]))
            + "); each run still weighs the same in the response tables"
        )
    warnings += _anova.balance_warnings(runs, factors)

    sn_table, sn_levels, delta, rank = _response_table(runs, "sn", factors, prep.levels)
    mean_table, mean_levels, delta_mean, rank_mean = _response_table(runs, "mean", factors, prep.levels)
    grand_sn = float(runs["sn"].mean())
    grand_mean = float(runs["mean"].mean())

    term_names = factors + [_interaction_name(a, b) for a, b in interactions]
    run_terms = _terms(runs, factors, prep.levels, interactions, prep.interaction_columns)
    _anova.check_estimable(run_terms, len(runs))
    raw_sn = _anova.sums_of_squares(runs["sn"].to_numpy(), run_terms)
    pooled = _resolve_pool(pool, raw_sn, term_names)
    anova_sn = _anova.anova_table(raw_sn, pooled)
    obs_terms = _terms(prep.obs, factors, prep.levels, interactions, prep.interaction_columns)
    raw_obs = _anova.sums_of_squares(prep.obs["y"].to_numpy(), obs_terms)
    anova_obs = _anova.anova_table(raw_obs, pooled)
    replicated = bool((runs["n"] > 1).any())

    sn_err_dof, _ = _anova.error_of(raw_sn, pooled)
    if sn_err_dof == 0:
        notes.append(
            f"the S/N ANOVA has no error degrees of freedom: {len(runs)} runs give "
            f"{len(runs) - 1} dof and the terms use all of them (saturated array; "
            "replicates do not help since each run has one S/N), so F and p are undefined; "
            "pool the smallest factors (pool='auto', --pool auto) to get an error estimate"
        )
    for name, raw in (("S/N", raw_sn), ("raw-response", raw_obs)):
        dof, ms = _anova.error_of(raw, pooled)
        if dof > 0 and not ms > 0:
            notes.append(
                f"the {name} ANOVA's error SS is zero (the data fit the additive model "
                "exactly), so F and p are undefined"
            )
    if pooled:
        notes.append(
            f"pooled into the error: {', '.join(pooled)}"
            + (" (Taguchi's pooling-up rule: smallest SS first until the error has half "
               "the total dof)" if pool == "auto" else "")
        )

    optimum = {f: max(prep.levels[f], key=lambda lvl: sn_levels[f][lvl]) for f in factors}
    for f in factors:
        best = sn_levels[f][optimum[f]]
        tied = [
            lvl for lvl in prep.levels[f]
            if math.isclose(sn_levels[f][lvl], best, rel_tol=1e-12, abs_tol=1e-12)
        ]
        if len(tied) > 1:
            notes.append(
                f"levels {', '.join(tied)} of '{f}' tie on S/N; the first in level order is reported"
            )
    if objective == "nominal":
        optimum_mean: dict[str, str | None] = {f: None for f in factors}
        notes.append(
            "nominal-the-best: the best level by means depends on the target, so only "
            "the S/N optimum is given; use a factor with a large mean effect and a small "
            "S/N effect to adjust the mean to target (Taguchi's two-step optimization)"
        )
    else:
        pick = max if objective == "larger" else min
        optimum_mean = {f: pick(prep.levels[f], key=lambda lvl: mean_levels[f][lvl]) for f in factors}

    used = [f for f in factors if f not in pooled]
    if any(name not in pooled for name in term_names[len(factors):]):
        notes.append("interaction terms are not part of the additive prediction (main effects only)")
    strong = anova_sn.loc[
        anova_sn["source"].isin(term_names[len(factors):]) & (anova_sn["p"] < 0.05), "source"
    ].tolist()
    if strong:
        warnings.append(
            f"interaction(s) {', '.join(strong)} are significant on S/N (p < 0.05): the "
            "main-effect optimum and its additive prediction may be wrong for those "
            "factors; pick their levels from the interaction plot"
        )
    predicted = predict(
        used, optimum, prep.levels, sn_levels, mean_levels, grand_sn, grand_mean,
        raw_sn, raw_obs, pooled, n_runs=len(runs), n_obs=len(prep.obs),
        r=int(runs["n"].max()), notes=notes,
    )
    noise = _noise.noise_of(runs, raw_sn, raw_obs, pooled, response, pool_auto=pool == "auto")
    p_values, significant = _noise.judge(noise, anova_sn, anova_obs if replicated else None)
    dispersion: dict[str, pd.DataFrame] = {}
    if replicated:
        dispersion, more = dispersion_tables(runs, factors, prep.levels)
        notes += more
    observations = prep.obs.sort_values("run", kind="stable").reset_index(drop=True)
    return Analysis(
        response=response,
        objective=objective,
        factors=factors,
        levels={f: prep.levels[f] for f in factors},
        runs=runs,
        sn_response=sn_table,
        mean_response=mean_table,
        delta=delta,
        rank=rank,
        anova=anova_sn,
        anova_raw=anova_obs if replicated else None,
        pooled=pooled,
        optimum=optimum,
        predicted=predicted,
        warnings=warnings,
        notes=notes,
        optimum_mean=optimum_mean,
        delta_mean=delta_mean,
        rank_mean=rank_mean,
        grand_sn=grand_sn,
        grand_mean=grand_mean,
        interactions=term_names[len(factors):],
        noise=noise,
        p_values=p_values,
        significant=significant,
        dispersion=dispersion,
        observations=observations[["run", *factors, "y"]],
    )


# --- private helpers ---------------------------------------------------------------


def _interaction_name(a: str, b: str) -> str:
    return f"{a}×{b}"


def _run_summary(
    obs: pd.DataFrame, factors: list[str], extra: list[str], objective: str, response: str
) -> pd.DataFrame:
    rows = []
    for run, group in obs.groupby("run", sort=True):
        y = group["y"].to_numpy()
        try:
            sn = sn_ratio(y, objective)
        except UserError as err:
            raise UserError(f"run {run}: {err}") from None
        row = {"run": int(run), **{c: group[c].iloc[0] for c in [*factors, *extra]}}
        row.update(n=int(y.size), mean=float(y.mean()),
                   sd=float(y.std(ddof=1)) if y.size > 1 else math.nan, sn=sn)
        rows.append(row)
    return pd.DataFrame(rows)


def _response_table(
    runs: pd.DataFrame, column: str, factors: list[str], levels: dict[str, list[str]]
) -> tuple[pd.DataFrame, dict[str, dict[str, float]], dict[str, float], dict[str, int]]:
    """Minitab's response table: level means of the run values, Delta, Rank."""
    level_means = {}
    for f in factors:
        by_level = runs.groupby(f, sort=False)[column].mean()
        level_means[f] = {lvl: float(by_level[lvl]) for lvl in levels[f]}
    delta = {f: max(m.values()) - min(m.values()) for f, m in level_means.items()}
    # Round before ranking so that deltas equal up to float noise tie (method="min").
    rounded = pd.Series({f: float(f"{d:.12g}") for f, d in delta.items()})
    rank = {f: int(r) for f, r in rounded.rank(ascending=False, method="min").items()}
    k = max(len(levels[f]) for f in factors)
    index = [str(i + 1) for i in range(k)] + ["Delta", "Rank"]
    table = pd.DataFrame(index=pd.Index(index, name="Level"), columns=factors, dtype=object)
    for f in factors:
        for i, lvl in enumerate(levels[f]):
            table.at[str(i + 1), f] = level_means[f][lvl]
        table.at["Delta", f] = delta[f]
        table.at["Rank", f] = rank[f]
    return table, level_means, delta, rank


def _terms(
    frame: pd.DataFrame,
    factors: list[str],
    levels: dict[str, list[str]],
    interactions: Sequence[tuple[str, str]],
    icols: Mapping[tuple[str, str], str],
) -> list[_anova.Term]:
    blocks = {}
    for f in factors:
        codes = frame[f].map({lvl: i for i, lvl in enumerate(levels[f])}).to_numpy()
        blocks[f] = _anova.dummies(codes, len(levels[f]))
    terms = [_anova.Term(f, frozenset({f}), blocks[f]) for f in factors]
    for a, b in interactions:
        if (a, b) in icols:
            col = icols[(a, b)]
            codes = frame[col].map({lvl: i for i, lvl in enumerate(levels[col])}).to_numpy()
            columns = _anova.dummies(codes, len(levels[col]))
        else:
            columns = _anova.interaction_columns(blocks[a], blocks[b])
        terms.append(_anova.Term(_interaction_name(a, b), frozenset({a, b}), columns))
    return terms


def _resolve_pool(pool: Sequence[str] | str | None, raw: _anova.RawAnova, names: list[str]) -> list[str]:
    if pool is None:
        return []
    if isinstance(pool, str):
        if pool.strip() == "auto":
            return _anova.auto_pool(raw)
        pool = [p.strip() for p in pool.split(",") if p.strip()]  # "a,b" from a CLI flag
    aliases = {n: n for n in names}
    for n in names:
        if "×" in n:
            a, b = n.split("×", 1)
            aliases.update({f"{a}:{b}": n, f"{a}*{b}": n, f"{a}x{b}": n})
    unknown = [p for p in pool if p not in aliases]
    if unknown:
        raise UserError(f"cannot pool {unknown}: not an ANOVA term; terms are {names} (or 'auto')")
    chosen = list(dict.fromkeys(aliases[p] for p in pool))
    if len(chosen) == len(names):
        raise UserError("cannot pool every term into the error; leave at least one unpooled")
    return chosen


def _paper_anova(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out["source"] = [f"{s} (pooled)" if p else s for s, p in zip(out["source"], out["pooled"])]
    out = out.drop(columns="pooled")
    return out.rename(
        columns={"source": "Source", "dof": "DF", "ss": "SS", "ms": "MS", "f": "F",
                 "p": "P", "contribution_pct": "Contribution (%)"}
    )


def _json_clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_clean(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if value is None or isinstance(value, str):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)
