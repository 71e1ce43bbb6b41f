"""A researcher browses a finished study in a real browser (issue 14).

Why a browser and not the REST API: what failed users was what the MLflow UI *shows*:
the experiment opening on MLflow 3's GenAI "Overview" instead of the runs, a parent run
without its analysis, children named "run 01" without their levels. So this test serves
the finished tiny study with the real ``doe-sr ui`` and drives headless Chromium through
MLflow 3.17's pages the way a user clicks: the runs table (parent, expanded to its nine
children, with the four factor columns chosen in "Columns"), the chart view (the
children's ``val_psnr`` learning curves over the epochs), the parent's artifacts (the
main-effects figure), and the self-contained ``index.html`` (every figure drawn at a
non-zero size). Screenshots of each are kept as test artifacts for people to look at.

Selectors are visible texts, ARIA labels, ``data-testid`` and ag-grid's ``row-id`` /
``col-id`` (run ids and column keys), never generated class names. Every wait is a
bounded wait on something the page shows.

Skipped, with the reason, only when Chromium or its driver (or selenium) is missing.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from browser import artifacts_dir, chromium, doe_sr_ui, missing_browser, wait_for
from conftest import REPO, doe_sr

_MISSING = missing_browser()  # the reason shows in pytest's summary (-ra)
pytestmark = [pytest.mark.skipif(bool(_MISSING), reason=_MISSING or ""), pytest.mark.timeout(900)]

FACTORS = ("learning_rate", "optimizer", "activation", "filters")
#: bounds for a loaded 2-core machine, not expected durations
PAGE = 120
STEP = 60


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shots() -> Path:
    return artifacts_dir(REPO)


@pytest.fixture(scope="module")
def driver():
    with chromium() as d:
        yield d


@pytest.fixture(scope="module")
def ui(finished_tiny: Path):
    """``doe-sr ui STUDY``: the store of the study, and the link to its runs printed (issue 14)."""
    with doe_sr_ui([str(finished_tiny), "--no-browser"], cwd=finished_tiny.parent) as server:
        yield server


class Study:
    """What the store holds about the tiny study, read from the server's REST API (what the
    pages must show): experiment id, parent and children runs."""

    def __init__(self, base: str, name: str = "tiny"):
        self.base = base
        exp = self._get(f"experiments/get-by-name?experiment_name={name}")["experiment"]
        self.experiment_id = exp["experiment_id"]
        runs = self._post("runs/search", {"experiment_ids": [self.experiment_id], "max_results": 1000})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        self.parent = next(r for r, t in zip(runs, tags) if t.get("doe_sr.role") == "parent")
        self.parent_id = self.parent["info"]["run_id"]
        # the array's runs (other tests may add confirmation runs under the same parent)
        self.children = [r for r, t in zip(runs, tags)
                         if t.get("mlflow.parentRunId") == self.parent_id and t.get("doe_sr.role") == "array_run"]

    def _get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.base}/api/2.0/mlflow/{path}", timeout=60) as r:
            return json.load(r)

    def _post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(f"{self.base}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)

    @staticmethod
    def params(run: dict) -> dict[str, str]:
        return {p["key"]: p["value"] for p in run["data"].get("params", [])}

    @staticmethod
    def name(run: dict) -> str:
        return run["info"]["run_name"]

    @staticmethod
    def id(run: dict) -> str:
        return run["info"]["run_id"]


@pytest.fixture(scope="module")
def study(ui) -> Study:
    return Study(ui.base)


# -- page helpers -----------------------------------------------------------------------
def _by(kind: str):
    from selenium.webdriver.common.by import By
    return getattr(By, kind)


def _visible(driver, kind: str, selector: str) -> list:
    return [e for e in driver.find_elements(_by(kind), selector) if e.is_displayed()]


def _close_assistant(driver) -> None:
    """MLflow 3 opens an "MLflow Assistant" side panel that covers a third of the page."""
    for button in _visible(driver, "XPATH", '//*[@data-assistant-ui="true"]//button[@aria-label="Close"]'):
        button.click()


def _text(element) -> str:
    return " ".join((element.get_attribute("textContent") or "").split())


def _runs_url(ui, study: Study) -> str:
    """The link ``doe-sr ui STUDY`` prints: the study's runs view (issue 14)."""
    link = ui.printed_link()
    assert link, f"doe-sr ui printed no link to the study's runs:\n{ui.output}"
    assert f"/experiments/{study.experiment_id}/runs" in link, f"doe-sr ui printed {link}"
    return link


def _nav(driver) -> str:
    return " ".join(_text(n) for n in _visible(driver, "TAG_NAME", "nav"))


def _row_visible(driver, run_id: str) -> bool:
    return bool(_visible(driver, "CSS_SELECTOR", f'div[role="row"][row-id="{run_id}"]'))


