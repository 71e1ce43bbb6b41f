"""Figures never draw more certainty than the data hold: interval bars, significance
marks and the Pareto line appear exactly when the analysis has an error estimate.

Checked in the SVG the figure functions write (the bars carry ids ``ci95-...``, the
Pareto line ``significance-line-<dof>``; text is kept as text, ``svg.fonttype: none``),
and the significance line against its formula computed by hand."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyDOE3 import get_orthogonal_array

from doe_sr.analysis.taguchi import analyze
from doe_sr.core.errors import UserError
from doe_sr.report import plots

LEVELS = {"lr": ["0.001", "0.01", "0.1"], "opt": ["adam", "sgd", "rmsprop"],
          "act": ["elu", "relu", "tanh"], "filters": ["16", "32", "64"]}


def results(reps: int) -> pd.DataFrame:
    array = get_orthogonal_array("L9(3^4)")
    rng = np.random.default_rng(0)
    rows = []
    for i, row in enumerate(array):
        for rep in range(reps):
            rows.append({"run": i + 1, "replicate": rep + 1, **{f: LEVELS[f][row[j]] for j, f in enumerate(LEVELS)},
                         "psnr": 25 + row[0] + rng.normal(0, 0.1)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cases():
    return {
        "replicates": (results(2), analyze(results(2), list(LEVELS), "psnr", levels=LEVELS)),
        "pooled": (results(1), analyze(results(1), list(LEVELS), "psnr", levels=LEVELS, pool="auto")),
        "none": (results(1), analyze(results(1), list(LEVELS), "psnr", levels=LEVELS)),
    }


def svg(path: Path) -> tuple[str, list[str]]:
    root = ET.parse(path).getroot()
    text = " ".join(t for el in root.iter() for t in [el.text] if t)
    ids = [el.get("id") for el in root.iter() if el.get("id")]
    return text, ids


def test_main_effects_draw_bars_only_where_an_estimate_exists(cases, tmp_path):
    counts = {}
    for name, (_, an) in cases.items():
        paths = plots.main_effects(an, tmp_path / name / "main_effects", labels={"lr": "learning rate"})
        text, ids = svg(paths[1])
        counts[name] = {row: len([i for i in ids if i.startswith(f"ci95-{row}-")]) for row in ("mean", "sn")}
        if name == "none":
            assert "no error estimate: effects cannot be judged against noise" in text
            assert "learning rate *" not in text
        else:
            assert "learning rate *" in text and "95% CI" in text
    # Replicates: the means have an error (pure error), the run S/N ratios do not.
    assert counts["replicates"] == {"mean": 4, "sn": 0}
    assert counts["pooled"] == {"mean": 4, "sn": 4}
    assert counts["none"] == {"mean": 0, "sn": 0}


def test_pareto_line_is_the_contribution_at_p_005(cases, tmp_path):
    from scipy import stats

    an = cases["replicates"][1]
    raw = an.anova_raw
    error = raw[raw["source"] == "Error"].iloc[0]
    total = float(raw.loc[raw["source"] == "Total", "ss"].iloc[0])
    expected = 100 * stats.f.ppf(0.95, 2, error["dof"]) * 2 * error["ms"] / total
    assert plots.significance_line(an) == {2: pytest.approx(expected)}
    # At that contribution a 2-dof term has p = 0.05 exactly.
    ss = expected / 100 * total
    assert stats.f.sf(ss / 2 / error["ms"], 2, error["dof"]) == pytest.approx(0.05)
    text, ids = svg(plots.pareto(an, tmp_path / "pareto")[1])
    assert "significance-line-2" in ids and "p = 0.05" in text
    # Largest contribution first.
    shown = [s for s in re.findall(r"(\d+\.\d)%", text)]
    assert [float(v) for v in shown][:4] == sorted([float(v) for v in shown][:4], reverse=True)


def test_pareto_without_estimate_has_no_line(cases, tmp_path):
    an = cases["none"][1]
    assert plots.significance_line(an) is None
    text, ids = svg(plots.pareto(an, tmp_path / "pareto")[1])
    assert not any(i.startswith("significance-line") for i in ids)
    assert "no error estimate" in text


def test_residual_plots_need_residual_dof(cases, tmp_path):
    paths = plots.residuals_four_in_one(cases["replicates"][1], tmp_path / "residuals")
    text, _ = svg(paths[1])
    for title in ("Normal probability plot", "Versus fits", "Histogram", "Versus order"):
        assert title in text
    with pytest.raises(UserError, match="no residual degrees of freedom"):
        plots.residuals_four_in_one(cases["none"][1], tmp_path / "none")


def test_standard_figures_write_the_set(cases, tmp_path):
    stems = {}
    for name in ("replicates", "none"):
        data, an = cases[name]
        files = plots.standard_figures(an, data, tmp_path / name)
        assert all(p.is_file() for p in files) and len(files) % 3 == 0
        stems[name] = sorted({p.stem for p in files})
    assert stems["replicates"] == ["anova_contribution", "interactions", "main_effects", "pareto", "residuals"]
    assert stems["none"] == ["anova_contribution", "interactions", "main_effects", "pareto"]
