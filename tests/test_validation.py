"""``doe-sr validate``'s analysis on a synthetic full factorial: no training, numbers checked by hand.

The planted truth: four factors A, B, C, D at three levels, the response

    y = 20 + a[A] + b[B] + c[C] + d[D] + 4 * [A = a0 and B = b0]

with a = (0, 1, 2), b = (0, 1, 0.5), c = (0, 0.3, 0.1), d = (0, 0.2, 0.4), each combination
observed twice as y + 0.05 and y - 0.05 (so every combination mean is exactly y and the
full factorial's ANOVA has an error term). The L9 puts its (a0, b0) run at (c0, d0): the
A x B bonus then reads as C and D effects, the array picks (a2, b0, c0, d0) = 22.0 while
the true best is (a0, b0, c1, d2) = 24.7, a regret of exactly 2.7.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from doe_sr.analysis.taguchi import analyze
from doe_sr.analysis.validation import aliases, compare_to_truth
from doe_sr.core.errors import UserError

FACTORS = ["A", "B", "C", "D"]
LEVELS = {f: [f"{f.lower()}{i}" for i in range(3)] for f in FACTORS}
EFFECTS = {"A": (0, 1, 2), "B": (0, 1, 0.5), "C": (0, 0.3, 0.1), "D": (0, 0.2, 0.4)}
L9 = [(0, 0, 0, 0), (0, 1, 1, 1), (0, 2, 2, 2), (1, 0, 1, 2), (1, 1, 2, 0), (1, 2, 0, 1), (2, 0, 2, 1),
      (2, 1, 0, 2), (2, 2, 1, 0)]  # Taguchi's L9(3^4), 0-based (pyDOE3's, checked below)


def truth(codes) -> float:
    return 20 + sum(EFFECTS[f][c] for f, c in zip(FACTORS, codes)) + (4 if codes[0] == 0 and codes[1] == 0 else 0)


def table(rows) -> pd.DataFrame:
    out = []
    for run, codes in enumerate(rows, start=1):
        for rep, e in enumerate((0.05, -0.05)):
            out.append({"run": run, "replicate": rep, **{f: LEVELS[f][c] for f, c in zip(FACTORS, codes)},
                        "y": truth(codes) + e})
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def result():
    from doe_sr.study.design import orthogonal_array

    assert orthogonal_array("L9").tolist() == [list(r) for r in L9]
    array = analyze(table(L9), FACTORS, "y", "larger", levels=LEVELS)
    full = table(list(itertools.product(range(3), repeat=4)))
    return array, compare_to_truth(array, full, against="full")


def test_the_array_misses_the_planted_best_and_the_regret_is_exact(result):
    array, v = result
    assert array.optimum == {"A": "a2", "B": "b0", "C": "c0", "D": "d0"}  # the bonus read as C and D effects
    assert v.true_best == {"A": "a0", "B": "b0", "C": "c1", "D": "d2"}
    assert v.true_best_value == pytest.approx(24.7)
    assert v.optimum_in_set and v.optimum_is_best is False
    assert v.optimum_value == pytest.approx(22.0)
    assert v.regret == pytest.approx(2.7, abs=1e-9)
    # rank of (a2, b0, c0, d0) among the 81 means, counted independently
    means = sorted((truth(c) for c in itertools.product(range(3), repeat=4)), reverse=True)
    assert v.optimum_rank == 1 + sum(m > 22.0 + 1e-9 for m in means)
    assert v.n_combinations == 81 and v.n_observations == 162 and v.array_runs == 9
    assert "not the best" not in v.verdict() and "2.7" in v.verdict()


def test_additive_prediction_error_by_hand(result):
    _, v = result
    nine = [truth(c) for c in L9]
    grand = sum(nine) / 9

    def level_mean(f, level):
        return np.mean([truth(c) for c in L9 if c[FACTORS.index(f)] == level])

    def predicted(codes):
        return grand + sum(level_mean(f, c) - grand for f, c in zip(FACTORS, codes))

    errors = [predicted(c) - truth(c) for c in itertools.product(range(3), repeat=4)]
    assert v.rmse == pytest.approx(math.sqrt(np.mean(np.square(errors))))
    assert v.max_abs_error == pytest.approx(max(abs(e) for e in errors))
    obs = [truth(c) for c in itertools.product(range(3), repeat=4)]
    assert v.correlation == pytest.approx(np.corrcoef([p + t for p, t in zip(errors, obs)], obs)[0, 1])
    best = v.combinations.iloc[0]
    # by hand: A0 22.1667 + B0 22.6667 + C1 22.0 + D2 22.0333 - 3 x 22.2778 = 22.0333
    assert best["predicted"] == pytest.approx(22.0 + 1 / 30, abs=1e-9)
    assert int(v.combinations["in_array"].sum()) == 9


def test_kendall_tau_per_factor(result):
    _, v = result
    # A and B: the array's level means equal the full factorial's (orthogonality), so tau = 1;
    # C and D: the array puts level 0 first (the aliased bonus), the truth last: tau = -1/3
    assert v.kendall_tau == pytest.approx({"A": 1.0, "B": 1.0, "C": -1 / 3, "D": -1 / 3})
    rows = v.rankings.set_index("factor")
    assert rows.loc["C", "array_best"] == "c0" and rows.loc["C", "full_best"] == "c1"
    assert bool(rows.loc["A", "same_best"]) and not bool(rows.loc["D", "same_best"])


def test_confounded_interactions_with_their_full_factorial_anova(result):
    _, v = result
    conf = v.confounded.set_index("interaction")
    # an L9 with four factors: every two-factor interaction lies in the other two main effects
    assert set(conf.index) == {f"{a}×{b}" for a, b in itertools.combinations(FACTORS, 2)}
    assert conf.loc["A×B", "aliased_with"] == "C, D"
    assert conf.loc["C×D", "aliased_with"] == "A, B"
    assert (conf["confounded_dof"] == 4).all()
    # A x B by hand: interaction effects 16/9 (1 cell), -8/9 (4), 4/9 (4); 18 observations per cell
    assert conf.loc["A×B", "ss"] == pytest.approx(18 * 64 / 9)
    assert conf.loc["A×B", "dof"] == 4
    assert conf.loc["A×B", "p"] < 1e-6
    assert conf.loc["A×C", "ss"] == pytest.approx(0, abs=1e-9)
    anova = v.anova.set_index("source")
    err_ss = 162 * 0.05 ** 2
    assert anova.loc["Error", "ss"] == pytest.approx(err_ss)
    assert anova.loc["Error", "dof"] == 162 - 1 - 8 - 24
    from scipy import stats

    f = (128 / 4) / (err_ss / (162 - 33))
    assert conf.loc["A×B", "f"] == pytest.approx(f)
    assert conf.loc["A×B", "p"] == pytest.approx(stats.f.sf(f, 4, 129))
    assert conf.loc["A×B", "contribution_pct"] == pytest.approx(128 / anova.loc["Total", "ss"] * 100)


def test_json_and_text(result):
    import json

    _, v = result
    data = json.loads(json.dumps(v.to_dict()))
    assert data["regret"] == pytest.approx(2.7) and data["optimum_is_best"] is False
    assert set(data["prediction"]) == {"rmse", "max_abs_error", "correlation"}
    assert data["kendall_tau"]["C"] == pytest.approx(-1 / 3)
    assert [c["interaction"] for c in data["confounded"]][0] == "A×B"
    text = v.to_text()
    assert "A×B (aliased with C, D)" in text and "regret: 2.7" in text


def test_an_optimum_outside_the_larger_set_is_said():
    # the larger "set" here lacks the array's optimum (a2, b0, c0, d0)
    array = analyze(table(L9), FACTORS, "y", "larger", levels=LEVELS)
    combos = [c for c in itertools.product(range(3), repeat=4) if c != (2, 0, 0, 0)]
    v = compare_to_truth(array, table(combos), against="L80")
    assert not v.optimum_in_set and v.regret is None and v.optimum_value is None
    assert "not a combination" in v.verdict() and any("doe-sr confirm" in n for n in v.notes)


def test_smaller_is_better_regret_is_positive():
    rows = table(L9).assign(y=lambda d: -d["y"] + 50)  # smaller-the-better of the same truth
    full = table(list(itertools.product(range(3), repeat=4))).assign(y=lambda d: -d["y"] + 50)
    v = compare_to_truth(analyze(rows, FACTORS, "y", "smaller", levels=LEVELS), full)
    assert v.true_best == {"A": "a0", "B": "b0", "C": "c1", "D": "d2"}
    assert v.regret == pytest.approx(2.7)


def test_aliases_derived_for_other_designs():
    two = {f: ["lo", "hi"] for f in "ABC"}
    l4 = pd.DataFrame([dict(zip("ABC", (two[f][c] for f, c in zip("ABC", r))))
                       for r in [(0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)]])
    assert aliases(l4, list("ABC"), two) == [("A", "B", ["C"], 1), ("A", "C", ["B"], 1), ("B", "C", ["A"], 1)]
    # a full factorial confounds nothing
    full = pd.DataFrame([dict(zip("ABC", (two[f][c] for f, c in zip("ABC", r))))
                         for r in itertools.product(range(2), repeat=3)])
    assert aliases(full, list("ABC"), two) == []


# -- the set to validate against --------------------------------------------------------------
def _study(tmp_path, levels=3, factors=4, array="L9(3^4)"):
    from doe_sr.study.schema import load_study

    names = ["learning_rate", "optimizer", "activation", "filters"][:factors]
    values = {"learning_rate": [0.01, 0.001, 0.0001], "optimizer": ["adadelta", "adam", "adagrad"],
              "activation": ["tanh", "elu", "relu"], "filters": [4, 6, 8]}
    lines = ["name: s", "design:", f"  array: {array}", "  factors:"]
    for n in names:
        lines += [f"    - name: {n}", f"      levels: {values[n][:levels]}"]
    lines += ["data:", "  source: sample", f"tracking:\n  uri: {tmp_path / 'mlruns'}"]
    path = tmp_path / "s.yaml"
    path.write_text("\n".join(lines) + "\n")
    return load_study(path)


def test_validation_sets(tmp_path):
    from doe_sr.study.design import build_runs, validation_runs

    study = _study(tmp_path)
    key, runs = validation_runs(study, "full")
    assert key == "full" and len(runs) == 81
    assert len({tuple(r.codes.values()) for r in runs}) == 81
    assert runs[0].codes == {"learning_rate": 0, "optimizer": 0, "activation": 0, "filters": 0}
    assert runs[36].label(prefix="v") == "v37 lr=0.001 adam tanh f4"
    # every array run is a combination of the full factorial
    assert {tuple(r.codes.values()) for r in build_runs(study)} <= {tuple(r.codes.values()) for r in runs}
    key, runs = validation_runs(study, "L27")
    assert key == "L27" and len(runs) == 27
    assert len({tuple(r.codes.values()) for r in runs}) == 27
    for bad, why in [("L99", "unknown orthogonal array"), ("L9", "not more than"),
                     ("L8", "cannot hold"), ("L16", r"L16\(2\^15\), L16\(4\^5\)")]:
        with pytest.raises(UserError, match=why) as info:
            validation_runs(study, bad)
        assert "\n" not in str(info.value) and str(info.value).startswith(f"--against {bad}")


def test_campaigns_keep_the_array_and_name_the_validation_sets(tmp_path):
    from doe_sr.engine.queue import array_campaign, validation_campaign
    from doe_sr.study.design import build_runs

    study = _study(tmp_path)
    array = array_campaign(study, {r.run: r for r in build_runs(study)})
    assert (array.name, array.role, array.kind, array.worker_args) == ("s", "array_run", "array", ("worker",))
    full = validation_campaign(study, "full")
    assert (full.name, full.role, full.tags, full.pairs) == ("s/validation/full", "validation",
                                                             {"doe_sr.validation": "full"}, 81)
    assert full.worker_args == ("validate",) and full.worker_options[-1] == "--worker"
    assert full.fingerprint != array.fingerprint
    twice = validation_campaign(study, " L27 ", replicates=2)
    assert (twice.name, twice.pairs) == ("s/validation/L27/x2", 54)
    with pytest.raises(UserError, match="--against L4"):
        validation_campaign(study, "L4")


def test_figures_in_three_formats(result, tmp_path):
    from PIL import Image

    from doe_sr.report.validation_plots import effects_overlay, predicted_vs_observed

    array, v = result
    files = predicted_vs_observed(v, tmp_path / "pvo") + effects_overlay(array, v, tmp_path / "eff")
    assert sorted(p.name for p in files) == sorted(f"{s}.{e}" for s in ("pvo", "eff") for e in ("pdf", "svg", "png"))
    with Image.open(tmp_path / "pvo.png") as png:
        assert round(png.info["dpi"][0]) == 300
    svg = (tmp_path / "eff.svg").read_text()
    assert "tau = -0.33" in svg and "full (81 combinations)" in svg  # text kept as text (svg.fonttype none)
