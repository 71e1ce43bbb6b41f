"""Taguchi analysis checked against hand computations and statsmodels' OLS ANOVA."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from hypothesis import given, settings
from hypothesis import strategies as st
from pyDOE3 import get_orthogonal_array
from scipy import stats
from statsmodels.stats.anova import anova_lm

from doe_sr.analysis.confirmation import judge_confirmation
from doe_sr.analysis.taguchi import analyze
from doe_sr.core.errors import UserError
from doe_sr.core.objectives import sn_ratio

L9_LEVELS = {
    "lr": ["0.001", "0.01", "0.1"],
    "opt": ["adam", "sgd", "rmsprop"],
    "filters": ["16", "32", "64"],
    "act": ["relu", "elu", "tanh"],
}


def l9_design() -> pd.DataFrame:
    array = get_orthogonal_array("L9(3^4)")
    rows = [{"run": i + 1, **{f: L9_LEVELS[f][row[j]] for j, f in enumerate(L9_LEVELS)}}
            for i, row in enumerate(array)]
    return pd.DataFrame(rows)


def replicate(design: pd.DataFrame, values: np.ndarray, response: str = "y") -> pd.DataFrame:
    """One row per (run, replicate); values has shape (runs, replicates)."""
    rows = []
    for i, run in enumerate(design.to_dict(orient="records")):
        for r, v in enumerate(values[i]):
            rows.append({**run, "replicate": r + 1, response: float(v)})
    return pd.DataFrame(rows)


def l18_design() -> pd.DataFrame:
    """L18 2^1 3^7 from pyDOE3's L18 6^1 3^6: the 6-level column splits into a
    2-level and a 3-level column (its 6 levels are their 6 combinations)."""
    array = get_orthogonal_array("L18(6^1 3^6)")
    cols = {"x1": array[:, 0] // 3, "x2": array[:, 0] % 3}
    for j in range(5):
        cols[f"x{j + 3}"] = array[:, j + 1]
    design = pd.DataFrame({k: [f"{k}_{v}" for v in vals] for k, vals in cols.items()})
    design.insert(0, "run", range(1, 19))
    return design


def ols_anova(frame: pd.DataFrame, response: str, terms: list[str], typ: int) -> pd.DataFrame:
    formula = f"{response} ~ " + " + ".join(terms)
    return anova_lm(smf.ols(formula, data=frame).fit(), typ=typ)


def rows_by_source(table: pd.DataFrame) -> dict[str, pd.Series]:
    return {row["source"]: row for _, row in table.iterrows()}


# --- S/N ratios ----------------------------------------------------------------------


def test_sn_ratios_match_hand_computation():
    # larger: mean(1/y^2) of [10, 20] = (0.01 + 0.0025) / 2 = 0.00625
    assert sn_ratio([10, 20], "larger") == pytest.approx(-10 * math.log10(0.00625))
    assert sn_ratio([10, 20], "larger") == pytest.approx(22.0412, abs=1e-4)
    # smaller: mean(y^2) of [1, 2, 3] = 14/3
    assert sn_ratio([1, 2, 3], "smaller") == pytest.approx(-6.6901, abs=1e-4)
    # nominal: mean 10, sample variance 2 -> 10 log10(50)
    assert sn_ratio([9, 11], "nominal") == pytest.approx(16.9897, abs=1e-4)
    # one replicate is fine for larger/smaller: 20 log10(y) and -20 log10(y)
    assert sn_ratio([10], "larger") == pytest.approx(20.0)
    assert sn_ratio([10], "smaller") == pytest.approx(-20.0)


@pytest.mark.parametrize(
    ("values", "objective", "fragment"),
    [
        ([5.0], "nominal", "at least 2 replicates"),
        ([0.0, 3.0], "larger", "positive"),
        ([0.0, 0.0], "smaller", "infinite"),
        ([4.0, 4.0], "nominal", "infinite"),
        ([], "larger", "no responses"),
        ([1.0, float("nan")], "larger", "finite"),
        ([1.0], "biggest", "objective"),
    ],
)
def test_sn_ratio_refuses_undefined_cases(values, objective, fragment):
    with pytest.raises(UserError, match=fragment):
        sn_ratio(values, objective)


def test_nominal_with_one_replicate_is_refused_naming_the_run():
    results = replicate(l9_design(), np.full((9, 1), 5.0))
    with pytest.raises(UserError, match=r"run 1: nominal-the-best S/N needs at least 2 replicates"):
        analyze(results, list(L9_LEVELS), "y", "nominal", levels=L9_LEVELS)


# --- response tables and ANOVA worked by hand ----------------------------------------


def l4_results() -> pd.DataFrame:
    # L4: (1,1,1) (1,2,2) (2,1,2) (2,2,1); y = 10^k makes S/N = 20k dB exactly.
    return pd.DataFrame(
        {
            "run": [1, 2, 3, 4],
            "A": ["a1", "a1", "a2", "a2"],
            "B": ["b1", "b2", "b1", "b2"],
            "C": ["c1", "c2", "c2", "c1"],
            "y": [10.0, 100.0, 1000.0, 10000.0],
        }
    )


def test_response_tables_match_hand_worked_l4():
    an = analyze(l4_results(), ["A", "B", "C"], "y", "larger")
    # S/N = 20, 40, 60, 80. A: (20+40)/2=30, (60+80)/2=70; B: 40, 60; C: 50, 50.
    sn = an.sn_response
    assert list(sn.index) == ["1", "2", "Delta", "Rank"]
    assert list(sn.columns) == ["A", "B", "C"]
    expected = {"A": [30, 70, 40, 1], "B": [40, 60, 20, 2], "C": [50, 50, 0, 3]}
    for f, column in expected.items():
        assert [float(v) for v in sn[f]] == pytest.approx(column)
    assert an.to_dict()["sn_response"]["A"] == pytest.approx({"a1": 30.0, "a2": 70.0})
    # Means: A (10+100)/2=55, (1000+10000)/2=5500; B 505, 5050; C 5005, 550.
    means = an.to_dict()["mean_response"]
    assert means["A"] == pytest.approx({"a1": 55.0, "a2": 5500.0})
    assert means["B"] == pytest.approx({"b1": 505.0, "b2": 5050.0})
    assert means["C"] == pytest.approx({"c1": 5005.0, "c2": 550.0})
    assert an.delta_mean == pytest.approx({"A": 5445.0, "B": 4545.0, "C": 4455.0})
    assert an.rank == {"A": 1, "B": 2, "C": 3}
    # ANOVA: grand 50; SS_A = 4 * 20^2, SS_B = 4 * 10^2, SS_C = 0, total 2000, no error dof.
    rows = rows_by_source(an.anova)
    assert rows["A"]["ss"] == pytest.approx(1600.0)
    assert rows["B"]["ss"] == pytest.approx(400.0)
    assert rows["C"]["ss"] == pytest.approx(0.0, abs=1e-9)
    assert rows["Total"]["ss"] == pytest.approx(2000.0)
    assert rows["A"]["contribution_pct"] == pytest.approx(80.0)
    assert rows["Error"]["dof"] == 0 and math.isnan(rows["A"]["f"]) and math.isnan(rows["A"]["p"])
    assert any("no error degrees of freedom" in n for n in an.notes)
    assert an.optimum == {"A": "a2", "B": "b2", "C": "c1"}
    assert an.optimum_mean == {"A": "a2", "B": "b2", "C": "c1"}
    # additive prediction: 50 + (70-50) + (60-50) + (50-50)
    assert an.predicted.sn == pytest.approx(80.0)
    assert an.predicted.ci95 is None and an.predicted.sn_ci95 is None


def test_smaller_the_better_prefers_low_means():
    an = analyze(l4_results(), ["A", "B", "C"], "y", "smaller")
    # C ties on S/N (-50 dB for both levels) but not on means (5005 vs 550).
    assert an.optimum == {"A": "a1", "B": "b1", "C": "c1"}
    assert any("levels c1, c2 of 'C' tie on S/N" in n for n in an.notes)
    assert an.optimum_mean == {"A": "a1", "B": "b1", "C": "c2"}


# --- cross-checks against statsmodels ------------------------------------------------


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # saturated OLS fit
def test_replicated_l9_anova_matches_statsmodels():
    rng = np.random.default_rng(7)
    design = l9_design()
    values = rng.uniform(20, 30, size=(9, 3))
    results = replicate(design, values)
    an = analyze(results, list(L9_LEVELS), "y", "larger", levels=L9_LEVELS)
    mine = rows_by_source(an.anova_raw)
    for typ in (1, 2):
        ref = ols_anova(results, "y", [f"C({f})" for f in L9_LEVELS], typ)
        for f in L9_LEVELS:
            row = ref.loc[f"C({f})"]
            assert mine[f]["ss"] == pytest.approx(row["sum_sq"], rel=1e-9)
            assert mine[f]["dof"] == row["df"]
            assert mine[f]["f"] == pytest.approx(row["F"], rel=1e-9)
            assert mine[f]["p"] == pytest.approx(row["PR(>F)"], rel=1e-7)
        assert mine["Error"]["ss"] == pytest.approx(ref.loc["Residual", "sum_sq"], rel=1e-9)
        assert mine["Error"]["dof"] == ref.loc["Residual", "df"] == 18
    # S/N ANOVA is saturated; its SS still equal an OLS fit of the run S/N values.
    runs = an.runs
    assert runs["sn"].tolist() == pytest.approx([sn_ratio(v, "larger") for v in values])
    ref = ols_anova(runs, "sn", [f"C({f})" for f in L9_LEVELS], 1)
    for f in L9_LEVELS:
        assert rows_by_source(an.anova)[f]["ss"] == pytest.approx(ref.loc[f"C({f})", "sum_sq"])


def test_pooled_sn_anova_matches_statsmodels_without_pooled_factors():
    rng = np.random.default_rng(3)
    results = replicate(l9_design(), rng.uniform(0.5, 2.0, size=(9, 2)))
    an = analyze(results, list(L9_LEVELS), "y", "smaller", levels=L9_LEVELS, pool=["filters", "act"])
    assert an.pooled == ["filters", "act"]
    ref = ols_anova(an.runs, "sn", ["C(lr)", "C(opt)"], 2)
    rows = rows_by_source(an.anova)
    for f in ("lr", "opt"):
        assert rows[f]["f"] == pytest.approx(ref.loc[f"C({f})", "F"], rel=1e-9)
        assert rows[f]["p"] == pytest.approx(ref.loc[f"C({f})", "PR(>F)"], rel=1e-7)
    assert rows["Error"]["ss"] == pytest.approx(ref.loc["Residual", "sum_sq"], rel=1e-9)
    assert rows["Error"]["dof"] == 4
    assert rows["filters"]["pooled"] and math.isnan(rows["filters"]["f"])
    assert math.isnan(rows["filters"]["contribution_pct"])


def test_mixed_level_l18_matches_statsmodels():
    rng = np.random.default_rng(11)
    design = l18_design()
    factors = [c for c in design.columns if c != "run"]
    results = replicate(design, rng.uniform(10, 40, size=(18, 2)))
    an = analyze(results, factors, "y", "larger")
    assert an.warnings == []  # the derived L18 is balanced and orthogonal
    ref = ols_anova(results, "y", [f"C({f})" for f in factors], 2)
    mine = rows_by_source(an.anova_raw)
    for f in factors:
        assert mine[f]["dof"] == (1 if f == "x1" else 2)
        assert mine[f]["ss"] == pytest.approx(ref.loc[f"C({f})", "sum_sq"], rel=1e-9)
        assert mine[f]["p"] == pytest.approx(ref.loc[f"C({f})", "PR(>F)"], rel=1e-7)
    assert mine["Error"]["dof"] == ref.loc["Residual", "df"] == 36 - 1 - 13
    # The S/N ANOVA of an L18 with these 7 factors keeps 17 - 13 = 4 error dof.
    ref_sn = ols_anova(an.runs, "sn", [f"C({f})" for f in factors], 2)
    rows = rows_by_source(an.anova)
    assert rows["Error"]["dof"] == 4
    for f in factors:
        assert rows[f]["f"] == pytest.approx(ref_sn.loc[f"C({f})", "F"], rel=1e-9)


def l27_results(rng: np.random.Generator) -> pd.DataFrame:
    """L27 with A, B on columns 0, 1 (their interaction on the free columns 2, 3),
    K and D on columns 4, 5; the response has a real A x B interaction. (No factor
    is called "C": patsy reads C(...) as its categorical marker.)"""
    array = get_orthogonal_array("L27(2^1 3^12)")
    frame = pd.DataFrame({"run": range(1, 28)})
    for name, col in {"A": 0, "B": 1, "K": 4, "D": 5, "AB1": 2}.items():
        frame[name] = [f"{name.lower()}{v}" for v in array[:, col]]
    a, b = array[:, 0], array[:, 1]
    frame["y"] = 20 + a + 0.5 * array[:, 4] + 1.5 * (a == b) + rng.normal(0, 0.2, 27)
    return frame


def test_general_two_factor_interaction_matches_statsmodels():
    results = l27_results(np.random.default_rng(5))
    an = analyze(results, ["A", "B", "K", "D"], "y", "larger", interactions=[("A", "B")])
    rows = rows_by_source(an.anova)
    ref = ols_anova(an.runs, "sn", ["C(A) * C(B)", "C(K)", "C(D)"], 2)
    assert rows["A×B"]["dof"] == 4
    assert rows["A×B"]["ss"] == pytest.approx(ref.loc["C(A):C(B)", "sum_sq"], rel=1e-9)
    assert rows["A×B"]["p"] == pytest.approx(ref.loc["C(A):C(B)", "PR(>F)"], rel=1e-7)
    assert rows["A"]["ss"] == pytest.approx(ref.loc["C(A)", "sum_sq"], rel=1e-9)
    assert rows["Error"]["dof"] == ref.loc["Residual", "df"] == 26 - 12
    assert an.interactions == ["A×B"]
    assert any("interaction(s) A×B are significant" in w for w in an.warnings)


def test_interaction_column_gets_its_own_row():
    results = l27_results(np.random.default_rng(6)).rename(columns={"AB1": "A:B"})
    an = analyze(results, ["A", "B", "K", "D"], "y", "larger", interactions=[("A", "B")])
    rows = rows_by_source(an.anova)
    # Textbook column SS: 9 runs per level, SS = 9 * sum (level mean - grand)^2.
    sn = an.runs["sn"]
    grand = sn.mean()
    by_level = sn.groupby(an.runs["A:B"]).mean()
    assert rows["A×B"]["dof"] == 2
    assert rows["A×B"]["ss"] == pytest.approx(9 * ((by_level - grand) ** 2).sum(), rel=1e-9)


def test_interaction_confounded_with_main_effects_is_refused():
    results = replicate(l9_design(), np.random.default_rng(1).uniform(1, 2, (9, 1)))
    with pytest.raises(UserError, match="confounded"):
        analyze(results, list(L9_LEVELS), "y", levels=L9_LEVELS, interactions=[("lr", "opt")])


@settings(max_examples=25, deadline=None)
@given(
    array=st.sampled_from(["L9", "L18"]),
    reps=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.01, 1000.0),
)
def test_sums_of_squares_add_up_to_total(array, reps, seed, scale):
    design = l9_design() if array == "L9" else l18_design()
    factors = [c for c in design.columns if c != "run"]
    values = np.random.default_rng(seed).uniform(0.1, 1.0, size=(len(design), reps)) * scale
    an = analyze(replicate(design, values), factors, "y", "larger")
    tables = [an.anova] + ([an.anova_raw] if an.anova_raw is not None else [])
    for table in tables:
        parts = table[table["source"] != "Total"]
        total = table.loc[table["source"] == "Total"].iloc[0]
        assert parts["ss"].sum() == pytest.approx(total["ss"], rel=1e-9, abs=1e-9 * scale**2)
        assert parts["dof"].sum() == total["dof"]


# --- pooling, prediction, confirmation -----------------------------------------------


def sn_driven_l9(effects: dict[str, list[float]]) -> pd.DataFrame:
    """One replicate per run with S/N = 30 + sum of the given level effects (dB)."""
    design = l9_design()
    sn = np.full(9, 30.0)
    for f, eff in effects.items():
        sn += [eff[L9_LEVELS[f].index(v)] for v in design[f]]
    return replicate(design, (10 ** (sn / 20)).reshape(9, 1))


def test_auto_pooling_pools_smallest_until_half_the_dof():
    effects = {"lr": [-3, 0, 3], "opt": [-1, 0, 1], "filters": [0.2, 0, -0.2], "act": [0.05, -0.05, 0]}
    an = analyze(sn_driven_l9(effects), list(L9_LEVELS), "y", levels=L9_LEVELS, pool="auto")
    # 8 total dof, none for error: pool act (smallest SS), then filters -> 4 dof = half.
    assert an.pooled == ["act", "filters"]
    assert an.predicted.factors_used == ("lr", "opt")
    assert any("pooled into the error: act, filters" in n for n in an.notes)
    rows = rows_by_source(an.anova)
    assert rows["Error"]["dof"] == 4 and not math.isnan(rows["lr"]["p"])


def test_auto_pooling_on_l18_with_residual_dof():
    design = l18_design()
    factors = [c for c in design.columns if c != "run"]
    # Effects shrink from x1 to x7. Error has 17 - 13 = 4 dof (< 8.5): pool the
    # smallest (x7, 2 dof) -> 6, then x6 -> 8, then x5 -> 10 >= 8.5.
    size = {"x1": 5, "x2": 4, "x3": 3, "x4": 2, "x5": 1, "x6": 0.5, "x7": 0.2}
    sn = 30 + sum(size[f] * design[f].str[-1].astype(int).to_numpy() for f in factors)
    sn = sn + np.random.default_rng(2).normal(0, 0.01, 18)
    an = analyze(replicate(design, (10 ** (sn / 20)).reshape(18, 1)), factors, "y", pool="auto")
    assert an.pooled == ["x7", "x6", "x5"]


def test_explicit_pool_is_validated():
    results = sn_driven_l9({"lr": [-1, 0, 1]})
    with pytest.raises(UserError, match="not an ANOVA term"):
        analyze(results, list(L9_LEVELS), "y", levels=L9_LEVELS, pool=["momentum"])
    with pytest.raises(UserError, match="at least one unpooled"):
        analyze(results, list(L9_LEVELS), "y", levels=L9_LEVELS, pool=list(L9_LEVELS))


def test_prediction_and_intervals_match_hand_computation():
    rng = np.random.default_rng(21)
    design = l9_design()
    base = np.array([20 + 2 * L9_LEVELS["lr"].index(v) for v in design["lr"]], dtype=float)
    values = base[:, None] + rng.normal(0, 0.5, size=(9, 2))
    results = replicate(design, values)
    an = analyze(results, list(L9_LEVELS), "y", levels=L9_LEVELS, pool=["filters", "act"])

    # Textbook computation on the raw observations (Ross, ch. 6 and 10).
    y = results["y"].to_numpy()
    grand = y.mean()
    ss_total = ((y - grand) ** 2).sum()
    ss = {f: sum(6 * (y[results[f] == lvl].mean() - grand) ** 2 for lvl in L9_LEVELS[f])
          for f in L9_LEVELS}
    err_ss = ss_total - ss["lr"] - ss["opt"]
    err_dof = 17 - 4
    ms_e = err_ss / err_dof
    best = {f: max(L9_LEVELS[f], key=lambda v: an.to_dict()["sn_response"][f][v]) for f in L9_LEVELS}
    pred = grand + sum(y[results[f] == best[f]].mean() - grand for f in ("lr", "opt"))
    n_eff = 18 / (1 + 4)
    f_crit = stats.f.ppf(0.95, 1, err_dof)
    half = math.sqrt(f_crit * ms_e / n_eff)
    half_conf = math.sqrt(f_crit * ms_e * (1 / n_eff + 1 / 2))

    p = an.predicted
    assert an.optimum == best
    assert p.mean == pytest.approx(pred)
    assert p.n_eff == pytest.approx(3.6)
    assert p.ci95 == pytest.approx((pred - half, pred + half))
    assert p.confirmation_r == 2
    assert p.confirmation_ci95 == pytest.approx((pred - half_conf, pred + half_conf))
    # S/N prediction from the runs' S/N values.
    sn = an.runs.set_index("run")["sn"]
    g_sn = sn.mean()
    sn_pred = g_sn + sum(sn[design.loc[design[f] == best[f], "run"]].mean() - g_sn for f in ("lr", "opt"))
    assert p.sn == pytest.approx(sn_pred)

    # Confirmation: r = 3 observations widen the interval by 1/r.
    half3 = math.sqrt(f_crit * ms_e * (1 / n_eff + 1 / 3))
    ok = judge_confirmation(an, [pred - 0.5 * half3, pred, pred + 0.5 * half3])
    assert ok.inside is True and ok.r == 3 and ok.word == "confirmed"
    assert ok.interval == pytest.approx([pred - half3, pred + half3])
    bad = judge_confirmation(an, [pred + 1.5 * half3] * 3)
    assert bad.inside is False and "not confirmed" in bad.message and bad.word == "not confirmed"


def test_confirmation_without_error_estimate_says_so():
    an = analyze(l4_results(), ["A", "B", "C"], "y")
    verdict = judge_confirmation(an, [9000.0])
    assert verdict.inside is None and verdict.interval is None and verdict.word == "no interval"
    assert "no error estimate" in verdict.message
    with pytest.raises(UserError):
        judge_confirmation(an, [])


# --- lost runs, unbalanced tables, input checks --------------------------------------


def test_lost_runs_are_refused_with_their_numbers():
    design = l9_design()
    results = replicate(design, np.random.default_rng(0).uniform(20, 30, (9, 2)))
    results = results[results["run"] != 4]
    results.loc[results["run"] == 7, "y"] = np.nan
    with pytest.raises(UserError, match=r"run\(s\) 4, 7 .*--impute worst"):
        analyze(results, list(L9_LEVELS), "y", levels=L9_LEVELS, design=design)


@pytest.mark.parametrize(("objective", "pick"), [("larger", np.min), ("smaller", np.max)])
def test_impute_worst_fills_lost_runs_and_warns(objective, pick):
    design = l9_design()
    results = replicate(design, np.random.default_rng(4).uniform(20, 30, (9, 2)))
    results = results[results["run"] != 4]
    worst = float(pick(results["y"]))
    an = analyze(results, list(L9_LEVELS), "y", objective, levels=L9_LEVELS,
                 design=design, impute="worst")
    run4 = an.runs.set_index("run").loc[4]
    assert run4["n"] == 2 and run4["mean"] == pytest.approx(worst)
    assert run4["lr"] == design.set_index("run").loc[4, "lr"]
    assert any("run(s) 4" in w and "imputed" in w for w in an.warnings)


def test_impute_for_nominal_copies_the_worst_run():
    design = l9_design()
    values = np.random.default_rng(8).uniform(9, 11, (9, 3))
    results = replicate(design, values)
    sn = [sn_ratio(v, "nominal") for v in values]
    results = results[results["run"] != 2]
    worst_run = min((s, i + 1) for i, s in enumerate(sn) if i != 1)[1]
    an = analyze(results, list(L9_LEVELS), "y", "nominal", levels=L9_LEVELS,
                 design=design, impute="worst")
    by_run = an.runs.set_index("run")
    assert by_run.loc[2, "sn"] == pytest.approx(by_run.loc[worst_run, "sn"])
    assert by_run.loc[2, "sn"] == pytest.approx(min(sn[i] for i in range(9) if i != 1))


def test_partial_replicates_warn():
    results = replicate(l9_design(), np.random.default_rng(9).uniform(20, 30, (9, 2)))
    results.loc[results.index[0], "y"] = np.inf
    an = analyze(results, list(L9_LEVELS), "y", levels=L9_LEVELS)
    assert an.runs.set_index("run").loc[1, "n"] == 1
    assert any("run(s) 1 lost some replicates" in w for w in an.warnings)
    assert any("unequal numbers of replicates" in w for w in an.warnings)


def test_unbalanced_external_table_is_analyzed_with_warnings():
    table = pd.DataFrame(
        {
            "a": ["x", "x", "x", "y", "y"],
            "b": ["p", "q", "p", "q", "q"],
            "psnr": [25.0, 26.5, 25.4, 27.9, 28.3],
        }
    )
    an = analyze(table, ["a", "b"], "psnr")
    assert any("'a' is unbalanced" in w for w in an.warnings)
    assert any("'a' and 'b' are not orthogonal" in w for w in an.warnings)
    assert any("no 'run' column" in n for n in an.notes)
    # (x, p) and (y, q) appear twice each: 3 runs, two of them with 2 replicates.
    assert an.runs["n"].tolist() == [2, 1, 2]


def test_balanced_l9_has_no_warnings():
    an = analyze(replicate(l9_design(), np.full((9, 1), 3.0) + np.arange(9)[:, None]),
                 list(L9_LEVELS), "y", levels=L9_LEVELS)
    assert an.warnings == []


def test_levels_are_kept_as_text_and_matched_numerically():
    results = replicate(l9_design(), np.random.default_rng(2).uniform(1, 2, (9, 1)))
    results["lr"] = results["lr"].map({"0.001": 1e-3, "0.01": 0.01, "0.1": 0.1})  # parsed floats
    results["filters"] = results["filters"].astype(float)  # "16.0" must match "16"
    an = analyze(results, list(L9_LEVELS), "y", levels=L9_LEVELS)
    assert an.levels == L9_LEVELS
    assert set(an.to_dict()["sn_response"]["lr"]) == {"0.001", "0.01", "0.1"}
    # Without levels: order of first appearance by run number.
    shuffled = results.sample(frac=1.0, random_state=0)
    shuffled["lr"] = shuffled["lr"].astype(str)
    assert analyze(shuffled, ["lr", "opt"], "y").levels["opt"] == ["adam", "sgd", "rmsprop"]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda r: r.drop(columns="act"), r"no column\(s\) \['act'\]"),
        (lambda r: r.assign(lr=r["lr"].replace("0.1", "0.5")), "not one of its levels"),
        (lambda r: r.assign(opt=["sgd"] + list(r["opt"][1:])), "changes between replicates"),
        (lambda r: r.assign(run="first"), "integer"),
        (lambda r: r.iloc[0:0], "empty"),
    ],
)
def test_bad_tables_are_refused_by_name(mutate, fragment):
    results = replicate(l9_design(), np.random.default_rng(2).uniform(1, 2, (9, 2)))
    with pytest.raises(UserError, match=fragment):
        analyze(mutate(results), list(L9_LEVELS), "y", levels=L9_LEVELS)


def test_results_must_match_the_design():
    design = l9_design()
    results = replicate(design, np.random.default_rng(2).uniform(1, 2, (9, 1)))
    results.loc[results["run"] == 5, "act"] = "relu" if design.loc[4, "act"] != "relu" else "elu"
    with pytest.raises(UserError, match=r"'act' of run\(s\) 5 differs"):
        analyze(results, list(L9_LEVELS), "y", levels=L9_LEVELS, design=design)
    results = replicate(design, np.random.default_rng(2).uniform(1, 2, (9, 1)))
    extra = pd.concat([results, results[results["run"] == 1].assign(run=10)])
    with pytest.raises(UserError, match=r"run\(s\) 10 that the design does not have"):
        analyze(extra, list(L9_LEVELS), "y", levels=L9_LEVELS, design=design)


def test_unobserved_level_and_bad_options_are_refused():
    results = l4_results()
    with pytest.raises(UserError, match="appear in no run"):
        analyze(results, ["A", "B", "C"], "y", levels={"A": ["a1", "a2", "a3"]})
    with pytest.raises(UserError, match="objective"):
        analyze(results, ["A", "B", "C"], "y", "maximize")
    with pytest.raises(UserError, match="impute"):
        analyze(results, ["A", "B", "C"], "y", impute="mean")


# --- outputs ---------------------------------------------------------------------------


def test_json_contract_and_tables():
    rng = np.random.default_rng(12)
    an = analyze(replicate(l9_design(), rng.uniform(20, 30, (9, 2))), list(L9_LEVELS), "y",
                 levels=L9_LEVELS, pool="auto")
    out = json.loads(json.dumps(an.to_dict(), allow_nan=False))
    for key in ("response", "objective", "sn_response", "mean_response", "delta", "rank",
                "anova", "optimum", "predicted", "pooled", "warnings", "notes", "anova_raw"):
        assert key in out
    assert set(out["anova"][0]) >= {"source", "dof", "ss", "ms", "f", "p", "contribution_pct"}
    assert [r["source"] for r in out["anova"]] == [*L9_LEVELS, "Error", "Total"]
    assert out["rank"] == an.rank and all(isinstance(v, int) for v in out["rank"].values())
    assert out["optimum"]["opt"] in L9_LEVELS["opt"]
    assert len(out["predicted"]["ci95"]) == 2 and out["predicted"]["sn"] == pytest.approx(an.predicted.sn)
    pooled_row = next(r for r in out["anova"] if r["source"] == an.pooled[0])
    assert pooled_row["f"] is None  # NaN became null

    tables = an.tables()
    assert set(tables) == {"runs", "sn_response", "mean_response", "anova", "optimum", "anova_raw",
                           # replicated: the dispersion tables come too (test_noise.py checks them)
                           "sd_response", "ln_s_response", "sn_nominal_1_response", "sn_nominal_2_response"}
    assert list(tables["sn_response"].index) == ["1", "2", "3", "Delta", "Rank"]
    assert f"{an.pooled[0]} (pooled)" in set(tables["anova"]["Source"])
    assert list(tables["optimum"]["Factor"]) == list(L9_LEVELS)
    text = an.to_text()
    assert "Response table for S/N ratios" in text and "lr: 1=0.001, 2=0.01, 3=0.1" in text


# --- typed results: the JSON contract is the dict of before -----------------------


def test_prediction_to_dict_is_the_json_contract():
    rng = np.random.default_rng(3)
    an = analyze(replicate(l9_design(), rng.uniform(20, 30, (9, 2))), list(L9_LEVELS), "y",
                 levels=L9_LEVELS, pool="auto")
    d = an.predicted.to_dict()
    assert list(d) == ["sn", "mean", "ci95", "confirmation_ci95", "confirmation_r", "sn_ci95", "n_eff",
                       "n_eff_sn", "factors_used", "error_dof", "error_ms", "sn_error_dof", "sn_error_ms",
                       "alpha"]
    assert isinstance(d["ci95"], list) and isinstance(d["factors_used"], list) and d["alpha"] == 0.05
    assert an.to_dict()["predicted"] == json.loads(json.dumps(d))
    assert an.predicted.has_interval


def test_error_of_equals_the_error_row_of_the_table():
    from doe_sr.analysis import anova

    rng = np.random.default_rng(4)
    an = analyze(replicate(l9_design(), rng.uniform(20, 30, (9, 2))), list(L9_LEVELS), "y",
                 levels=L9_LEVELS, pool=["act"])
    error = rows_by_source(an.anova)["Error"]
    assert (an.predicted.sn_error_dof, an.predicted.sn_error_ms) == (error["dof"], error["ms"])
    raw_error = rows_by_source(an.anova_raw)["Error"]
    assert (an.predicted.error_dof, an.predicted.error_ms) == (raw_error["dof"], raw_error["ms"])
    raw = anova.RawAnova([("a", 6.0, 2), ("b", 2.0, 2)], error_ss=1.0, error_dof=0, total_ss=9.0, total_dof=4)
    assert anova.error_of(raw) == (0, pytest.approx(math.nan, nan_ok=True))
    assert anova.error_of(raw, ["b"]) == (2, 1.5)


def test_confirmation_record_round_trips_and_renders():
    from doe_sr.analysis.confirmation import Confirmation, ConfirmationRun

    rng = np.random.default_rng(5)
    an = analyze(replicate(l9_design(), rng.uniform(20, 30, (9, 2))), list(L9_LEVELS), "y",
                 levels=L9_LEVELS, pool="auto")
    runs = [ConfirmationRun("a", 2, 24.0), ConfirmationRun("b", 3, 25.0)]
    c = Confirmation(study="s", response="y", objective="larger", optimum=an.optimum, array_row=None, run=0,
                     pooled=an.pooled, runs=runs, verdict=judge_confirmation(an, [24.0, 25.0]))
    d = c.to_dict()
    assert list(d)[:8] == ["study", "response", "objective", "optimum", "array_row", "run", "pooled", "runs"]
    assert d["runs"][0] == {"run_id": "a", "replicate": 2, "value": 24.0}
    assert Confirmation.from_dict(json.loads(json.dumps(d))) == c
    assert c.to_text().splitlines()[-1] == f"verdict: {c.verdict.message}"
    assert "not a row of the array" in c.to_markdown()
    assert "**Stale**" in c.to_markdown({**an.optimum, "lr": "other"})
