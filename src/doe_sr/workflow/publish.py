"""File a study's analysis with its MLflow parent run, so the UI shows what the report shows.

Why: browsing runs in the MLflow UI is one of the three things users do with doe-sr, and
the parent run *is* the study there. It carries

- per-factor metrics ``factor.<name>.delta_sn``, ``.delta_mean``, ``.rank``,
  ``.contribution_pct`` (a pooled factor's: its share of the total sum of squares) and
  ``.p`` (only when the ANOVA can estimate it: MLflow keeps the last logged value, and
  ``Tracker.log_metrics`` drops NaN, so a p from an earlier analysis with another pooling
  stays until one is estimable again; ``doe_sr.analysis.pooled`` says which pooling the
  current numbers used), plus
  the additive prediction at the optimum (``optimum.predicted_sn`` / ``_mean``), so
  factors can be sorted and charted across studies;
- tags ``doe_sr.optimum.<factor>`` = best level (by S/N) and ``doe_sr.analysis.pooled``
  (the verdict of ``doe-sr confirm`` keeps its own ``doe_sr.confirmation.*`` tags);
- the response, ANOVA, optimum and run tables as MLflow tables (``tables/*.json``), which
  the UI shows as tables;
- the figures (``figures/*.png`` and ``.svg``) and ``report/index.html``.

``analyze`` (on a study), ``report``, ``confirm`` and ``compare`` call this after they
finish, so the parent shows the latest analysis; publishing the same analysis again
changes nothing: metrics whose value is unchanged are not logged again (MLflow would add
a point to their history each time), tags and artifacts are overwritten in place.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from doe_sr.analysis.taguchi import Analysis

__all__ = ["FIGURE_SUFFIXES", "OPTIMUM_TAG_PREFIX", "POOLED_TAG", "analysis_metrics", "analysis_tables",
           "analysis_tags", "metric_key", "publish_analysis", "publish_comparison", "publish_files",
           "publish_tables"]

OPTIMUM_TAG_PREFIX = "doe_sr.optimum."
POOLED_TAG = "doe_sr.analysis.pooled"
#: Formats of a figure attached under ``figures/``: PNG is what the UI previews, SVG the
#: vector copy (the PDF is attached with the report under ``report/``).
FIGURE_SUFFIXES = (".png", ".svg")
#: MLflow's tag, kept by ``MlflowClient.log_table``, that lists the run's table artifacts.
_LOGGED_ARTIFACTS = "mlflow.loggedArtifacts"


def metric_key(name: str) -> str:
    """``name`` with what MLflow refuses in a metric or tag key (anything but letters,
    digits, ``_ - . /`` and space) replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", str(name))


