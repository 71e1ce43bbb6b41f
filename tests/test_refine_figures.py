"""The refinement report's figures (issue 13), drawn from a real in-memory Optuna study of a
known function: a warm start of "array" trials added as completed trials, then trials the
TPE sampler asked for. Each figure exists as PDF, SVG and 300-dpi PNG, its SVG parses and
carries the texts it is meant to show, log-scale parameters sit on log axes, and the
best-so-far line is the running best computed here independently with numpy.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

optuna = pytest.importorskip("optuna")

from doe_sr.core.errors import UserError  # noqa: E402
from doe_sr.report import refine_figures as rf  # noqa: E402

PARAMS = ["learning_rate", "filters", "optimizer"]
BONUS = {"adam": 1.0, "adagrad": 0.5, "adadelta": 0.0}


def _psnr(p: dict) -> float:
    """A known smooth function: best at learning_rate = 1e-3, more filters better, adam best."""
    return 20.0 - (math.log10(p["learning_rate"]) + 3.0) ** 2 + 0.01 * p["filters"] + BONUS[p["optimizer"]]


def _distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    return {"learning_rate": FloatDistribution(1e-5, 1e-2, log=True), "filters": IntDistribution(4, 128),
            "optimizer": CategoricalDistribution(["adadelta", "adam", "adagrad"])}


def _study(direction: str = "maximize", refine: int = 14, pruned: int = 0):
    """6 warm-start trials (role array_run), ``refine`` sampled ones (role refine), then
    ``pruned`` pruned trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dist = _distributions()
    ost = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=3))
    sign = 1.0 if direction == "maximize" else -1.0
    warm = [(1e-2, 4, "adadelta"), (1e-3, 8, "adam"), (1e-4, 6, "adagrad"),
            (1e-2, 8, "adagrad"), (1e-3, 6, "adadelta"), (1e-4, 4, "adam")]
    for lr, f, o in warm:
        params = {"learning_rate": lr, "filters": f, "optimizer": o}
        ost.add_trial(optuna.trial.create_trial(params=params, distributions=dist, value=sign * _psnr(params),
                                                user_attrs={"role": "array_run", "run": len(ost.trials) + 1}))
    for _ in range(refine):
        trial = ost.ask(dist)
        trial.set_user_attr("role", "refine")
        ost.tell(trial, sign * _psnr(trial.params))
    for _ in range(pruned):
        trial = ost.ask(dist)
        trial.set_user_attr("role", "refine")
        ost.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return ost


@pytest.fixture(scope="module")
def study():
    return _study()


def _texts(svg: Path) -> list[str]:
    """Every text of an SVG written with svg.fonttype none (texts stay <text> elements)."""
    root = ET.parse(svg).getroot()
    return ["".join(el.itertext()).strip() for el in root.iter() if el.tag.endswith("}text")]


def _check_files(paths: list[Path], stem: Path) -> None:
    from PIL import Image

    assert paths == [stem.with_suffix(s) for s in (".pdf", ".svg", ".png")]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 5000, p
    assert paths[0].read_bytes()[:5] == b"%PDF-"
    with Image.open(paths[2]) as im:
        dpi = im.info.get("dpi")
        assert dpi is not None and round(dpi[0]) == 300
        assert im.width >= 900 and im.height >= 600, im.size  # at least 3 x 2 inches at 300 dpi


def test_best_so_far_is_the_running_best():
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    assert rf.best_so_far(values, True) == list(np.maximum.accumulate(values))
    assert rf.best_so_far(values, False) == list(np.minimum.accumulate(values))
    assert rf.best_so_far([], True) == []


def test_history_table_is_what_the_study_holds(study):
    table = rf.history_table(study)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert list(table["number"]) == [t.number for t in done] == list(range(20))
    assert list(table["value"]) == [t.value for t in done]
    assert list(table["role"]) == ["array_run"] * 6 + ["refine"] * 14
    np.testing.assert_array_equal(table["best"], np.maximum.accumulate([t.value for t in done]))
    assert table["best"].iloc[-1] == study.best_value


def test_history_of_a_minimized_study_runs_the_minimum():
    ost = _study("minimize", refine=6)
    table = rf.history_table(ost)
    np.testing.assert_array_equal(table["best"], np.minimum.accumulate(table["value"].to_numpy()))
    assert table["best"].iloc[-1] == ost.best_value


def test_optimization_history_figure(study, tmp_path):
    stem = tmp_path / "history"
    paths = rf.optimization_history(study, stem, metric="val_psnr",
                                    reference={"Taguchi optimum (predicted)": 22.71, "bicubic": 22.54})
    _check_files(paths, stem)
    texts = _texts(stem.with_suffix(".svg"))
    for expected in (rf.ARRAY_LABEL, rf.REFINE_LABEL, "best so far", "Trial", "val_psnr (higher is better)",
                     "Taguchi optimum (predicted): 22.71", "bicubic: 22.54"):
        assert expected in texts, (expected, texts)
    svg = stem.with_suffix(".svg").read_text()
    for gid in ("best-so-far", "reference-0", "reference-1", "trials-taguchi", "trials-refinement"):
        assert f'id="{gid}"' in svg, gid


def test_history_states_pruned_trials_and_refuses_an_empty_study(tmp_path):
    ost = _study(refine=4, pruned=2)
    rf.optimization_history(ost, tmp_path / "h", metric="val_psnr")
    assert any("2 pruned trials not shown" in t for t in _texts(tmp_path / "h.svg"))
    empty = optuna.create_study()
    with pytest.raises(UserError, match="no completed trial"):
        rf.optimization_history(empty, tmp_path / "e", metric="val_psnr")
    assert not (tmp_path / "e.svg").exists()


