"""Write a study's report: what ``doe-sr report`` (and the end of ``doe-sr run``) does.

Why a workflow: the report joins the study's finished runs and its bicubic baseline
(tracking) with the analysis and the paper tables and figures (report), and then
files the report with the study's parent run in MLflow, so the MLflow UI shows the
same tables, figures and numbers as ``reports/<study>/`` (:mod:`doe_sr.workflow.publish`). The CLI prints the best run; a notebook calls
the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from doe_sr.workflow.session import array_results, design_frame

if TYPE_CHECKING:  # pandas costs ~0.3 s
    import pandas as pd

    from doe_sr.report.writer import StudyReport

__all__ = ["LOGGED_SUFFIXES", "Reported", "baseline_of", "report_folder", "write_study_report"]

#: Report files attached to the parent run (the LaTeX, SVG and PNG copies stay on disk).
LOGGED_SUFFIXES = (".md", ".pdf", ".csv")


@dataclass
class Reported:
    """A written report, with the bicubic baseline it compared the best run with."""

    report: StudyReport
    baseline: dict[str, float]

    @property
    def best(self) -> dict[str, object]:
        """The best array run: run, replicate, run_id, factor levels and its main metrics."""
        return self.report.best


def report_folder(study, out: str | Path | None = None) -> Path:
    """``out``/<study>, by default ``reports/<study>``."""
    from doe_sr.report.writer import REPORTS

    return (Path(out) if out else REPORTS) / study.name


def baseline_of(engine) -> dict[str, float]:
    """The bicubic metrics the study's parent run logged (empty before the first run)."""
    parent = engine.tracker.find_parent(engine.study.name)
    return engine.tracker.run(parent).metrics if parent else {}


def write_study_report(engine, *, pool=None, impute: str | None = None, out: str | Path | None = None,
                       results: pd.DataFrame | None = None, log: bool = True) -> Reported:
    """Analyze the study's finished runs and write ``out``/<study> (default
    ``reports/<study>``); with ``log``, attach its Markdown, PDF and CSV files to the
    study's parent run (``report/``) and publish the analysis there
    (:func:`~doe_sr.workflow.publish.publish_analysis`: metrics, tags, tables, figures,
    ``index.html``). ``results`` are the array runs when the caller already read them
    (:func:`~doe_sr.workflow.session.array_results`)."""
    from doe_sr.report.writer import write_report

    if results is None:
        results = array_results(engine)
    parent = engine.tracker.find_parent(engine.study.name)
    baseline = engine.tracker.run(parent).metrics if parent else {}
    rep = write_report(engine.study, results, baseline=baseline, pool=pool, impute=impute,
                       design=design_frame(engine), folder=report_folder(engine.study, out))
    if parent and log:
        from doe_sr.workflow.publish import publish_analysis

        for path in rep.files:
            if path.suffix in LOGGED_SUFFIXES:
                engine.tracker.log_artifact(parent, path, "report")
        html = rep.folder / "index.html"
        publish_analysis(engine, rep.analysis, figures=rep.files, html=html if html in rep.files else None,
                         tables=_report_tables(rep.folder))
    return Reported(rep, baseline)


def _report_tables(folder: Path) -> dict:
    """Tables of the report that the analysis does not hold (the best run against bicubic)."""
    import pandas as pd

    path = folder / "best_vs_bicubic.csv"
    return {"tables/best_vs_bicubic.json": pd.read_csv(path)} if path.is_file() else {}
