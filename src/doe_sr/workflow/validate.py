"""Check a study's array against the truth: what ``doe-sr validate`` does, callable from Python.

Why: an L9 assumes that four factors act additively and has no degree of freedom left
to test it. ``validate`` trains the full factorial (or a larger array) at the study's
own settings and says how the array fared (:mod:`doe_sr.analysis.validation`).

The larger set is a campaign of the same engine (:func:`doe_sr.engine.queue.validation_campaign`):
its own Optuna study ``<study>/validation/<set>`` in the study's storage, so it resumes
after a crash or ``kill -9``, runs on ``--workers N`` local processes (or any worker
joining with ``doe-sr validate STUDY --against SET --worker``) and works with a
PostgreSQL storage like the array. Its runs are MLflow children of the study's parent
with role ``validation``. A combination the record already holds (an array run, or a
run of an earlier validation set, with the same replicate and seed) is not trained
again: its result is reused.

The report lands in ``<out>/<study>/validation_<set>/`` (tables, ``validation.md``,
``validation.json``, figures; ``<set>_x<R>`` with ``--replicates R`` other than the
study's) and is filed with the parent run under ``validation/<set>/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doe_sr.engine.queue import Progress, State
from doe_sr.engine.study_engine import Engine
from doe_sr.engine.workers import launch_workers

if TYPE_CHECKING:
    import pandas as pd

    from doe_sr.analysis.validation import Validation

__all__ = ["Validated", "validate_study", "validation_engine", "validation_results", "work_validation"]


@dataclass
class Validated:
    """What ``validate`` did: the set, its runs (reused or trained), the comparison and the files."""

    against: str
    progress: Progress
    reused: dict[str, int]  # pairs whose result came from the record, by the role of the run reused
    result: Validation | None = None  # None while runs of the set are not done
    folder: Path | None = None
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.progress.done == self.progress.total

    @property
    def reused_total(self) -> int:
        return sum(self.reused.values())

    def to_dict(self) -> dict[str, Any]:
        """``doe-sr validate --format json``: the comparison's keys plus ``runs`` and ``report``."""
        out: dict[str, Any] = self.result.to_dict() if self.result is not None else {"against": self.against}
        out["runs"] = {"total": self.progress.total, "done": self.progress.done,
                       "failed": self.progress.count(State.FAILED), "reused": self.reused_total,
                       "reused_by_role": dict(self.reused), "trained": self.progress.done - self.reused_total}
        out["report"] = str(self.folder) if self.folder else None
        out["files"] = [str(p) for p in self.files]
        return out


def validation_engine(engine: Engine, against: str, replicates: int | None = None) -> Engine:
    """The engine of the study's validation set ``against`` (bad values refused in one line)."""
    from doe_sr.engine.queue import validation_campaign

    return engine.for_campaign(validation_campaign(engine.study, against, replicates))


def validation_results(engine: Engine) -> pd.DataFrame:
    """The validation set's done pairs: run, replicate, the factor levels (as written in the
    study), the response and the MLflow run that holds it (reused runs name the run reused)."""
    import pandas as pd

    study = engine.study
    rows = []
    for s in engine.progress().states:
        if s.state != State.DONE or s.value is None:
            continue
        run = engine.runs[s.run]
        rows.append({"run": s.run, "replicate": s.replicate,
                     **{f: study.factor(f).level_labels[run.codes[f]] for f in study.factor_names},
                     study.response.metric: float(s.value), "mlflow_run_id": s.mlflow_run_id})
    return pd.DataFrame(rows)


def work_validation(study, *, against: str, replicates: int | None = None, console=None,
                    storage: str | None = None, tracking_uri: str | None = None) -> Progress:
    """Join the validation set as one worker in this process until its queue is empty (``--worker``)."""
    import sys

    from doe_sr.workflow.run import _open, work

    engine = validation_engine(_open(study, storage, tracking_uri), against, replicates)
    return work(engine, verbose="auto" if sys.stdout.isatty() else 2, console=console)


