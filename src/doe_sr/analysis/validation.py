"""How a small orthogonal array fared against the truth: a larger set of the same study's runs.

Why: the standard criticism of Taguchi's method is that a saturated array assumes an
additive model it cannot test (its interactions are aliased with main effects) and
gives no noise estimate. ``doe-sr validate`` trains the full factorial (or a larger
array) at the study's own settings; this module, pure pandas/numpy/scipy, then says
what the array got right: whether its predicted optimum is the best observed
combination, the regret in the response's units, how well its additive model
predicts every combination, whether it ranked each factor's levels like the larger
set did (Kendall's tau), and which two-factor interactions it confounded, with their
rows of the larger set's ANOVA (main effects plus every estimable two-factor
interaction).

Input: the array's :class:`~doe_sr.analysis.taguchi.Analysis` (what the study's report
shows) and the larger set's results, one row per (combination, replicate) with the
factor levels as text and the response.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from doe_sr.analysis import anova as _anova
from doe_sr.analysis.formatting import number as fmt

if TYPE_CHECKING:
    from doe_sr.analysis.taguchi import Analysis

__all__ = ["Validation", "aliases", "compare_to_truth", "interaction_name"]


def interaction_name(a: str, b: str) -> str:
    return f"{a}×{b}"


@dataclass
class Validation:
    """The array checked against a larger set: every number ``doe-sr validate`` reports."""

    against: str
    response: str
    objective: str
    factors: list[str]
    n_combinations: int  # of the larger set
    n_observations: int  # its (combination, replicate) results
    array_runs: int
    array_optimum: dict[str, str]
    true_best: dict[str, str]
    true_best_value: float
    optimum_in_set: bool
    optimum_value: float | None  # observed mean at the array's optimum (None when not in the set)
    optimum_is_best: bool | None
    regret: float | None  # true best minus the observed response at the array's optimum (>= 0)
    optimum_rank: int | None  # 1 = best of the larger set
    rmse: float
    max_abs_error: float
    correlation: float
    combinations: pd.DataFrame  # factors, n, observed, predicted, error, in_array, rank
    rankings: pd.DataFrame  # factor, tau, p, array/full best level and order
    confounded: pd.DataFrame  # interaction, aliased_with, confounded_dof, ANOVA row of the larger set
    anova: pd.DataFrame  # the larger set's ANOVA (main effects + estimable two-factor interactions)
    notes: list[str] = field(default_factory=list)

    # -- reading ---------------------------------------------------------------------------
    @property
    def kendall_tau(self) -> dict[str, float | None]:
        return {r.factor: _clean(r.tau) for r in self.rankings.itertuples()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None): the keys ``doe-sr validate --format json`` prints."""
        return _clean({
            "against": self.against, "response": self.response, "objective": self.objective,
            "factors": self.factors, "n_combinations": self.n_combinations,
            "n_observations": self.n_observations, "array_runs": self.array_runs,
            "array_optimum": self.array_optimum, "true_best": self.true_best,
            "true_best_value": self.true_best_value, "optimum_in_set": self.optimum_in_set,
            "optimum_value": self.optimum_value, "optimum_is_best": self.optimum_is_best,
            "regret": self.regret, "optimum_rank": self.optimum_rank,
            "prediction": {"rmse": self.rmse, "max_abs_error": self.max_abs_error,
                           "correlation": self.correlation},
            "kendall_tau": self.kendall_tau,
            "rankings": self.rankings.to_dict(orient="records"),
            "confounded": self.confounded.to_dict(orient="records"),
            "anova": self.anova.to_dict(orient="records"),
            "combinations": self.combinations.to_dict(orient="records"),
            "notes": self.notes,
        })

    def verdict(self) -> str:
        """One sentence: did the array find the best combination, and at what cost."""
        where = ", ".join(f"{f}={v}" for f, v in self.array_optimum.items())
        if not self.optimum_in_set:
            return (f"The array's optimum ({where}) is not a combination of the {self.against} set, so its "
                    "regret cannot be measured there.")
        if self.optimum_is_best:
            return f"The array's optimum ({where}) is the best of the {self.n_combinations} combinations."
        return (f"The array's optimum ({where}) is number {self.optimum_rank} of {self.n_combinations}; "
                f"the best combination ({', '.join(f'{f}={v}' for f, v in self.true_best.items())}) is "
                f"{fmt(self.regret)} {self.response} better (the regret).")

    def to_text(self) -> str:
        lines = [f"Validation of the array against {self.against} ({self.n_combinations} combinations, "
                 f"{self.n_observations} runs), response {self.response} ({self.objective} is better)",
                 self.verdict(),
                 f"  true best: {_levels(self.true_best)} = {fmt(self.true_best_value)}",
                 f"  array optimum: {_levels(self.array_optimum)} = "
                 + (fmt(self.optimum_value) if self.optimum_value is not None else "not in the set"),
                 f"  regret: {fmt(self.regret) if self.regret is not None else 'n/a'}",
                 f"  additive model over every combination: RMSE {fmt(self.rmse)}, max |error| "
                 f"{fmt(self.max_abs_error)}, correlation {fmt(self.correlation)}",
                 "  level rankings (Kendall's tau, array vs full): "
                 + ", ".join(f"{f} {fmt(t) if t is not None else 'n/a'}" for f, t in self.kendall_tau.items())]
        if len(self.confounded):
            lines.append("  interactions the array confounds (ANOVA of the larger set):")
            for r in self.confounded.itertuples():
                lines.append(f"    {r.interaction} (aliased with {r.aliased_with}): {fmt(r.contribution_pct)} % of "
                             f"the variance, F {fmt(r.f)}, p {fmt(r.p)}")
        else:
            lines.append("  the array confounds no two-factor interaction with its main effects")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def summary_table(self) -> pd.DataFrame:
        rows = [("against", self.against), ("combinations", self.n_combinations),
                ("observations", self.n_observations), ("array runs", self.array_runs),
                ("array optimum", _levels(self.array_optimum)), ("true best", _levels(self.true_best)),
                ("true best value", self.true_best_value),
                ("observed at the array optimum", self.optimum_value if self.optimum_in_set else "not in the set"),
                ("optimum is the best", self.optimum_is_best), ("regret", self.regret),
                ("rank of the array optimum", self.optimum_rank), ("prediction RMSE", self.rmse),
                ("prediction max abs error", self.max_abs_error), ("prediction correlation", self.correlation)]
        return pd.DataFrame(rows, columns=["quantity", "value"]).astype({"value": object})

    def tables(self) -> dict[str, pd.DataFrame]:
        """The report's tables by file name."""
        return {"validation_summary": self.summary_table(), "validation_combinations": self.combinations,
                "validation_rankings": self.rankings, "validation_confounded": self.confounded,
                "validation_anova": self.anova}


