"""From a raw results table to clean observations: one row per finite response (private).

Everything that can be wrong with a results table is caught here, with a message
that names the column, run or level: missing columns, a run whose factor values
change between replicates, values that are not levels of the study, runs the run
engine lost. Lost runs are never dropped silently (an orthogonal array with a hole
is no longer orthogonal): the caller must rerun them or ask for imputation, and the
imputation is reported as a warning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from doe_sr.core.errors import UserError
from doe_sr.core.objectives import check_objective, sn_ratio


@dataclass
class Prepared:
    obs: pd.DataFrame  # one row per finite observation: run, factor/term columns, "y"
    levels: dict[str, list[str]]  # factor or interaction column -> ordered level strings
    interaction_columns: dict[tuple[str, str], str]  # (a, b) -> column holding its level
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fmt_runs(runs: Sequence[int]) -> str:
    return ", ".join(str(r) for r in sorted(runs))


def as_text(value: object) -> str:
    """Level text as it would be printed; integral floats from a CSV ("64.0") lose
    the ".0" so they match the study's "64". Public: the interaction plots read levels
    the same way, so their lines match the analysis's levels."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _to_levels(values: pd.Series, known: Sequence[str] | None, column: str) -> pd.Series:
    """Map raw cell values to level strings; with known levels, also accept a value
    that equals a level numerically ("1e-3" for "0.001")."""
    text = values.map(as_text)
    if known is None:
        return text
    known = [as_text(k) for k in known]
    mapping: dict[str, str] = {}
    for raw in text.unique():
        if raw in known:
            mapping[raw] = raw
            continue
        match = [k for k in known if _same_number(raw, k)]
        if len(match) != 1:
            raise UserError(
                f"value '{raw}' of factor '{column}' is not one of its levels "
                f"{known}; fix the results table or the study's levels"
            )
        mapping[raw] = match[0]
    return text.map(mapping)