def test_slice_plot(study, tmp_path):
    import matplotlib

    before = dict(matplotlib.rcParams)
    stem = tmp_path / "slice"
    paths = rf.slice_plot(study, stem, PARAMS, metric="val_psnr")
    _check_files(paths, stem)
    texts = _texts(stem.with_suffix(".svg"))
    for expected in ("learning_rate", "filters", "optimizer", "val_psnr", "adam", "adagrad", "adadelta"):
        assert expected in texts, (expected, texts)
    assert "Slice Plot" not in texts and "'adam'" not in texts
    # the log-scale learning rate is on a log axis: its decade ticks are drawn as powers of ten
    assert _has_log_ticks(stem.with_suffix(".svg")), texts
    # Optuna's ggplot style sheet did not leak into the process's later figures
    assert dict(matplotlib.rcParams) == before
    assert rf.slice_plot(study, tmp_path / "none", []) == []
    with pytest.raises(UserError, match="no parameter"):
        rf.slice_plot(study, tmp_path / "bad", ["momentum"])


def _has_log_ticks(svg: Path) -> bool:
    """Decade tick labels 10^-4 and 10^-3: matplotlib's mathtext writes "10" and the
    superscript "−4" as separate glyphs of one text element."""
    texts = {"".join(t.split()).replace("\u2212", "-") for t in _texts(svg)}
    return {"10-4", "10-3"} <= texts


def test_log_params_are_on_log_axes(study):
    """Checked on Optuna's axes themselves, independently of the SVG text."""
    import warnings

    from optuna.visualization.matplotlib import plot_contour, plot_slice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = np.atleast_1d(plot_slice(study, params=PARAMS)).ravel()
        scales = {ax.get_xlabel(): ax.get_xscale() for ax in axes}
        ax = plot_contour(study, params=["learning_rate", "filters"])
        pair = (ax.get_xscale(), ax.get_yscale(), ax.get_xlabel())
    import matplotlib.pyplot as plt

    plt.close("all")
    assert scales == {"learning_rate": "log", "filters": "linear", "optimizer": "linear"}
    assert pair == ("linear", "log", "filters")  # Optuna orders the pair by name: the learning rate on y


def test_contour_plot(study, tmp_path):
    assert rf.contour_plot(study, tmp_path / "one", ["learning_rate"]) == []
    assert not (tmp_path / "one.svg").exists()
    stem = tmp_path / "contour2"
    paths = rf.contour_plot(study, stem, ["learning_rate", "filters"], metric="val_psnr")
    _check_files(paths, stem)
    texts = _texts(stem.with_suffix(".svg"))
    for expected in ("learning_rate", "filters", "val_psnr"):
        assert expected in texts, (expected, texts)
    assert _has_log_ticks(stem.with_suffix(".svg")), texts
    stem = tmp_path / "contour3"
    paths = rf.contour_plot(study, stem, PARAMS, metric="val_psnr")
    _check_files(paths, stem)
    texts = _texts(stem.with_suffix(".svg"))
    assert "Contour Plot" not in texts
    for name in PARAMS:  # on the diagonal once, and as outer axis labels
        assert texts.count(name) >= 2, (name, texts)


def test_importance_comparison(tmp_path):
    table = pd.DataFrame({
        "factor": ["learning_rate", "filters", "optimizer", "activation"],
        "fanova_pct": [61.2, 30.5, 8.3, float("nan")],
        "taguchi_pct": [55.0, 20.1, float("nan"), 4.4],
        "held": [False, False, False, True],
    })
    stem = tmp_path / "importance"
    paths = rf.importance_comparison(table, stem)
    _check_files(paths, stem)
    texts = _texts(stem.with_suffix(".svg"))
    for expected in ("learning_rate", "filters", "optimizer", "activation (held)", "61.2%", "55.0%", "4.4%",
                     "fANOVA importance (array + refinement trials)", "Taguchi ANOVA contribution (array)"):
        assert expected in texts, (expected, texts)
    assert "optimizer (held)" not in texts and "nan%" not in " ".join(texts)
    # the NaN values are absent bars: fANOVA bars for the first three factors, Taguchi bars
    # for all but optimizer (bar ids name the measure and the factor's row)
    root = ET.parse(stem.with_suffix(".svg")).getroot()
    bars = {el.get("id") for el in root.iter() if el.get("id", "").startswith("bar-")}
    assert bars == {"bar-fanova_pct-0", "bar-fanova_pct-1", "bar-fanova_pct-2",
                    "bar-taguchi_pct-0", "bar-taguchi_pct-1", "bar-taguchi_pct-3"}, bars
    with pytest.raises(UserError, match="no column"):
        rf.importance_comparison(table.drop(columns=["held"]), tmp_path / "bad")


def test_importances_from_the_study_feed_the_comparison(study, tmp_path):
    """The workflow's use: Optuna's fANOVA over the refinement trials, in percent."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), params=PARAMS)
    assert abs(sum(imp.values()) - 1.0) < 1e-6
    table = pd.DataFrame({"factor": PARAMS, "fanova_pct": [100 * imp[p] for p in PARAMS],
                          "taguchi_pct": [50.0, 30.0, 20.0], "held": [False] * 3})
    paths = rf.importance_comparison(table, tmp_path / "imp")
    assert all(p.is_file() for p in paths)
