"""Open a study and read its array runs: the first step of every workflow after ``run``.

Why a module of its own: the CLI, the report, the confirmation and the comparison all
start from "the study file, its stores, its finished runs"; one definition keeps them
reading the same runs the same way (and a notebook user calls the same functions).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from doe_sr.core.errors import UserError

if TYPE_CHECKING:  # pandas costs ~0.3 s; `doe-sr design` and friends never need it
    import pandas as pd


def open_study(study, *, storage: str | None = None, tracking_uri: str | None = None,
               base_dir: str | Path | None = None):
    """The study with its Optuna queue and MLflow store (created on first use).

    ``study`` is a study file's path, or a study built in Python: a dict with the keys
    of a study file, or a :class:`~doe_sr.study.schema.Study`. A study built in Python is
    validated like a file (one-line :class:`UserError`), then written to
    ``<base_dir>/<name>.study.yaml`` (``base_dir``: the current folder by default; a
    user's builder or loss file is looked up there too): workers are processes that read
    the study from a file, and every run logs that file, so the MLflow record tells how
    the study was defined either way.

    ``storage`` and ``tracking_uri`` override the study's, as ``--storage`` and
    ``--tracking-uri`` do; a bad tracking URI is refused here in one line.
    """
    from doe_sr.engine.study_engine import Engine
    from doe_sr.study.schema import check_tracking_uri, load_study

    path = Path(study) if isinstance(study, (str, Path)) else save_study(study, base_dir)
    loaded = load_study(path)
    check_tracking_uri(tracking_uri)
    return Engine(loaded, path, storage=storage, tracking_uri=tracking_uri)


def save_study(study, base_dir: str | Path | None = None) -> Path:
    """Write a study built in Python (a dict or a ``Study``) as YAML; its path.

    The file is ``<base_dir>/<name>.study.yaml``; it is rewritten only when it defines
    another study, so reopening the same study keeps the file (and its time stamp) as it was.
    """
    import yaml

    from doe_sr.study.schema import Study, parse_study

    folder = Path(base_dir or ".")
    if isinstance(study, Study):
        data = study.model_dump(mode="json", exclude_defaults=True)
        data["model"] = study.model.model_dump(mode="json", exclude_none=True)
    elif isinstance(study, dict):
        data = study
    else:
        raise UserError(f"open_study: a study is a file path, a dict or a Study, not a {type(study).__name__}")
    parsed = parse_study(data, origin="study", base_dir=folder)
    path = folder / f"{parsed.name}.study.yaml"
    if not _holds(path, parsed):
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _holds(path: Path, study) -> bool:
    """Whether the file at ``path`` already defines ``study`` (any spelling of it)."""
    from doe_sr.study.schema import load_study

    if not path.is_file():
        return False
    try:
        return load_study(path) == study
    except UserError:
        return False


def array_results(engine) -> "pd.DataFrame":
    """The study's finished array runs (confirmation runs have their own role, so never
    enter the array analysis), with ``flag`` and ``flag_cause`` columns: the run's
    degenerate-run flag (:mod:`doe_sr.analysis.degenerate`; empty strings when healthy).
    The analysis reads its columns by name, so these two change none of its numbers."""
    results = engine.tracker.results(engine.study.name, engine.study.factor_names)
    if not len(results):
        raise UserError(f"study {engine.study.name!r} has no finished runs in {engine.tracker.uri}; "
                        f"run `doe-sr run {engine.study_path}` first")
    results = results.reset_index(drop=True)
    flags = run_flags(engine)
    results["flag"] = [flags[i].kind if flags.get(i) else "" for i in results["run_id"]]
    results["flag_cause"] = [flags[i].cause if flags.get(i) else "" for i in results["run_id"]]
    return results


def run_flags(engine, *, role: str = "array_run") -> dict:
    """MLflow run id -> :class:`~doe_sr.analysis.degenerate.Flag` (or None) of every finished
    child run of ``role``.

    The flag tag a run got when it finished is used as recorded; runs that finished before
    flags were recorded are classified from their metrics, params and per-epoch loss
    against the parent run's bicubic baseline.
    """
    from doe_sr.analysis.degenerate import FLAG_TAG, recorded_flag

    tracker = engine.tracker
    parent = tracker.find_parent(engine.study.name)
    baseline = tracker.run(parent).metrics if parent else {}
    out = {}
    for r in tracker.runs(engine.study.name, role=role, status="FINISHED"):
        legacy = FLAG_TAG not in r.tags and "train_loss_start" not in r.metrics
        history = tracker.metric_history(r.run_id, "loss") if legacy and "loss" in r.metrics else None
        out[r.run_id] = recorded_flag(r.tags, r.metrics, r.params, baseline, loss_history=history)
    return out


def design_frame(engine) -> "pd.DataFrame":
    """``run`` + factor levels (as written in the study) of every array row, so the
    analyzer can tell a lost run from a run that never existed."""
    import pandas as pd

    study = engine.study
    return pd.DataFrame([{"run": run.run, **{f: study.factor(f).level_labels[run.codes[f]]
                                             for f in study.factor_names}}
                         for run in engine.runs.values()])
