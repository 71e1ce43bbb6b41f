"""Prediction at any levels (``predict_at``, ``doe-sr predict``): numbers against a hand
computation on the seed-like L9 table, errors as one line and exit 2, and the command
on the tiny study trained once per session."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import doe_sr

from doe_sr.analysis.prediction import predict_at
from doe_sr.analysis.taguchi import analyze
from doe_sr.core.errors import UserError

# Standard L9(3^4) rows (1-based levels) and the smaller-the-better losses of test_cli_analysis.
L9 = [(1, 1, 1, 1), (1, 2, 2, 2), (1, 3, 3, 3), (2, 1, 2, 3), (2, 2, 3, 1),
      (2, 3, 1, 2), (3, 1, 3, 2), (3, 2, 1, 3), (3, 3, 2, 1)]
LEVELS = {"lr": ["0.01", "0.001", "0.0001"], "optimizer": ["adadelta", "adam", "adagrad"],
          "activation": ["tanh", "elu", "relu"], "filters": ["32", "64", "128"]}
FACTORS = list(LEVELS)
LOSS = [0.080, 0.060, 0.070, 0.020, 0.030, 0.025, 0.050, 0.045, 0.055]
AT = {"lr": "0.001", "optimizer": "adam", "activation": "elu", "filters": "64"}


def table() -> pd.DataFrame:
    return pd.DataFrame([{"run": i + 1, **{f: LEVELS[f][c - 1] for f, c in zip(FACTORS, row)}, "loss": y}
                         for i, (row, y) in enumerate(zip(L9, LOSS))])


def hand_prediction(values: list[float], pooled: list[str], at: dict[str, str]) -> tuple[float, float]:
    """Additive model and Ross's half-width, written out: level means over the 3 runs of
    each level, SS of a factor = 3 * sum((level mean - grand)^2), error = pooled SS."""
    from scipy import stats

    grand = sum(values) / 9
    means = {f: [sum(v for row, v in zip(L9, values) if row[j] == k) / 3 for k in (1, 2, 3)]
             for j, f in enumerate(FACTORS)}
    used = [f for f in FACTORS if f not in pooled]
    value = grand + sum(means[f][LEVELS[f].index(at[f])] - grand for f in used)
    ss = {f: 3 * sum((m - grand) ** 2 for m in means[f]) for f in FACTORS}
    ms_e = sum(ss[f] for f in pooled) / (2 * len(pooled))
    n_eff = 9 / (1 + 2 * len(used))
    return value, math.sqrt(stats.f.ppf(0.95, 1, 2 * len(pooled)) * ms_e / n_eff)


def test_predict_at_matches_a_hand_computation():
    pooled = ["optimizer", "activation"]
    an = analyze(table(), FACTORS, "loss", "smaller", levels=LEVELS, pool=pooled)
    got = predict_at(an, AT)
    sn_value, sn_half = hand_prediction([-20 * math.log10(y) for y in LOSS], pooled, AT)
    mean_value, mean_half = hand_prediction(LOSS, pooled, AT)
    assert got.sn == pytest.approx(sn_value, rel=1e-12)
    assert got.sn_ci95 == pytest.approx((sn_value - sn_half, sn_value + sn_half), rel=1e-12)
    assert got.mean == pytest.approx(mean_value, rel=1e-12)
    assert got.ci95 == pytest.approx((mean_value - mean_half, mean_value + mean_half), rel=1e-12)
    assert got.factors_used == ("lr", "filters") and got.error_dof == got.sn_error_dof == 4
    assert any("pooled factor(s) activation, optimizer" in n for n in got.notes)
    d = json.loads(json.dumps(got.to_dict(), allow_nan=False))
    assert d["sn"] == {"value": pytest.approx(sn_value), "ci95": pytest.approx([sn_value - sn_half, sn_value + sn_half])}
    assert d["mean"]["ci95"] == pytest.approx([mean_value - mean_half, mean_value + mean_half])
    assert d["levels"] == AT and d["factors_used"] == ["lr", "filters"] and d["error_dof"] == 4


def test_predict_at_the_optimum_is_the_analysis_prediction():
    an = analyze(table(), FACTORS, "loss", "smaller", levels=LEVELS, pool="auto")
    got = predict_at(an, an.optimum)
    p = an.predicted
    assert got.sn == pytest.approx(p.sn) and got.mean == pytest.approx(p.mean)
    assert got.sn_ci95 == pytest.approx(p.sn_ci95) and got.ci95 == pytest.approx(p.ci95)


def test_without_an_estimate_the_prediction_has_no_interval():
    an = analyze(table(), FACTORS, "loss", "smaller", levels=LEVELS)
    got = predict_at(an, AT)
    # Saturated: the additive model reproduces run 2's S/N... at its own levels only; at AT it is
    # the sum of the four effects, 0.015 by hand (see test_cli_analysis' level means).
    assert got.mean == pytest.approx(0.015, abs=1e-12)
    assert got.sn_ci95 is None and got.ci95 is None
    assert got.to_dict()["sn"]["ci95"] is None and got.to_dict()["mean"]["ci95"] is None


@pytest.mark.parametrize("levels, message", [
    ({**AT, "depth": "3"}, "unknown factor(s) depth; the factors are lr, optimizer, activation, filters"),
    ({**AT, "optimizer": "sgd"}, "'sgd' is not a level of optimizer; its levels are adadelta, adam, adagrad"),
    ({"lr": "0.001"}, "missing optimizer, activation, filters (e.g. the optimum: "),
])
def test_bad_levels_are_one_line_errors(levels, message):
    an = analyze(table(), FACTORS, "loss", "smaller", levels=LEVELS)
    with pytest.raises(UserError) as err:
        predict_at(an, levels)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_levels_match_numerically():
    an = analyze(table(), FACTORS, "loss", "smaller", levels=LEVELS)
    assert predict_at(an, {**AT, "lr": "1e-3", "filters": "64.0"}).levels == AT


# --- the command ---------------------------------------------------------------------


def write_table(folder: Path) -> Path:
    path = folder / "l9.csv"
    table().to_csv(path, index=False)
    return path


ARGS = ["--factors", ",".join(FACTORS), "--response", "loss", "--objective", "smaller"]
LEVELS_ARG = ",".join(f"{f}={v}" for f, v in AT.items())


def test_predict_command_on_a_results_table(tmp_path):
    csv = write_table(tmp_path)
    out = doe_sr("predict", "--results", str(csv), *ARGS, "--levels", LEVELS_ARG,
                 "--pool", "optimizer,activation", "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    mean_value, mean_half = hand_prediction(LOSS, ["optimizer", "activation"], AT)
    assert d["mean"]["value"] == pytest.approx(mean_value)
    assert d["mean"]["ci95"] == pytest.approx([mean_value - mean_half, mean_value + mean_half])
    text = doe_sr("predict", "--results", str(csv), *ARGS, "--levels", LEVELS_ARG, cwd=tmp_path)
    assert text.returncode == 0 and "Prediction at lr=0.001" in text.stdout and "95% CI -" in text.stdout


def test_predict_command_refuses_a_bad_level_in_one_line(tmp_path):
    out = doe_sr("predict", "--results", str(write_table(tmp_path)), *ARGS,
                 "--levels", "lr=0.001,optimizer=sgd,activation=elu,filters=64", cwd=tmp_path)
    assert out.returncode == 2 and "'sgd' is not a level of optimizer" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("text, message", [
    ("lr=0.001,optimizer", "'optimizer' is not factor=level"),
    ("lr=0.001,lr=0.01", "factor 'lr' is given twice"),
    ("  ", "give factor=level pairs"),
])
def test_malformed_levels_are_one_line_errors(text, message):
    from doe_sr.workflow.predict import parse_levels

    with pytest.raises(UserError, match=message):
        parse_levels(text)
    assert parse_levels(" lr = 0.001 ,optimizer=adam") == {"lr": "0.001", "optimizer": "adam"}


def test_predict_command_on_a_finished_study(finished_tiny):
    levels = "learning_rate=0.001,optimizer=adam,activation=elu,filters=6"
    out = doe_sr("predict", str(finished_tiny), "--levels", levels, "--pool", "auto", "--format", "json",
                 cwd=finished_tiny.parent)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["levels"] == {"learning_rate": "0.001", "optimizer": "adam", "activation": "elu", "filters": "6"}
    for key in ("sn", "mean"):
        lo, hi = d[key]["ci95"]
        assert lo < d[key]["value"] < hi
    assert d["sn_error_dof"] == 4
    bad = doe_sr("predict", str(finished_tiny), "--levels", "learning_rate=0.5", cwd=finished_tiny.parent)
    # The bad level is named before the missing factors: it is the mistake to fix first.
    assert bad.returncode == 2 and "not a level of learning_rate" in bad.stderr
