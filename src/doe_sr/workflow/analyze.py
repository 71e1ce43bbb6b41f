"""Analyze a study, or a results table produced elsewhere: what ``doe-sr analyze`` does.

``analyze_study`` reads a study's finished array runs from MLflow (levels in study
order, the design so lost runs are found); ``analyze_csv`` reads a CSV with one row per
run and replicate. Both return :class:`Analyzed`: the
:class:`~doe_sr.analysis.taguchi.Analysis`, the results it was computed from and the
figures written (``plots``). A notebook calls the same functions as the command.
``analyze_study`` also files the analysis with the study's parent run
(:mod:`doe_sr.workflow.publish`); a CSV has no parent run, so nothing is published.

Levels are text throughout: a CSV is read with every cell as a string, so "0.001" or
"Adam" come back exactly as written, never as 0.001000 or a reformatted float.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doe_sr.core.errors import UserError
from doe_sr.workflow.session import array_results, design_frame

if TYPE_CHECKING:  # pandas costs ~0.3 s; the analysis modules import it when used
    import pandas as pd

    from doe_sr.analysis.taguchi import Analysis

__all__ = ["MISSING", "Analyzed", "analyze_csv", "analyze_study", "read_results_csv", "study_analysis",
           "write_figures"]

#: Cells of the response column read as a lost run (NaN) rather than as bad input.
MISSING = frozenset({"", "nan", "NaN", "NA", "N/A", "null", "None"})


@dataclass
class Analyzed:
    """An analysis with the results table it read and the figures it wrote."""

    analysis: Analysis
    results: pd.DataFrame
    figures: list[Path] = field(default_factory=list)
    #: Problems met while filing the analysis with the parent run; the analysis itself
    #: stands, so the CLI prints them as warnings (never part of ``to_dict``).
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """``doe-sr analyze --format json``: the analysis, plus ``figures`` when any were written."""
        out = self.analysis.to_dict()
        if self.figures:
            out["figures"] = [str(p) for p in self.figures]
        return out


def read_results_csv(path: Path, factors: list[str], response: str) -> pd.DataFrame:
    """A results table produced elsewhere: factor cells as written, response as numbers.

    Empty or NA-like response cells are lost runs (NaN: the analyzer refuses them
    unless ``--impute worst``); any other non-number is an error naming its line.
    """
    import pandas as pd

    if not path.is_file():
        raise UserError(f"--results: file {path} not found; give the path of a CSV file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:  # empty file, binary junk, broken quoting
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--results: cannot read {path} as CSV ({first}); save it as comma-separated text") from None
    header = _header(path)
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise UserError(f"--results: column {twice[0]!r} appears twice in the header of {path}; "
                        "name each column once")
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in [*factors, response] if c not in df.columns]
    if missing:
        raise UserError(f"--results: column(s) {', '.join(missing)} not in {path}; "
                        f"its columns are {', '.join(df.columns)}")
    if df.empty:
        raise UserError(f"--results: {path} has a header but no rows")
    for f in factors:
        df[f] = df[f].str.strip()
        blank = df.index[df[f] == ""].tolist()
        if blank:
            raise UserError(f"--results: factor column {f!r} is empty on line(s) "
                            f"{', '.join(str(i + 2) for i in blank)} of {path}; every run needs a level")
    text = df[response].str.strip()
    values = pd.to_numeric(text.where(~text.isin(MISSING)), errors="coerce")
    bad = df.index[values.isna() & ~text.isin(MISSING)].tolist()
    if bad:
        raise UserError(f"--results: response column {response!r} is not numeric: {text[bad[0]]!r} on line "
                        f"{bad[0] + 2} of {path}; fix the cell or leave it empty for a lost run")
    df[response] = values.astype(float)
    return df


def _header(path: Path) -> list[str]:
    """The column names as written: pandas renames a repeated 'y' to 'y.1', which would
    silently analyze one of two columns of the same name."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            row = next(csv.reader(fh, skipinitialspace=True), [])
    except csv.Error as exc:
        raise UserError(f"--results: cannot read {path} as CSV ({exc}); save it as comma-separated text") from None
    return [c.strip() for c in row]


def study_analysis(engine, *, response: str | None = None, objective: str | None = None, pool=None,
                   impute: str | None = None, interactions=()) -> tuple[Analysis, pd.DataFrame]:
    """Analyze a study's array runs with its levels in study order."""
    from doe_sr.analysis.taguchi import analyze

    study = engine.study
    results = array_results(engine)
    analysis = analyze(results, study.factor_names, response or study.response.metric,
                       objective or study.response.objective,
                       levels={f.name: f.level_labels for f in study.design.factors},
                       pool=pool, design=design_frame(engine), impute=impute, interactions=interactions)
    return analysis, results


def write_figures(analysis: Analysis, results: pd.DataFrame, folder: Path,
                  labels: dict[str, str] | None = None) -> list[Path]:
    """The study figures of :func:`doe_sr.report.plots.standard_figures` (main effects with
    their intervals, % contribution, Pareto, interaction matrix, residual plots), each as
    PDF, SVG and 300-dpi PNG; the study report draws the same set."""
    from doe_sr.report import plots

    return plots.standard_figures(analysis, results, folder, labels=labels, levels=analysis.levels)


def analyze_study(engine, *, response: str | None = None, objective: str | None = None, pool=None,
                  impute: str | None = None, interactions: Sequence[tuple[str, str]] = (),
                  plots: Path | None = None, publish: bool = True) -> Analyzed:
    """A study's finished array runs analyzed (``engine`` from
    :func:`~doe_sr.workflow.session.open_study`); figures in ``plots`` when given, with
    the factors' display labels.

    With ``publish``, the analysis (and the figures) are filed with the study's parent run
    (:func:`~doe_sr.workflow.publish.publish_analysis`). A store that cannot be written
    (a colleague's read-only copy) does not cost the analysis: the reason is returned in
    ``warnings`` instead."""
    analysis, results = study_analysis(engine, response=response, objective=objective, pool=pool,
                                       impute=impute, interactions=interactions)
    labels = {f.name: f.display for f in engine.study.design.factors}
    figures = write_figures(analysis, results, plots, labels) if plots else []
    done = Analyzed(analysis, results, figures)
    if publish:
        from doe_sr.workflow.publish import publish_analysis

        try:
            publish_analysis(engine, analysis, figures=figures)
        except Exception as exc:  # the store refused a write; the analysis is still right
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            done.warnings.append(f"the analysis was not filed with the study's parent run ({first})")
    return done


def analyze_csv(path: Path, factors: list[str], response: str, objective: str, *, pool=None,
                impute: str | None = None, interactions: Sequence[tuple[str, str]] = (),
                plots: Path | None = None) -> Analyzed:
    """A results table produced elsewhere (:func:`read_results_csv`) analyzed; levels in
    order of first appearance; figures in ``plots`` when given."""
    from doe_sr.analysis.taguchi import analyze

    results = read_results_csv(Path(path), factors, response)
    analysis = analyze(results, factors, response, objective, pool=pool, impute=impute,
                       interactions=interactions)
    figures = write_figures(analysis, results, plots) if plots else []
    return Analyzed(analysis, results, figures)