def _choose_columns(driver, names) -> None:
    """Tick the parameters ``names`` in the runs table's "Columns" menu, as a user does:
    type the name in its search box, click the entry whose whole text is the name."""
    from selenium.webdriver.common.keys import Keys

    _visible(driver, "XPATH", '//button[normalize-space()="Columns"]')[0].click()
    search = wait_for(lambda: _visible(driver, "XPATH", '//input[@placeholder="Search columns"]'),
                      STEP, 'the "Search columns" box')[0]
    for name in names:
        if driver.find_elements(_by("CSS_SELECTOR"), f'[role="columnheader"][col-id="params.`{name}`"]'):
            continue  # shown already: a click would hide it
        search.send_keys(Keys.CONTROL, "a")
        search.send_keys(name)
        # the entry "learning_rate", not "training.learning_rate": an element whose whole text
        # is the name inside another whose whole text is the name (the highlight's parent)
        entry = wait_for(lambda: _visible(driver, "XPATH", f'//*[normalize-space()="{name}"]'
                                                           f'[parent::*[normalize-space()="{name}"]]'),
                         STEP, f'the column "{name}" in the Columns menu')
        entry[0].click()
    search.send_keys(Keys.ESCAPE)


def _cell(driver, run_id: str, column: str) -> str | None:
    cells = driver.find_elements(_by("CSS_SELECTOR"), f'div[role="row"][row-id="{run_id}"] '
                                                      f'div[role="gridcell"][col-id="{column}"]')
    return _text(cells[0]) if cells else None


# -- tests ------------------------------------------------------------------------------
def test_html_report_figures_render(driver, finished_tiny: Path, tmp_path: Path, shots: Path):
    """index.html opens from disk, without a server, and every figure is drawn."""
    folder = finished_tiny.parent / "reports" / "tiny"
    if not (folder / "index.html").exists():
        out = doe_sr("report", str(finished_tiny), "--out", str(tmp_path), cwd=finished_tiny.parent, timeout=900)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        folder = tmp_path / "tiny"
    page = folder / "index.html"
    assert page.exists(), f"no index.html in {sorted(p.name for p in folder.iterdir())}"
    figures = sorted(p.stem for p in folder.glob("*.svg"))
    assert "main_effects" in figures, figures

    driver.get(page.as_uri())
    drawn = wait_for(lambda: driver.execute_script(
        "return Array.from(document.querySelectorAll('figure > svg')).map(s => {"
        " const r = s.getBoundingClientRect();"
        " return [s.parentElement.id, r.width, r.height]; })"), PAGE, "the figures of index.html")
    assert sorted(fid for fid, _, _ in drawn) == figures, f"figures on the page {drawn}, in the folder {figures}"
    flat = [(fid, w, h) for fid, w, h in drawn if not (w > 0 and h > 0)]
    assert not flat, f"figures drawn at zero size: {flat}"

    driver.execute_script("(document.getElementById('figures') || document.getElementById('main_effects'))"
                          ".scrollIntoView()")
    driver.save_screenshot(str(shots / "index_html.png"))


def test_runs_view_shows_parent_and_children_with_factor_columns(driver, ui, study: Study, shots: Path):
    """The printed link opens the runs table on the study; expanded, its nine runs show their levels
    in their names and, once chosen in "Columns", as columns."""
    assert len(study.children) == 9, [Study.name(r) for r in study.children]
    driver.get(_runs_url(ui, study))
    parent_link = f'a[href*="/runs/{study.parent_id}"]'
    wait_for(lambda: _visible(driver, "CSS_SELECTOR", parent_link), PAGE, "the parent run in the runs table")
    _close_assistant(driver)
    assert _text(_visible(driver, "CSS_SELECTOR", parent_link)[0]) == "tiny"
    # the link lands in MLflow's model-training pages, not its GenAI ones (Overview, Traces, Evaluation runs)
    assert "Model registry" in _nav(driver) and "Evaluation runs" not in _nav(driver), _nav(driver)

    # the UI groups children under their parent: expand it with the button in its name cell
    if not all(_row_visible(driver, Study.id(r)) for r in study.children):
        name_cell = _visible(driver, "XPATH", f'//div[@role="gridcell"][.//a[contains(@href, '
                                              f'"/runs/{study.parent_id}")]]')[0]
        name_cell.find_element(_by("TAG_NAME"), "button").click()
    wait_for(lambda: all(_row_visible(driver, Study.id(r)) for r in study.children), STEP,
             "the nine child runs under the expanded parent")
    for run in study.children:
        link = _visible(driver, "CSS_SELECTOR", f'div[role="row"][row-id="{Study.id(run)}"] '
                                                f'a[href*="/runs/{Study.id(run)}"]')
        assert link and _text(link[0]) == Study.name(run)

    _choose_columns(driver, FACTORS)

    def shown() -> dict | None:
        table = {(Study.id(r), f): _cell(driver, Study.id(r), f"params.`{f}`") for r in study.children
                 for f in FACTORS}
        return table if all(v for v in table.values()) else None

    table = wait_for(shown, STEP, "the factor columns filled for the nine children")
    for run in study.children:
        levels = Study.params(run)
        assert {f: table[Study.id(run), f] for f in FACTORS} == {f: levels[f] for f in FACTORS}, Study.name(run)
    headers = [_text(h) for h in driver.find_elements(_by("CSS_SELECTOR"), '[role="columnheader"]')]
    assert all(f in headers for f in FACTORS), headers
    driver.save_screenshot(str(shots / "runs_expanded.png"))

    # issue 14: a child's name carries its levels (e.g. "r08 lr=0.0001 adam tanh f128")
    for run in study.children:
        levels = Study.params(run)
        assert all(levels[f] in Study.name(run) for f in ("optimizer", "activation")), (Study.name(run), levels)