def _finite(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def analysis_metrics(analysis: Analysis) -> dict[str, float]:
    """The per-factor numbers of ``analysis`` as parent-run metrics (non-finite ones left out)."""
    out: dict[str, float | None] = {}
    anova = analysis.anova.set_index("source") if len(analysis.anova) else None
    total = _finite(anova.loc["Total", "ss"]) if anova is not None and "Total" in anova.index else None
    for f in analysis.factors:
        key = f"factor.{metric_key(f)}"
        out[f"{key}.delta_sn"] = _finite(analysis.delta.get(f))
        out[f"{key}.delta_mean"] = _finite(analysis.delta_mean.get(f))
        out[f"{key}.rank"] = _finite(analysis.rank.get(f))
        if anova is not None and f in anova.index:
            row = anova.loc[f]
            share = _finite(row.get("contribution_pct"))
            if share is None and total:  # a pooled factor: its SS share, so the metric never goes stale
                share = _finite(100.0 * float(row.get("ss")) / total)
            out[f"{key}.contribution_pct"] = share
            if not bool(row.get("pooled", False)):
                out[f"{key}.p"] = _finite(row.get("p"))
    out["optimum.predicted_sn"] = _finite(analysis.predicted.sn)
    out["optimum.predicted_mean"] = _finite(analysis.predicted.mean)
    return {k: v for k, v in out.items() if v is not None}


def analysis_tags(analysis: Analysis) -> dict[str, str]:
    """The optimum levels (by S/N) and the pooled terms as parent-run tags."""
    tags = {f"{OPTIMUM_TAG_PREFIX}{metric_key(f)}": str(level) for f, level in analysis.optimum.items()}
    tags[POOLED_TAG] = ", ".join(analysis.pooled) or "none"
    return tags


def analysis_tables(analysis: Analysis) -> dict[str, pd.DataFrame]:
    """The paper tables as flat frames (the row labels "1".."3", "Delta", "Rank" of the
    response tables become a ``Level`` column) keyed by their artifact file."""
    import pandas as pd

    out = {}
    for name, table in analysis.tables().items():
        flat = table if isinstance(table.index, pd.RangeIndex) else table.reset_index()
        flat.columns = [str(c) for c in flat.columns]
        out[f"tables/{name}.json"] = flat
    return out


def _changed(metrics: Mapping[str, float], current: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items()
            if k not in current or not math.isclose(float(current[k]), v, rel_tol=1e-12, abs_tol=0.0)}


def publish_tables(tracker, parent: str, tables: Mapping[str, pd.DataFrame], logged: Iterable[str] = ()) -> None:
    """Each table as an MLflow table artifact of ``parent``.

    ``Tracker.log_table`` (``MlflowClient.log_table``) *appends* the rows to a table the run
    already has, so a second ``doe-sr report`` would double every table. A table already
    listed in the run's ``mlflow.loggedArtifacts`` tag (``logged``) is therefore replaced:
    the same JSON (pandas' ``split`` orientation, which is what ``log_table`` writes) is
    logged over it as a plain artifact.
    """
    logged = set(logged)
    for artifact_file, table in tables.items():
        if artifact_file not in logged:
            tracker.log_table(parent, table, artifact_file)
            continue
        folder, name = artifact_file.rsplit("/", 1) if "/" in artifact_file else ("", artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            table.to_json(path, orient="split", index=False, date_format="iso")
            tracker.log_artifact(parent, path, folder or None)


def _logged_tables(tags: Mapping[str, str]) -> list[str]:
    import json

    try:
        return [entry["path"] for entry in json.loads(tags.get(_LOGGED_ARTIFACTS, "[]"))
                if isinstance(entry, dict) and "path" in entry]
    except (ValueError, TypeError):
        return []


def publish_files(tracker, parent: str, files: Iterable[Path], *, html: Path | None = None) -> None:
    """Figures (PNG and SVG of each) under ``figures/``, ``html`` under ``report/``."""
    for path in files:
        if Path(path).suffix in FIGURE_SUFFIXES and Path(path).is_file():
            tracker.log_artifact(parent, Path(path), "figures")
    if html is not None and Path(html).is_file():
        tracker.log_artifact(parent, Path(html), "report")


def publish_analysis(engine, analysis: Analysis, *, figures: Iterable[Path] = (), html: Path | None = None,
                     tables: Mapping[str, pd.DataFrame] | None = None) -> str | None:
    """File ``analysis`` (and ``figures``, ``html``, extra ``tables``) with the study's
    parent run; returns its id, or None when the study has no parent run yet.

    Only an analysis of the study's own response and objective is published: ``doe-sr
    analyze --response test_psnr`` answers another question, and its deltas written as
    ``factor.*`` would silently replace the study's.
    """
    study = engine.study
    if analysis.response != study.response.metric or analysis.objective != study.response.objective:
        return None
    tracker = engine.tracker
    parent = tracker.find_parent(study.name)
    if parent is None:
        return None
    current = tracker.run(parent)
    changed = _changed(analysis_metrics(analysis), current.metrics)
    if changed:
        tracker.log_metrics(parent, changed)
    tracker.set_tags(parent, analysis_tags(analysis))
    publish_tables(tracker, parent, {**analysis_tables(analysis), **(tables or {})}, _logged_tables(current.tags))
    publish_files(tracker, parent, figures, html=html)
    return parent


def publish_comparison(engine, parent: str, folder: Path, files: Iterable[Path]) -> Path:
    """After ``doe-sr compare``: rebuild ``folder``/index.html (it now shows the comparison),
    and file it, the comparison figures and the mean table with the parent run."""
    import pandas as pd

    from doe_sr.report.html import write_index

    html = write_index(folder, title=f"Study {engine.study.name}")
    tracker = engine.tracker
    publish_files(tracker, parent, files, html=html)
    mean = Path(folder) / "comparison_mean.csv"
    if mean.is_file():
        publish_tables(tracker, parent, {"tables/comparison_mean.json": pd.read_csv(mean)},
                       _logged_tables(tracker.run(parent).tags))
    return html