def _same_number(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    except ValueError:
        return False


def _interaction_column(results: pd.DataFrame, a: str, b: str) -> str | None:
    for name in (f"{a}:{b}", f"{a}×{b}", f"{a}*{b}", f"{a}x{b}"):
        if name in results.columns:
            return name
    return None


def prepare(
    results: pd.DataFrame,
    factors: Sequence[str],
    response: str,
    objective: str,
    *,
    levels: Mapping[str, Sequence[str]] | None,
    design: pd.DataFrame | None,
    impute: str | None,
    interactions: Sequence[tuple[str, str]],
) -> Prepared:
    check_objective(objective)
    if impute not in (None, "worst"):
        raise UserError(f"impute '{impute}' is not supported; use 'worst' or leave it out")
    factors = list(factors)
    if not factors:
        raise UserError("no factors given; name the factor columns of the results table")
    if len(set(factors)) != len(factors):
        raise UserError(f"factors {factors} contain duplicates; name each factor once")
    missing = [c for c in [*factors, response] if c not in results.columns]
    if missing:
        raise UserError(
            f"results table has no column(s) {missing}; its columns are {list(results.columns)}"
        )
    if response in factors:
        raise UserError(
            f"'{response}' is both the response and a factor; a column cannot explain itself: "
            "drop it from the factors or pick another response"
        )
    for a, b in interactions:
        if a not in factors or b not in factors or a == b:
            raise UserError(
                f"interaction ({a!r}, {b!r}) must name two different factors among {factors}"
            )
    if results.empty:
        raise UserError("results table is empty; run the study first")

    levels = dict(levels or {})
    unknown = [f for f in levels if f not in factors]
    if unknown:
        raise UserError(f"levels given for unknown factor(s) {unknown}; factors are {factors}")
    warnings: list[str] = []
    notes: list[str] = []

    df = results.copy()
    for f in factors:
        df[f] = _to_levels(df[f], levels.get(f), f)
    icols: dict[tuple[str, str], str] = {}
    for a, b in interactions:
        col = _interaction_column(df, a, b)
        if col is not None:
            icols[(a, b)] = col
            df[col] = df[col].map(as_text)

    if "run" in df.columns:
        run = pd.to_numeric(df["run"], errors="coerce")
        if run.isna().any() or not np.all(np.mod(run, 1) == 0):
            raise UserError("column 'run' must hold integer array-run numbers (1-based)")
        df["run"] = run.astype(int)
    else:
        # An external table without run numbers: each distinct level combination is a run.
        keys = df[factors].apply(tuple, axis=1)
        df["run"] = pd.factorize(keys)[0] + 1
        notes.append(
            "no 'run' column: rows with the same factor levels were taken as replicates of one run"
        )
    df["y"] = pd.to_numeric(df[response], errors="coerce").astype(float)
    _check_magnitude(df["y"], response)

    term_cols = [*factors, *icols.values()]
    for col in term_cols:
        varying = df.groupby("run")[col].nunique()
        bad = varying[varying > 1].index.tolist()
        if bad:
            raise UserError(
                f"column '{col}' changes between replicates of run(s) {_fmt_runs(bad)}; "
                "each run must have one level per factor"
            )

    run_table = df.sort_values("run", kind="stable").drop_duplicates("run")[["run", *term_cols]]
    if design is not None:
        run_table = _merge_design(run_table, design, factors, levels)
        holes = [c for c in term_cols if run_table[c].isna().any()]
        if holes:
            runs = run_table.loc[run_table[holes].isna().any(axis=1), "run"].tolist()
            raise UserError(
                f"column(s) {holes} are unknown for run(s) {_fmt_runs(runs)}, which have no "
                "results; add these columns to the design table"
            )
    finite = df[np.isfinite(df["y"])]
    lost = sorted(set(run_table["run"]) - set(finite["run"]))
    partial = _partial_runs(df, finite)
    if partial:
        warnings.append(
            f"run(s) {_fmt_runs(partial)} lost some replicates (non-finite {response}); "
            "their means and S/N use the replicates that remain"
        )
    obs = finite[["run", "y"]].merge(run_table, on="run", how="left")
    if lost:
        if impute is None:
            raise UserError(
                f"run(s) {_fmt_runs(lost)} have no finite '{response}' (lost or diverged); "
                "rerun them, or analyze with --impute worst to replace them by the worst "
                "observed response"
            )
        if finite.empty:
            raise UserError(f"no run has a finite '{response}'; nothing to analyze")
        obs, message = _impute_worst(obs, run_table, lost, objective, response)
        warnings.append(message)

    level_order: dict[str, list[str]] = {}
    for col in term_cols:
        seen = list(dict.fromkeys(run_table.sort_values("run", kind="stable")[col]))
        if col in levels:
            given = [as_text(v) for v in levels[col]]
            absent = [v for v in given if v not in seen]
            if absent:
                raise UserError(
                    f"level(s) {absent} of factor '{col}' appear in no run; an effect of an "
                    "unobserved level cannot be estimated: complete the runs or drop the level"
                )
            level_order[col] = given
        else:
            level_order[col] = seen
    _check_contrast(run_table, factors, level_order)
    obs = obs.sort_values(["run"], kind="stable").reset_index(drop=True)
    return Prepared(obs, level_order, icols, warnings, notes)


#: S/N ratios and sums of squares square the response: beyond this magnitude (or below
#: its inverse) the squares overflow to inf or underflow to 0 in float64.
MAGNITUDE = 1e150


def _check_magnitude(y: pd.Series, response: str) -> None:
    """Refuse responses whose squares do not fit a float (1e301 squared is inf)."""
    finite = y[np.isfinite(y)].abs()
    odd = finite[(finite > MAGNITUDE) | ((finite > 0) & (finite < 1 / MAGNITUDE))]
    if len(odd):
        raise UserError(
            f"response '{response}' has the value {y[odd.index[0]]:.6g}, too large or too small to "
            f"square in floating point (S/N and ANOVA need |y| between {1 / MAGNITUDE:g} and "
            f"{MAGNITUDE:g}); rescale the column (another unit) or fix the value"
        )


def _check_contrast(run_table: pd.DataFrame, factors: Sequence[str], levels: Mapping[str, list[str]]) -> None:
    """An effect is a difference between levels: one run, or a factor seen at one level
    only, has none, and would print an 'optimum' made of NaN rows."""
    n_runs = run_table["run"].nunique()
    if n_runs < 2:
        raise UserError(
            f"the results hold {n_runs} run; a Taguchi analysis compares the runs of an "
            "orthogonal array, so give it all of the array's runs"
        )
    for f in factors:
        if len(levels[f]) < 2:
            raise UserError(
                f"factor '{f}' has a single level ({levels[f][0]}) in the results; an effect needs "
                "at least 2 levels: drop it from the factors or add the runs at its other levels"
            )


def _merge_design(
    run_table: pd.DataFrame,
    design: pd.DataFrame,
    factors: Sequence[str],
    levels: Mapping[str, Sequence[str]],
) -> pd.DataFrame:
    """Runs of the full design (so lost runs are known) with their levels, after
    checking the results agree with the design."""
    missing = [c for c in ["run", *factors] if c not in design.columns]
    if missing:
        raise UserError(f"design table has no column(s) {missing}; it needs 'run' and the factors")
    other = [c for c in run_table.columns if c not in ("run", *factors)]
    d = design[["run", *factors, *[c for c in other if c in design.columns]]].copy()
    d["run"] = pd.to_numeric(d["run"], errors="coerce")
    if d["run"].isna().any() or d["run"].duplicated().any():
        raise UserError("design column 'run' must hold unique integer run numbers")
    d["run"] = d["run"].astype(int)
    for f in factors:
        d[f] = _to_levels(d[f], levels.get(f), f)
    for c in other:
        if c in d.columns:
            d[c] = d[c].map(as_text)
    extra = sorted(set(run_table["run"]) - set(d["run"]))
    if extra:
        raise UserError(
            f"results contain run(s) {_fmt_runs(extra)} that the design does not have; "
            "check that the results belong to this study"
        )
    check = run_table.merge(d, on="run", suffixes=("", "__design"))
    for f in [*factors, *[c for c in other if c in d.columns]]:
        bad = check.loc[check[f] != check[f + "__design"], "run"].tolist()
        if bad:
            raise UserError(
                f"column '{f}' of run(s) {_fmt_runs(bad)} differs between results and "
                "design; check that the results belong to this study"
            )
    rest = [c for c in run_table.columns if c not in d.columns]
    return d.merge(run_table[["run", *rest]], on="run", how="left").sort_values("run")


def _partial_runs(df: pd.DataFrame, finite: pd.DataFrame) -> list[int]:
    total = df.groupby("run").size()
    kept = finite.groupby("run").size()
    both = kept.reindex(total.index).fillna(0)
    return [int(r) for r in total.index if 0 < both[r] < total[r]]


def _impute_worst(
    obs: pd.DataFrame, run_table: pd.DataFrame, lost: list[int], objective: str, response: str
) -> tuple[pd.DataFrame, str]:
    """Fill lost runs with the worst observed response for the objective.

    larger: the smallest observed value; smaller: the largest; each lost run gets as
    many copies as the most replicated run has. nominal: a constant run has no
    variance (infinite S/N), so the lost run copies the replicates of the run with
    the worst (lowest) S/N instead. Imputing "worst" biases the lost levels' effects
    downwards, the conservative direction when choosing an optimum.
    """
    reps = int(obs.groupby("run").size().max())
    if objective == "nominal":
        sn = obs.groupby("run")["y"].apply(lambda v: sn_ratio(v.to_numpy(), "nominal"))
        worst_run = int(sn.idxmin())
        values = obs.loc[obs["run"] == worst_run, "y"].tolist()
        what = f"the replicates of run {worst_run} (lowest S/N)"
    else:
        worst = float(obs["y"].min() if objective == "larger" else obs["y"].max())
        values = [worst] * reps
        what = f"the worst observed value {worst:.6g} ({reps} replicate(s) each)"
    fill = []
    for run in lost:
        base = run_table.loc[run_table["run"] == run].iloc[0]
        for v in values:
            row = base.to_dict()
            row["y"] = v
            fill.append(row)
    obs = pd.concat([obs, pd.DataFrame(fill)[obs.columns]], ignore_index=True)
    message = (
        f"run(s) {_fmt_runs(lost)} had no finite '{response}' and were imputed with {what}; "
        "the effects of their levels are biased towards 'bad': rerun them for a trustworthy analysis"
    )
    return obs, message