def validate_study(study, *, against: str = "full", workers: int = 1, replicates: int | None = None,
                   gpus: list[str] | None = None, force_workers: bool = False, retry_failed: bool = False,
                   report: bool = True, out: str | Path | None = None, console=None,
                   storage: str | None = None, tracking_uri: str | None = None) -> Validated:
    """Train the validation set ``against`` (what is not done or reusable yet) and compare the array with it.

    Bad input (an unknown or too small set, no finished array) is refused before any
    run trains. With runs of the set left failed or undone, ``result`` is None (the
    command exits 1; running it again resumes).
    """
    from doe_sr.workflow.analyze import study_analysis
    from doe_sr.workflow.run import _default_console, _open, local_workers

    engine = _open(study, storage, tracking_uri)
    console = console or _default_console()
    say = console.print
    val = validation_engine(engine, against, replicates)
    key = val.campaign.tags["doe_sr.validation"]
    analysis, _ = study_analysis(engine)  # the array first: no array, nothing to validate
    gpus = local_workers(workers, force=force_workers) if gpus is None else gpus
    if report:  # a reports folder that cannot exist is found now, not after hours of training
        from doe_sr.report.writer import make_folder

        make_folder(Path(out) if out else Path("reports"))
    progress = val.prepare(retry_failed=retry_failed)
    reused = val.queue.reused()
    say(f"[bold]{engine.study.name}[/]: validation against {key}, {progress.total} runs "
        f"({len(val.runs)} combinations x {val.campaign.replicates}); {sum(reused.values())} reused from the record "
        f"({', '.join(f'{n} {role}' for role, n in sorted(reused.items())) or 'none'}), "
        f"{progress.total - progress.done} to train")
    if progress.done < progress.total:
        start = time.perf_counter()
        try:
            launch_workers(val, workers, console, gpus)
        except KeyboardInterrupt:
            val.end_session(interrupted=True)
            raise
        progress = val.end_session()
        say(f"validation runs finished in {time.perf_counter() - start:.0f} s")
    outcome = Validated(key, progress, val.queue.reused())
    if not outcome.complete:
        return outcome
    from doe_sr.analysis.validation import compare_to_truth

    outcome.result = compare_to_truth(analysis, validation_results(val), against=key)
    if report:
        _write(val, outcome, analysis, Path(out) if out else Path("reports"))
    return outcome


def _write(engine: Engine, outcome: Validated, analysis, out: Path) -> None:
    """The report folder and its copy filed with the parent run under ``validation/<set>/``."""
    from doe_sr.report.validation_plots import effects_overlay, predicted_vs_observed
    from doe_sr.report.writer import make_folder, write_table

    result = outcome.result
    folder = make_folder(out / engine.study.name / f"validation_{_set_name(engine, outcome.against)}")
    files: list[Path] = []
    captions = {"validation_summary": "How the array fared against the larger set",
                "validation_combinations": "Every combination: observed mean and the array's additive prediction",
                "validation_rankings": "Level rankings per factor: the array against the larger set (Kendall's tau)",
                "validation_confounded": "Two-factor interactions the array confounds, with the larger set's ANOVA",
                "validation_anova": "ANOVA of the larger set (main effects and two-factor interactions)"}
    for name, table in result.tables().items():
        files += write_table(table, folder, name, caption=captions[name], index=False)
    files += predicted_vs_observed(result, folder / "validation_predicted_vs_observed")
    files += effects_overlay(analysis, result, folder / "validation_main_effects")
    files += [folder / "validation.json", folder / "validation.md"]
    outcome.folder, outcome.files = folder, files
    (folder / "validation.md").write_text(_markdown(outcome))
    (folder / "validation.json").write_text(json.dumps(outcome.to_dict(), indent=2))
    try:
        parent = engine.tracker.find_parent(engine.study.name)
        if parent is not None:
            for path in files:
                engine.tracker.log_artifact(parent, path, f"validation/{_set_name(engine, outcome.against)}")
    except Exception as exc:  # the report stands; the copy in MLflow is a convenience
        outcome.warnings.append(f"the validation report was not filed with the parent run: {exc}")


def _set_name(engine: Engine, key: str) -> str:
    """The set's name in folders: ``full``, ``L27``; ``full_x2`` when its replicates differ from the study's
    (as its Optuna study's name does), so the two reports never overwrite each other."""
    reps = engine.campaign.replicates
    return key if reps == engine.study.design.replicates else f"{key}_x{reps}"


def _markdown(outcome: Validated) -> str:
    from doe_sr.report.writer import to_markdown

    r = outcome.result
    runs = outcome.to_dict()["runs"]
    parts = [f"# Validation of the array against {outcome.against}", "", r.verdict(), "",
             f"{runs['total']} runs ({r.n_combinations} combinations); {runs['reused']} reused from the record "
             f"({', '.join(f'{n} {role}' for role, n in sorted(outcome.reused.items())) or 'none'}), "
             f"{runs['trained']} trained.", "", "## Summary", "", to_markdown(r.summary_table(), index=False, digits=4),
             "", "## Level rankings (Kendall's tau)", "", to_markdown(r.rankings, index=False),
             "", "## Interactions the array confounds", "",
             to_markdown(r.confounded, index=False) if len(r.confounded) else "None.",
             "", "## ANOVA of the larger set", "", to_markdown(r.anova, index=False), "",
             "![predicted vs observed](validation_predicted_vs_observed.svg)", "",
             "![main effects](validation_main_effects.svg)", ""]
    if r.notes:
        parts += ["## Notes", "", *[f"- {n}" for n in r.notes], ""]
    return "\n".join(parts)
