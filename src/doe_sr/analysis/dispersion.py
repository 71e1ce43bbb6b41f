"""Response tables of the scatter between replicates (Minitab's "Analyze Taguchi Design"
with replicates): standard deviation, ln(s), and nominal-the-best S/N types I and II.

Why: with replicates the question is not only which levels raise the mean but which
make it stable. Each table has the layout of the S/N response table: the mean of the
per-run values at each level, Delta = max - min, Rank 1 = largest Delta.

Per-run values (s = sample standard deviation of the run's replicates, n - 1 divisor):

* ``sd``: s;  ``ln_s``: ln(s);
* ``sn_nominal_1`` (type I): ``10 log10(ybar^2 / s^2)``;
* ``sn_nominal_2`` (type II): ``-10 log10(s^2)``.

A run whose replicates are identical has s = 0, so ln(s), type I and type II are
infinite; a run with a single replicate has no s at all. Such a run value is left as
NaN (never silently dropped): every level mean that contains it is NaN, so is the
factor's Delta, and the factor gets no Rank; a note names the runs. Averaging over the
remaining runs instead would compare levels over different sets of runs, which the
orthogonal array's balance no longer protects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["DISPERSION_TABLES", "dispersion_tables", "run_dispersion"]

#: Table name -> what its values are (the report's captions can use these).
DISPERSION_TABLES = {
    "sd_response": "standard deviations",
    "ln_s_response": "ln(standard deviation)",
    "sn_nominal_1_response": "nominal-the-best S/N type I, 10 log10(ybar^2/s^2) (dB)",
    "sn_nominal_2_response": "nominal-the-best S/N type II, -10 log10(s^2) (dB)",
}
_COLUMNS = {"sd_response": "sd", "ln_s_response": "ln_s", "sn_nominal_1_response": "sn_nominal_1",
            "sn_nominal_2_response": "sn_nominal_2"}


def run_dispersion(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-run ``sd``, ``ln_s``, ``sn_nominal_1``, ``sn_nominal_2`` (NaN where undefined
    or infinite) from the ``mean`` and ``sd`` columns of the run table."""
    s = runs["sd"].to_numpy(dtype=float)
    mean = runs["mean"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = pd.DataFrame({
            "run": runs["run"].to_numpy(),
            "sd": s,
            "ln_s": np.log(s),
            "sn_nominal_1": 10.0 * np.log10(mean**2 / s**2),
            "sn_nominal_2": -10.0 * np.log10(s**2),
        })
    for col in ("sd", "ln_s", "sn_nominal_1", "sn_nominal_2"):
        out.loc[~np.isfinite(out[col].to_numpy(dtype=float)), col] = math.nan
    return out


def _table(values: pd.Series, runs: pd.DataFrame, factors: Sequence[str],
           levels: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    k = max(len(levels[f]) for f in factors)
    index = [str(i + 1) for i in range(k)] + ["Delta", "Rank"]
    table = pd.DataFrame(index=pd.Index(index, name="Level"), columns=list(factors), dtype=object)
    deltas = {}
    for f in factors:
        means = []
        for i, lvl in enumerate(levels[f]):
            cell = values[runs[f].to_numpy() == lvl]
            m = float(cell.mean()) if len(cell) and cell.notna().all() else math.nan
            table.at[str(i + 1), f] = m
            means.append(m)
        delta = max(means) - min(means) if all(math.isfinite(m) for m in means) else math.nan
        table.at["Delta", f] = delta
        deltas[f] = delta
    finite = pd.Series({f: float(f"{d:.12g}") for f, d in deltas.items() if math.isfinite(d)}, dtype=float)
    ranks = finite.rank(ascending=False, method="min")
    for f in factors:
        table.at["Rank", f] = int(ranks[f]) if f in ranks.index else math.nan
    return table


def dispersion_tables(runs: pd.DataFrame, factors: Sequence[str], levels: Mapping[str, Sequence[str]]
                      ) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The four response tables (``DISPERSION_TABLES``) and the notes on undefined runs."""
    per_run = run_dispersion(runs)
    tables = {name: _table(per_run[col].reset_index(drop=True), runs.reset_index(drop=True), factors, levels)
              for name, col in _COLUMNS.items()}
    notes = []
    single = runs.loc[runs["n"] < 2, "run"].tolist()
    zero = runs.loc[(runs["n"] >= 2) & (runs["sd"] == 0), "run"].tolist()
    if single:
        notes.append(f"run(s) {', '.join(map(str, single))} have a single replicate, so no standard deviation: "
                     "their levels have no value in the sd, ln(s) and nominal S/N tables")
    if zero:
        notes.append(f"run(s) {', '.join(map(str, zero))} have identical replicates (s = 0): ln(s) and the "
                     "nominal S/N ratios are infinite there, so their levels are left blank in those tables")
    zero_mean = runs.loc[(runs["n"] >= 2) & (runs["mean"] == 0) & (runs["sd"] > 0), "run"].tolist()
    if zero_mean:
        notes.append(f"run(s) {', '.join(map(str, zero_mean))} have mean 0: nominal S/N type I is infinite "
                     "there, so their levels are left blank in that table")
    return tables, notes