def _levels(levels: Mapping[str, str]) -> str:
    return ", ".join(f"{f}={v}" for f, v in levels.items())


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


# -- the aliasing of an array ---------------------------------------------------------------
def _codes(frame: pd.DataFrame, factors: Sequence[str], levels: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    return {f: frame[f].map({lvl: i for i, lvl in enumerate(levels[f])}).to_numpy(dtype=int) for f in factors}


def _rank(blocks: Sequence[np.ndarray], n: int) -> int:
    return int(np.linalg.matrix_rank(np.column_stack([np.ones(n), *blocks])))


def aliases(design: pd.DataFrame, factors: Sequence[str], levels: Mapping[str, Sequence[str]]
            ) -> list[tuple[str, str, list[str], int]]:
    """The two-factor interactions ``design`` (one row per run) confounds with its main effects.

    Derived, not looked up: an interaction A×B is confounded when its columns (products
    of A's and B's dummies) add fewer degrees of freedom to the main-effects model than
    its (k_A - 1)(k_B - 1); the confounded dof are the shortfall. It is aliased with the
    main effect C when leaving C out of the model lets A×B gain back dof. Returns
    ``(a, b, aliased_with, confounded_dof)`` for each confounded pair.
    """
    n = len(design)
    codes = _codes(design, factors, levels)
    mains = {f: _anova.dummies(codes[f], len(levels[f])) for f in factors}
    out = []
    for a, b in itertools.combinations(factors, 2):
        inter = _anova.interaction_columns(mains[a], mains[b])
        nominal = inter.shape[1]
        base = _rank(list(mains.values()), n)
        gained = _rank([*mains.values(), inter], n) - base
        if gained >= nominal:
            continue
        aliased = []
        for c in factors:
            if c in (a, b):
                continue
            others = [m for f, m in mains.items() if f != c]
            if _rank([*others, inter], n) - _rank(others, n) > gained:
                aliased.append(c)
        out.append((a, b, aliased, nominal - gained))
    return out


# -- the larger set's ANOVA -------------------------------------------------------------------
def full_anova(observations: pd.DataFrame, factors: Sequence[str], levels: Mapping[str, Sequence[str]],
               response: str) -> tuple[pd.DataFrame, list[str]]:
    """ANOVA of every observation of the larger set: main effects plus each two-factor
    interaction it can estimate in full (Type II sums of squares, see
    :mod:`doe_sr.analysis.anova`); the notes name the interactions left out."""
    n = len(observations)
    codes = _codes(observations, factors, levels)
    mains = {f: _anova.dummies(codes[f], len(levels[f])) for f in factors}
    terms = [_anova.Term(f, frozenset([f]), mains[f]) for f in factors]
    notes = []
    blocks = list(mains.values())
    for a, b in itertools.combinations(factors, 2):
        inter = _anova.interaction_columns(mains[a], mains[b])
        if _rank([*blocks, inter], n) - _rank(blocks, n) < inter.shape[1]:
            notes.append(f"the {len(observations)} observations cannot estimate {interaction_name(a, b)} in full; "
                         "it is left in the error")
            continue
        blocks.append(inter)
        terms.append(_anova.Term(interaction_name(a, b), frozenset([a, b]), inter))
    y = observations[response].to_numpy(dtype=float)
    raw = _anova.sums_of_squares(y, terms)
    if raw.error_dof == 0:
        notes.append("the larger set's ANOVA has no error degrees of freedom (one replicate and every "
                     "interaction estimated): F and p are blank")
    return _anova.anova_table(raw, []), notes


# -- the comparison -------------------------------------------------------------------------
def _better(objective: str) -> int:
    """+1 when larger is better, -1 when smaller is (nominal: the mean's S/N decides, larger is better)."""
    return -1 if objective == "smaller" else 1


def compare_to_truth(analysis: Analysis, results: pd.DataFrame, *, against: str = "full") -> Validation:
    """The array (``analysis``) against the larger set's ``results`` (one row per combination and
    replicate: the factor columns as text and ``analysis.response``).

    The true best is the combination with the best observed mean (by the objective;
    for nominal-the-best, the highest S/N of its replicates); the additive model is the
    array's main-effects model of the mean (grand mean plus each level's deviation),
    evaluated at every combination.
    """
    from scipy import stats

    from doe_sr.core.objectives import sn_ratio

    factors, levels, response, objective = list(analysis.factors), analysis.levels, analysis.response, analysis.objective
    notes: list[str] = []
    obs = results[[*factors, response]].copy()
    for f in factors:
        obs[f] = obs[f].astype(str)
        unknown = sorted(set(obs[f]) - set(levels[f]))
        if unknown:
            raise ValueError(f"results: factor {f} has levels {unknown} the array's analysis does not know")
    obs = obs[np.isfinite(obs[response].astype(float))]
    grouped = obs.groupby(factors, sort=False)[response]
    combos = grouped.agg(n="count", observed="mean").reset_index()
    if objective == "nominal":
        combos["score"] = [sn_ratio(list(v), objective) for _, v in grouped]
    else:
        combos["score"] = combos["observed"] * _better(objective)

    # the array's additive model of the mean
    means = analysis.level_values("mean")
    grand = analysis.grand_mean
    combos["predicted"] = grand + sum(combos[f].map(means[f]) - grand for f in factors)
    combos["error"] = combos["predicted"] - combos["observed"]
    array_rows = {tuple(str(r[f]) for f in factors) for _, r in analysis.runs.iterrows()}
    combos["in_array"] = [tuple(r) in array_rows for r in combos[factors].itertuples(index=False)]
    combos["rank"] = combos["score"].rank(ascending=False, method="min").astype(int)
    combos = combos.sort_values(["rank", *factors]).reset_index(drop=True)

    best = combos.iloc[0]
    true_best = {f: str(best[f]) for f in factors}
    optimum = {f: str(v) for f, v in analysis.optimum.items()}
    hit = combos[np.logical_and.reduce([combos[f] == optimum[f] for f in factors])]
    in_set = len(hit) > 0
    value = float(hit["observed"].iloc[0]) if in_set else None
    rank = int(hit["rank"].iloc[0]) if in_set else None
    regret = None
    if in_set:
        regret = (float(best["observed"]) - value) * (_better(objective) if objective != "nominal" else 1)
        if objective == "nominal":
            regret = abs(float(best["observed"]) - value)
            notes.append("nominal-the-best: the regret is the distance between the observed means of the best "
                         "combination (by S/N) and the array's optimum")
    else:
        notes.append(f"the array's optimum ({_levels(optimum)}) is not a combination of the {against} set; "
                     "train it with `doe-sr confirm` to measure it")
    if int(combos["n"].nunique()) > 1:
        notes.append("combinations have unequal numbers of replicates; each is judged by its mean")

    err = combos["error"].to_numpy(dtype=float)
    rmse = float(np.sqrt(np.mean(err ** 2)))
    corr = (float(np.corrcoef(combos["predicted"], combos["observed"])[0, 1])
            if combos["observed"].std() > 0 and combos["predicted"].std() > 0 else math.nan)

    rank_rows = []
    for f in factors:
        full_means = obs.groupby(f)[response].mean()
        arr = [means[f][lvl] for lvl in levels[f]]
        tru = [float(full_means.get(lvl, math.nan)) for lvl in levels[f]]
        tau, p = stats.kendalltau(arr, tru) if len(levels[f]) > 1 else (math.nan, math.nan)
        order = sorted(levels[f], key=lambda lvl: -_better(objective) * means[f][lvl])
        torder = sorted(levels[f], key=lambda lvl: -_better(objective) * float(full_means.get(lvl, math.nan)))
        rank_rows.append({"factor": f, "tau": float(tau), "p": float(p), "array_best": order[0],
                          "full_best": torder[0], "same_best": order[0] == torder[0],
                          "array_order": " > ".join(order), "full_order": " > ".join(torder)})
    rankings = pd.DataFrame(rank_rows)

    anova, anova_notes = full_anova(obs, factors, levels, response)
    notes += anova_notes
    design = analysis.runs[factors].astype(str)
    rows = []
    for a, b, aliased, dof in aliases(design, factors, levels):
        name = interaction_name(a, b)
        row = anova[anova["source"] == name]
        rec = {"interaction": name, "aliased_with": ", ".join(aliased) or "(partially, several)",
               "confounded_dof": dof}
        if len(row):
            rec.update({k: row.iloc[0][k] for k in ("dof", "ss", "ms", "f", "p", "contribution_pct")})
        else:
            rec.update({k: math.nan for k in ("dof", "ss", "ms", "f", "p", "contribution_pct")})
        rows.append(rec)
    confounded = pd.DataFrame(rows, columns=["interaction", "aliased_with", "confounded_dof", "dof", "ss", "ms",
                                             "f", "p", "contribution_pct"])
    combos = combos.drop(columns=["score"])
    return Validation(
        against=against, response=response, objective=objective, factors=factors,
        n_combinations=len(combos), n_observations=len(obs), array_runs=len(analysis.runs),
        array_optimum=optimum, true_best=true_best, true_best_value=float(best["observed"]),
        optimum_in_set=in_set, optimum_value=value, optimum_is_best=(rank == 1) if in_set else None,
        regret=regret, optimum_rank=rank, rmse=rmse, max_abs_error=float(np.max(np.abs(err))),
        correlation=corr, combinations=combos, rankings=rankings, confounded=confounded, anova=anova,
        notes=notes)
