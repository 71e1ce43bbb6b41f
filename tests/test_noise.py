"""The error estimate, significance, dispersion tables, level intervals and residuals.

Every number is checked against an independent computation: the dispersion tables by
hand (``statistics.stdev`` per run, level means written out), the p-values, intervals
and residuals against statsmodels' OLS on the same data (``y ~ C(a) + C(b) + ...``).
Synthetic data only, so the file runs in seconds.
"""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest
from pyDOE3 import get_orthogonal_array

from doe_sr.analysis.taguchi import analyze

L9_LEVELS = {"lr": ["0.001", "0.01", "0.1"], "opt": ["adam", "sgd", "rmsprop"],
             "act": ["elu", "relu", "tanh"], "filters": ["16", "32", "64"]}
FACTORS = list(L9_LEVELS)


def l9_results(reps: int, *, effect: float, noise: float, seed: int) -> pd.DataFrame:
    """L9(3^4) results: ``y = 25 + effect * (lr level code) + N(0, noise)``."""
    array = get_orthogonal_array("L9(3^4)")
    rng = np.random.default_rng(seed)
    rows = []
    for i, row in enumerate(array):
        for rep in range(reps):
            rows.append({"run": i + 1, "replicate": rep + 1,
                         **{f: L9_LEVELS[f][row[j]] for j, f in enumerate(FACTORS)},
                         "y": 25 + effect * row[0] + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def ols(results: pd.DataFrame, factors=FACTORS):
    import statsmodels.formula.api as smf

    return smf.ols("y ~ " + " + ".join(f"C({f}, Sum)" for f in factors), data=results).fit()


# --- noise source ------------------------------------------------------------------


def test_replicates_give_pure_error_and_statsmodels_p_values():
    import statsmodels.api as sm

    results = l9_results(2, effect=1.0, noise=0.3, seed=1)
    an = analyze(results, FACTORS, "y", levels=L9_LEVELS)
    fit = ols(results)
    assert an.noise.source == "replicates" and an.noise.scale == "raw" and an.noise.table == "anova_raw"
    assert an.noise.dof == int(fit.df_resid) == 9
    assert an.noise.ms == pytest.approx(fit.mse_resid, rel=1e-10)
    assert "9 dof from 2 replicates of each of the 9 runs (pure error" in an.noise.statement
    table = sm.stats.anova_lm(fit, typ=2)
    for f in FACTORS:
        assert an.p_values[f] == pytest.approx(table.loc[f"C({f}, Sum)", "PR(>F)"], rel=1e-8)
        assert an.significant[f] == (table.loc[f"C({f}, Sum)", "PR(>F)"] < 0.05)


def test_planted_effect_is_significant_and_pure_noise_is_not():
    planted = analyze(l9_results(3, effect=1.0, noise=0.1, seed=2), FACTORS, "y", levels=L9_LEVELS)
    assert planted.significant["lr"] is True and planted.p_values["lr"] < 1e-6
    noise = analyze(l9_results(3, effect=0.0, noise=0.1, seed=2), FACTORS, "y", levels=L9_LEVELS)
    assert all(v is False for v in noise.significant.values())
    assert all(p > 0.05 for p in noise.p_values.values())


def test_saturated_unreplicated_has_no_estimate_and_says_how_to_get_one():
    an = analyze(l9_results(1, effect=1.0, noise=0.1, seed=3), FACTORS, "y", levels=L9_LEVELS)
    assert an.noise.source == "none" and an.noise.dof == 0 and math.isnan(an.noise.ms)
    assert "no effect can be called significant" in an.noise.statement
    assert "`replicates: 2`" in an.noise.statement and "--pool" in an.noise.statement
    assert an.p_values == {f: None for f in FACTORS} and an.significant == {f: None for f in FACTORS}
    assert an.level_intervals("mean") is None and an.level_intervals("sn") is None
    assert an.residuals is None and an.dispersion == {}
    assert "sd_response" not in an.tables()
    out = json.loads(json.dumps(an.to_dict(), allow_nan=False))
    assert out["noise"]["source"] == "none" and out["noise"]["ms"] is None
    assert out["significant"] == {f: None for f in FACTORS}


def test_pooling_is_named_optimistic_and_judged_on_sn():
    an = analyze(l9_results(1, effect=1.0, noise=0.1, seed=4), FACTORS, "y", levels=L9_LEVELS, pool="auto")
    assert an.noise.source == "pooled" and an.noise.scale == "sn"
    assert set(an.noise.pooled) == set(an.pooled) and len(an.pooled) == 2
    assert "optimistic" in an.noise.statement and all(f in an.noise.statement for f in an.pooled)
    error = an.anova[an.anova["source"] == "Error"].iloc[0]
    assert an.noise.dof == error["dof"] == 4 and an.noise.ms == pytest.approx(error["ms"])
    for f in an.pooled:
        assert an.p_values[f] is None and an.significant[f] is False
    lr_p = float(an.anova.loc[an.anova["source"] == "lr", "p"].iloc[0])
    assert an.p_values["lr"] == pytest.approx(lr_p) and an.significant["lr"] is True


def test_free_array_columns_are_a_residual_estimate():
    results = l9_results(1, effect=1.0, noise=0.1, seed=5).drop(columns="filters")
    an = analyze(results, FACTORS[:3], "y", levels={f: L9_LEVELS[f] for f in FACTORS[:3]})
    assert an.noise.source == "residual" and an.noise.dof == 2 and an.noise.scale == "sn"
    assert all(isinstance(v, bool) for v in an.significant.values())


def test_identical_replicates_give_zero_ms_without_crashing():
    results = l9_results(2, effect=1.0, noise=0.0, seed=6)
    results["y"] = results.groupby("run")["y"].transform("first")
    results.loc[results["run"] == 1, "y"] += [0.0, 0.0]  # explicit: every run has s = 0
    an = analyze(results, FACTORS, "y", levels=L9_LEVELS)
    assert an.noise.source == "replicates" and not an.noise.usable
    assert an.significant == {f: None for f in FACTORS}
    assert an.level_intervals("mean") is None
    assert "F and p are undefined" in an.noise.statement
    # ln(s) and the nominal S/N are infinite in every run: blank cells, a note naming the runs.
    ln_s = an.tables()["ln_s_response"]
    assert ln_s.loc[["1", "2", "3", "Delta"]].isna().all().all()
    assert any("identical replicates (s = 0)" in n and "1, 2, 3" in n for n in an.notes)


# --- dispersion tables, by hand ------------------------------------------------------


L4 = [(0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)]
L4_LEVELS = {"a": ["a1", "a2"], "b": ["b1", "b2"], "c": ["c1", "c2"]}
L4_Y = {1: [10.0, 12.0], 2: [20.0, 21.0], 3: [15.0, 19.0], 4: [30.0, 30.5]}


def l4_results(y=L4_Y) -> pd.DataFrame:
    rows = []
    for run, codes in enumerate(L4, start=1):
        for value in y[run]:
            rows.append({"run": run, **{f: L4_LEVELS[f][c] for f, c in zip(L4_LEVELS, codes)}, "y": value})
    return pd.DataFrame(rows)


def test_sd_ln_s_and_nominal_tables_by_hand():
    an = analyze(l4_results(), list(L4_LEVELS), "y", levels=L4_LEVELS)
    s = {r: statistics.stdev(v) for r, v in L4_Y.items()}
    ybar = {r: statistics.fmean(v) for r, v in L4_Y.items()}
    per_run = {
        "sd_response": s,
        "ln_s_response": {r: math.log(s[r]) for r in s},
        "sn_nominal_1_response": {r: 10 * math.log10(ybar[r] ** 2 / s[r] ** 2) for r in s},
        "sn_nominal_2_response": {r: -10 * math.log10(s[r] ** 2) for r in s},
    }
    # Runs at each level, read off the L4 rows: a1 = runs 1, 2; a2 = 3, 4; b1 = 1, 3; ...
    runs_at = {("a", "1"): (1, 2), ("a", "2"): (3, 4), ("b", "1"): (1, 3), ("b", "2"): (2, 4),
               ("c", "1"): (1, 4), ("c", "2"): (2, 3)}
    tables = an.tables()
    for name, values in per_run.items():
        table = tables[name]
        assert list(table.index) == ["1", "2", "Delta", "Rank"]
        deltas = {}
        for (f, lvl), (r1, r2) in runs_at.items():
            assert table.at[lvl, f] == pytest.approx((values[r1] + values[r2]) / 2, rel=1e-12)
        for f in L4_LEVELS:
            deltas[f] = abs(table.at["1", f] - table.at["2", f])
            assert table.at["Delta", f] == pytest.approx(deltas[f], rel=1e-12)
        order = sorted(deltas, key=deltas.get, reverse=True)
        assert [table.at["Rank", f] for f in order] == [1, 2, 3]
    # Type I is the study's nominal S/N: the same number as objective "nominal".
    nominal = analyze(l4_results(), list(L4_LEVELS), "y", "nominal", levels=L4_LEVELS)
    assert nominal.sn_response.loc[["1", "2"]].astype(float).to_numpy() == pytest.approx(
        tables["sn_nominal_1_response"].loc[["1", "2"]].astype(float).to_numpy())


def test_a_run_with_zero_scatter_blanks_only_its_levels():
    y = dict(L4_Y)
    y[1] = [10.0, 10.0]  # s = 0: ln(s) = -inf, type I and II = +inf
    an = analyze(l4_results(y), list(L4_LEVELS), "y", levels=L4_LEVELS)
    ln_s, sd = an.tables()["ln_s_response"], an.tables()["sd_response"]
    assert sd.at["1", "a"] == pytest.approx(statistics.stdev(y[2]) / 2)  # s = 0 is a fine sd
    for f in L4_LEVELS:  # run 1 holds level 1 of every factor
        assert math.isnan(ln_s.at["1", f]) and math.isnan(ln_s.at["Delta", f]) and math.isnan(ln_s.at["Rank", f])
        assert math.isfinite(ln_s.at["2", f])
    assert any("run(s) 1 have identical replicates" in n for n in an.notes)
    assert an.to_text()  # prints with blanks, no crash
    json.dumps(an.to_dict(), allow_nan=False)


# --- intervals and residuals against statsmodels ---------------------------------------


def level_ci_statsmodels(fit, factor: str, levels: list[str], level: str) -> tuple[float, float]:
    """Marginal mean of a level from the sum-coded OLS: intercept + effect (last level:
    intercept - sum of the others), with its t interval. Patsy orders levels as sorted text."""
    levels = sorted(levels)
    names = list(fit.params.index)
    vector = np.zeros(len(names))
    vector[names.index("Intercept")] = 1.0
    cols = [f"C({factor}, Sum)[S.{lvl}]" for lvl in levels[:-1]]
    if level == levels[-1]:
        for c in cols:
            vector[names.index(c)] = -1.0
    else:
        vector[names.index(f"C({factor}, Sum)[S.{level}]")] = 1.0
    lo, hi = np.asarray(fit.t_test(vector).conf_int(alpha=0.05))[0]
    return float(lo), float(hi)


def test_level_intervals_match_statsmodels():
    results = l9_results(2, effect=0.5, noise=0.3, seed=7)
    an = analyze(results, FACTORS, "y", levels=L9_LEVELS)
    fit = ols(results)
    intervals = an.level_intervals("mean")
    for f in FACTORS:
        for lvl in L9_LEVELS[f]:
            assert intervals[f][lvl] == pytest.approx(level_ci_statsmodels(fit, f, L9_LEVELS[f], lvl), rel=1e-9)
    assert an.level_intervals("sn") is None  # one S/N per run, nothing pooled: no S/N error


def test_sn_level_intervals_with_pooling_by_hand():
    from scipy import stats

    an = analyze(l9_results(1, effect=0.5, noise=0.3, seed=8), FACTORS, "y", levels=L9_LEVELS, pool="auto")
    error = an.anova[an.anova["source"] == "Error"].iloc[0]
    half = stats.t.ppf(0.975, error["dof"]) * math.sqrt(error["ms"] / 3)  # 3 runs per level
    sn = an.level_values("sn")
    intervals = an.level_intervals("sn")
    for f in FACTORS:
        for lvl in L9_LEVELS[f]:
            assert intervals[f][lvl] == pytest.approx((sn[f][lvl] - half, sn[f][lvl] + half))


def test_residuals_match_statsmodels():
    results = l9_results(3, effect=0.5, noise=0.3, seed=9).sample(frac=1.0, random_state=1)
    an = analyze(results, FACTORS, "y", levels=L9_LEVELS)
    table = an.residuals
    ordered = results.sort_values("run", kind="stable").reset_index(drop=True)
    fit = ols(ordered)
    assert list(table["order"]) == list(range(1, 28)) and list(table["run"]) == list(ordered["run"])
    assert table["observed"].to_numpy() == pytest.approx(ordered["y"].to_numpy())
    assert table["fitted"].to_numpy() == pytest.approx(fit.fittedvalues.to_numpy(), abs=1e-9)
    assert table["residual"].to_numpy() == pytest.approx(fit.resid.to_numpy(), abs=1e-9)
    assert table["standardized"].to_numpy() == pytest.approx(
        fit.get_influence().resid_studentized_internal, rel=1e-8)


def test_residuals_leave_pooled_factors_out_of_the_model():
    results = l9_results(2, effect=0.5, noise=0.3, seed=10)
    an = analyze(results, FACTORS, "y", levels=L9_LEVELS, pool=["filters"])
    fit = ols(results, [f for f in FACTORS if f != "filters"])
    assert an.residuals["residual"].to_numpy() == pytest.approx(fit.resid.to_numpy(), abs=1e-9)
    assert an.noise.dof == int(fit.df_resid) and "pooled filters" in an.noise.statement
