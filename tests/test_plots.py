"""Figures: three formats, 300-dpi PNG, valid SVG carrying the labels asked for."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pyDOE3 import get_orthogonal_array

from doe_sr.report import plots
from doe_sr.analysis.taguchi import analyze
from doe_sr.core.errors import UserError

LEVELS = {"lr": ["0.001", "0.01", "0.1"], "opt": ["adam", "sgd", "rmsprop"],
          "filters": ["16", "32", "64"]}


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    array = get_orthogonal_array("L9(3^4)")
    rng = np.random.default_rng(0)
    rows = []
    for i, row in enumerate(array):
        for rep in range(2):
            rows.append({"run": i + 1, "replicate": rep + 1,
                         **{f: LEVELS[f][row[j]] for j, f in enumerate(LEVELS)},
                         "psnr": 25 + row[0] + 0.3 * row[1] + rng.normal(0, 0.2)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def analysis(results):
    return analyze(results, list(LEVELS), "psnr", levels=LEVELS, pool="auto")


def svg_text(path: Path) -> str:
    root = ET.parse(path).getroot()  # raises if the SVG is not well-formed XML
    assert root.tag.endswith("svg")
    return " ".join(t for el in root.iter() for t in [el.text] if t)


def check_outputs(paths: list[Path], stem: Path) -> str:
    assert paths == [stem.with_suffix(s) for s in (".pdf", ".svg", ".png")]
    for path in paths:
        assert path.is_file() and path.stat().st_size > 1000
    assert paths[0].read_bytes().startswith(b"%PDF")
    with Image.open(paths[2]) as png:
        assert png.format == "PNG"
        assert png.info["dpi"] == pytest.approx((300, 300), abs=0.5)
        assert max(png.size) >= 1000  # inches at 300 dpi, not a 100-dpi thumbnail
    return svg_text(paths[1])


def test_main_effects_writes_three_formats_with_labels(analysis, tmp_path):
    stem = tmp_path / "figs" / "main_effects"
    text = check_outputs(plots.main_effects(analysis, stem, labels={"lr": "Learning rate"}), stem)
    assert "Learning rate" in text and "opt" in text and "rmsprop" in text
    assert "Mean of S/N ratios (dB)" in text and "Mean of psnr" in text


def test_interactions_matrix_names_every_factor(results, tmp_path):
    stem = tmp_path / "interactions"
    text = check_outputs(plots.interactions(results, list(LEVELS), "psnr", stem, levels=LEVELS), stem)
    for name in [*LEVELS, *LEVELS["opt"], "0.001"]:
        assert name in text
    with pytest.raises(UserError, match="at least two factors"):
        plots.interactions(results, ["lr"], "psnr", tmp_path / "x")
    with pytest.raises(UserError, match="no column"):
        plots.interactions(results, ["lr", "momentum"], "psnr", tmp_path / "x")


def test_contributions_shows_unpooled_sources(analysis, tmp_path):
    stem = tmp_path / "contributions"
    text = check_outputs(plots.contributions(analysis, stem), stem)
    unpooled = [s for s in analysis.anova["source"] if s not in analysis.pooled and s != "Total"]
    for source in unpooled:
        assert source in text
    assert "pooled: " + ", ".join(analysis.pooled) in text


def test_figures_are_closed(analysis, tmp_path):
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    plots.contributions(analysis, tmp_path / "c")
    plots.main_effects(analysis, tmp_path / "m")
    assert len(plt.get_fignums()) == before