def test_chart_view_overlays_learning_curves(driver, ui, study: Study, shots: Path):
    """The chart view draws the children's val_psnr per epoch, one line each."""
    driver.get(_runs_url(ui, study))
    wait_for(lambda: _visible(driver, "CSS_SELECTOR", f'a[href*="/runs/{study.parent_id}"]'), PAGE,
             "the runs view")
    _close_assistant(driver)
    if not all(_row_visible(driver, Study.id(r)) for r in study.children):
        _visible(driver, "XPATH", f'//div[@role="gridcell"][.//a[contains(@href, "/runs/{study.parent_id}")]]'
                                  f'//button')[0].click()
    _visible(driver, "XPATH", '//input[@name="runs-view-mode"][@value="CHART"]/ancestor::label[1]')[0].click()
    search = wait_for(lambda: _visible(driver, "XPATH", '//input[@placeholder="Search metric charts"]'), PAGE,
                      "the chart view")[0]
    search.send_keys("val_psnr")
    card_xpath = '//*[@data-testid="experiment-view-compare-runs-card"][.//h4[normalize-space()="val_psnr"]]'

    def curves():
        cards = _visible(driver, "XPATH", card_xpath)
        if not cards:
            return None
        card = cards[0]
        text = _text(card)
        lines = [p for p in card.find_elements(_by("CSS_SELECTOR"), "path.js-line")
                 if "L" in (p.get_attribute("d") or "")]
        named = all(f"{Study.name(r)} (val_psnr)" in text for r in study.children)
        return card if ("Step" in text and named and len(lines) >= 9) else None

    card = wait_for(curves, PAGE, "the val_psnr chart with a line per child run over the steps")
    # the card is small and its legend scrolls: the screenshot shows it full screen
    card.find_element(_by("CSS_SELECTOR"), 'button[data-component-id="fullscreen_button_chartcard"]').click()
    wait_for(lambda: [d for d in _visible(driver, "CSS_SELECTOR", '[role="dialog"]')
                      if "val_psnr" in _text(d) and d.find_elements(_by("CSS_SELECTOR"), "path.js-line")],
             STEP, "the val_psnr chart full screen")
    driver.save_screenshot(str(shots / "learning_curves.png"))
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()  # leave the page as a user would find it


def test_parent_artifacts_include_main_effects_figure(driver, ui, study: Study, shots: Path):
    """From the runs view, the parent run's Artifacts tab lists the main-effects figure and previews it."""
    driver.get(_runs_url(ui, study))
    parent = wait_for(lambda: _visible(driver, "CSS_SELECTOR", f'a[href*="/runs/{study.parent_id}"]'), PAGE,
                      "the parent run in the runs view")[0]
    parent.click()
    wait_for(lambda: _visible(driver, "XPATH", '//*[@role="tab"][normalize-space()="Artifacts"]'), PAGE,
             "the parent run's page")[0].click()
    node = '[data-testid="artifact-tree-node"][aria-label="{}"]'
    wait_for(lambda: _visible(driver, "CSS_SELECTOR", node.format("report")), PAGE,
             "the parent's artifacts (report/)")
    _close_assistant(driver)
    folders = _visible(driver, "CSS_SELECTOR", node.format("figures"))
    assert folders, "no figures/ among the parent's artifacts: " + str(
        [e.get_attribute("aria-label") for e in driver.find_elements(_by("CSS_SELECTOR"),
                                                                   '[data-testid="artifact-tree-node"]')])
    folders[0].click()
    figure = wait_for(lambda: _visible(driver, "CSS_SELECTOR", node.format("main_effects.png")), STEP,
                      "figures/main_effects.png in the artifact tree")[0]
    figure.click()
    wait_for(lambda: driver.execute_script(
        "return Array.from(document.querySelectorAll('img[alt=\"figures/main_effects.png\"]'))"
        ".some(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0)"),
        STEP, "the preview of figures/main_effects.png")
    driver.save_screenshot(str(shots / "parent_artifacts.png"))
