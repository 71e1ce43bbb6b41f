"""The verdict that opens summary.md is generated from the numbers: it changes when the
data change, and each claim names the table it rests on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from doe_sr.analysis.taguchi import analyze
from doe_sr.analysis.verdict import one_run_carries, p_text, study_verdict

# The standard L9(3^4) (Taguchi's table; levels 1..3).
L9 = [(1, 1, 1, 1), (1, 2, 2, 2), (1, 3, 3, 3), (2, 1, 2, 3), (2, 2, 3, 1),
      (2, 3, 1, 2), (3, 1, 3, 2), (3, 2, 1, 3), (3, 3, 2, 1)]
FACTORS = ["lr", "opt", "act", "filters"]
LEVELS = {"lr": ["0.01", "0.001", "0.0001"], "opt": ["adadelta", "adam", "adagrad"],
          "act": ["tanh", "elu", "relu"], "filters": ["32", "64", "128"]}


def results(response, replicates: int, seed: int = 0) -> pd.DataFrame:
    """An L9 with ``replicates`` noisy replicates of ``response(levels)``."""
    rng = np.random.default_rng(seed)
    rows = []
    for run, row in enumerate(L9, start=1):
        levels = {f: LEVELS[f][i - 1] for f, i in zip(FACTORS, row)}
        for rep in range(replicates):
            rows.append({"run": run, "replicate": rep, **levels,
                         "val_psnr": response(levels) + rng.normal(0, 0.05)})
    return pd.DataFrame(rows)


def verdict_of(frame: pd.DataFrame):
    analysis = analyze(frame, FACTORS, "val_psnr", "larger", levels=LEVELS)
    return analysis, study_verdict(analysis, labels={"lr": "learning rate"})


def test_one_dominant_factor_is_named_with_its_p_and_share():
    analysis, verdict = verdict_of(results(lambda lv: 22.0 + {"adadelta": 0.0, "adam": 1.0, "adagrad": 0.3}[lv["opt"]], 2,
                                           seed=1))
    first = verdict.sentences[0]
    assert analysis.significant["opt"] is True
    assert [f for f in FACTORS if analysis.significant[f]] == ["opt"]
    share = float(analysis.anova_raw.set_index("source").at["opt", "contribution_pct"])
    spread = analysis.delta_mean["opt"]
    assert first.text.startswith(f"Opt ({p_text(analysis.p_values['opt'])}, {share:.0f}% of the variance, "
                                 f"level means {spread:.3g} apart) is the only significant factor")
    assert 0.9 < spread < 1.1  # the planted 1 dB between adadelta and adam
    assert "best level: opt adam" in first.text
    assert "learning rate, act and filters cannot be told from noise" in first.text
    assert first.table == "anova_raw"  # replicates: judged on the raw responses


def test_pure_noise_says_no_factor_is_distinguishable():
    analysis, verdict = verdict_of(results(lambda lv: 22.0, 2, seed=3))
    assert not any(analysis.significant[f] for f in FACTORS)
    first = verdict.sentences[0].text
    smallest = min(FACTORS, key=lambda f: analysis.p_values[f])
    name = "learning rate" if smallest == "lr" else smallest
    assert first.startswith("No factor is distinguishable from noise at this training budget")
    assert f"{name}'s, {p_text(analysis.p_values[smallest])}" in first
    assert "replicates: 2" in first


def test_without_an_error_estimate_nothing_is_called_significant():
    analysis, verdict = verdict_of(results(lambda lv: 22.0 + {"adadelta": 0.0, "adam": 1.0, "adagrad": 0.3}[lv["opt"]], 1))
    first = verdict.sentences[0]
    assert analysis.noise.source == "none"
    assert first.text.startswith("No factor can be called significant: 9 unreplicated runs, with all 8 of "
                                 "their 8 degrees of freedom taken by the 4 factors, leave no estimate")
    assert f"opt, spans {analysis.delta['opt']:.3g} dB of S/N" in first.text
    assert "significant factor" not in verdict.to_text()
    # the optimum carries no interval, and says nothing about confirmation
    assert "95% interval" not in verdict.sentences[1].text


def test_the_optimum_sentence_carries_the_interval_and_the_best_run_the_baseline():
    frame = results(lambda lv: 22.0 + {"adadelta": 0.0, "adam": 1.0, "adagrad": 0.3}[lv["opt"]], 2)
    analysis = analyze(frame, FACTORS, "val_psnr", "larger", levels=LEVELS)
    best = {"run": 2, "val_psnr": 23.1}
    verdict = study_verdict(analysis, best=best, baseline=22.5, flagged="3 of 18 runs did not learn.")
    texts = [s.text for s in verdict.sentences]
    lo, hi = analysis.predicted.ci95
    assert f"(95% interval {lo:.3f} to {hi:.3f})" in texts[1]
    assert texts[2] == "3 of 18 runs did not learn."
    assert texts[3] == "The best array run (run 2) reaches 23.100 dB of val_psnr, 0.600 dB above bicubic's 22.500 dB."
    assert [s.table for s in verdict.sentences] == ["anova_raw", "optimum", "flagged_runs", "best_vs_bicubic"]
    assert verdict.to_markdown().count("*(see `") == 4


@pytest.mark.parametrize("p, text", [(0.0004, "p < 0.001"), (0.0123, "p = 0.012"), (0.5, "p = 0.500")])
def test_p_text(p, text):
    assert p_text(p) == text


def test_one_run_that_differs_from_all_others_is_called_out():
    """The quickstart's pattern: only run 8 learns. Every factor then looks "significant"
    with the same share, so the verdict must say that one run carries it."""
    def response(lv):
        learned = (lv["lr"], lv["opt"], lv["act"], lv["filters"]) == ("0.0001", "adam", "tanh", "128")
        return 22.54 + (0.2 if learned else 0.0)

    analysis, verdict = verdict_of(results(response, 2, seed=4))
    caution = verdict.sentences[1]
    assert caution.table == "runs"
    others = analysis.runs[analysis.runs["run"] != 8]
    assert caution.text.startswith("Caution: run 8 alone (learning rate 0.0001, opt adam, act tanh, filters 128; "
                                   f"mean {analysis.runs.set_index('run').at[8, 'mean']:.3f} against "
                                   f"{others['mean'].mean():.3f} for the other runs) carries ")
    run, share = one_run_carries(analysis)
    assert run == 8 and share >= 0.8 and f"carries {share:.0%} of the variation between runs" in caution.text
    # a factor whose effect is spread over three runs per level is not one run's doing
    _, spread = verdict_of(results(lambda lv: 22.0 + {"adadelta": 0.0, "adam": 1.0, "adagrad": 0.3}[lv["opt"]], 2,
                                   seed=1))
    assert not any(s.text.startswith("Caution") for s in spread.sentences)
