"""Refine the array's optimum with Bayesian optimisation: what ``doe-sr refine`` does, callable from Python.

Why: an L9 screens four factors at three levels each; the best setting usually lies
between levels (a learning rate of 3e-4, 96 filters). Optuna's samplers search a
continuous range well but start cold; the study already holds the array's runs. So the
refinement is a campaign of the same engine (:func:`doe_sr.engine.queue.refine_campaign`):
its own Optuna study ``<study>/refine[/<name>]`` in the study's storage, warm-started
with the array's runs as completed trials (:mod:`doe_sr.engine.bayes`), its trials MLflow
children of the study's parent with role ``refine``. It resumes after ``kill -9``, runs
on ``--workers N`` (or any worker joining with ``doe-sr refine STUDY --worker``) and on
a PostgreSQL storage, like the array.

What is searched follows the evidence: with ``hold: auto`` (the default) a factor the
array's ANOVA did not find significant is held at its Taguchi optimum level, and the
report says which were held. When no array run measured the Taguchi optimum, the first
trial does (same seed as every trial), so the refined best is always set against a
measured optimum, with a paired test on the test images.

The report lands in ``<out>/<study>/refine/`` (``refine_<name>`` for a named refinement)
and is filed with the parent run under the same folder name (``refine/``, ``refine_<name>/``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doe_sr.core.errors import UserError
from doe_sr.engine.queue import Progress, State
from doe_sr.engine.study_engine import Engine

if TYPE_CHECKING:
    import pandas as pd

    from doe_sr.analysis.taguchi import Analysis

__all__ = ["Refined", "refine_engine", "refine_study", "work_refine"]


@dataclass
class Refined:
    """What ``refine`` did: its trials, what it held and searched, the comparison and the files."""

    name: str  # the refinement's Optuna study
    progress: Progress
    held: dict[str, str]  # factor -> the Taguchi optimum level it was held at
    searched: list[str]
    warm_start: dict[str, int]  # {"added": n, "left_out": m}
    trials: list[dict] = field(default_factory=list)
    best: dict | None = None  # the refined best trial: number, value, params, mlflow_run_id
    comparison: pd.DataFrame | None = None
    paired: list = field(default_factory=list)  # doe_sr.analysis.paired.PairedTest
    importance: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    confirmed: list[float] = field(default_factory=list)  # the Taguchi optimum's confirmation runs (response)
    refined_confirmed: list[float] = field(default_factory=list)  # the refined best's fresh-seed runs (response)
    seconds: float | None = None
    folder: Path | None = None
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.progress.settled == self.progress.total

    def to_dict(self) -> dict[str, Any]:
        """``doe-sr refine --format json``."""
        p = self.progress
        return {
            "refinement": self.name, "held": self.held, "searched": self.searched, "warm_start": self.warm_start,
            "trials": {"total": p.total, "complete": p.done, "pruned": p.count(State.PRUNED),
                       "failed": p.count(State.FAILED), "left": p.total - p.settled - p.count(State.FAILED)},
            "best": self.best,
            "comparison": _records(self.comparison),
            "paired": [t.to_dict() for t in self.paired],
            "importance": _records(self.importance),
            "confirmed": self.confirmed, "refined_confirmed": self.refined_confirmed,
            "notes": self.notes, "seconds": self.seconds,
            "report": str(self.folder) if self.folder else None, "files": [str(f) for f in self.files],
        }


def _records(frame) -> list[dict] | None:
    if frame is None:
        return None
    return json.loads(frame.to_json(orient="records"))


# -- the search -------------------------------------------------------------------------------
def _typed(study, name: str, value):
    """``value`` as the setting ``name`` reads it (YAML's ``1e-4`` string is the float 1e-4)."""
    return study.setting_value(name, value)


def _base(study, name: str):
    """The study's own value of the setting ``name`` (what the array held fixed)."""
    return study.setting_value(name)


def _level_value(study, factor: str, label: str):
    f = study.factor(factor)
    return _typed(study, factor, f.levels[f.level_labels.index(label)])


def _held(study, analysis: Analysis, notes: list[str]) -> list[str]:
    """The factors held at their Taguchi optimum (``refine.hold``)."""
    cfg = study.refine
    if isinstance(cfg.hold, list):
        return list(cfg.hold)
    if cfg.hold == "none":
        return []
    significant = analysis.significant or {}
    if not significant or all(v is None for v in significant.values()):
        notes.append("hold: auto held no factor: the array has no error estimate, so no factor was judged "
                     "(add replicates or pool factors to judge them)")
        return []
    held = [f for f in study.factor_names if significant.get(f) is False]
    for f in held:
        if f in cfg.space:
            p = analysis.p_values.get(f)
            notes.append(f"{f}: its range in refine.space was not searched: the array did not find it significant"
                         + (f" (p = {p:.3g})" if p is not None else "") + "; set refine.hold: none to search it")
    return held


def _space(study, searched: list[str]) -> dict[str, dict]:
    """The search space as plain specs (see :class:`doe_sr.engine.bayes.Search`); a factor with
    no range in ``refine.space`` is searched over its array levels."""
    cfg = study.refine
    out = {}
    for name in searched:
        if name not in cfg.space:
            out[name] = {"kind": "categorical", "choices": [_typed(study, name, v) for v in study.factor(name).levels]}
        else:
            out[name] = {"kind": study.refine_kind(name), **study.refine_param(name)}
    return out


def _search(engine: Engine, analysis: Analysis, notes: list[str]):
    """The refinement's :class:`~doe_sr.engine.bayes.Search` and the held factors' levels."""
    from doe_sr.engine.bayes import Search, WarmTrial, in_space

    study = engine.study
    cfg = study.refine
    held = _held(study, analysis, notes)
    searched = [f for f in study.factor_names if f not in held] + [k for k in cfg.space
                                                                   if k not in study.factor_names]
    if not searched:
        raise UserError(f"refine: every factor of study {study.name!r} is held (the array found none significant) "
                        "and refine.space adds no other setting; set refine.hold: none to search them anyway")
    space = _space(study, searched)
    fixed = {f: _level_value(study, f, analysis.optimum[f]) for f in held}
    optimum = {n: (_level_value(study, n, analysis.optimum[n]) if n in study.factor_names else _base(study, n))
               for n in searched}
    codes = {f: study.factor(f).level_labels.index(analysis.optimum[f]) for f in study.factor_names}
    measured = any(r.codes == codes for r in engine.runs.values()) and all(n in study.factor_names for n in searched)
    probe = Search(space=space, fixed=fixed)
    first = None
    if not measured:
        if in_space(probe, optimum):
            first = optimum
        else:
            notes.append("the Taguchi optimum lies outside refine.space, so it is not measured by the refinement")
    try_first = []
    for k, point in enumerate(cfg.try_first):
        params = {**optimum, **{n: _typed(study, n, v) for n, v in point.items()}}
        params = {n: params[n] for n in searched}
        if not in_space(probe, params):
            raise UserError(f"refine.try_first[{k}]: {point} lies outside refine.space (or sets a held factor); "
                            "widen the space or change the point")
        try_first.append(params)
    metric = study.response.metric
    runs = dict(engine.runs)

    def warm() -> list[WarmTrial]:
        out = []
        for s in engine.progress().states:
            if s.state != State.DONE or s.value is None:
                continue
            run = runs[s.run]
            params = {n: _typed(study, n, run.factors[n]) if n in run.factors else _base(study, n) for n in searched}
            history = engine.tracker.metric_history(s.mlflow_run_id, metric) if s.mlflow_run_id else []
            out.append(WarmTrial(params=params, value=float(s.value), intermediate=tuple(history),
                                 attrs={"role": "array_run", "run": s.run, "replicate": s.replicate,
                                        "mlflow_run_id": s.mlflow_run_id, "levels": run.label(prefix="r")}))
        return out

    epochs = max([study.training.epochs] + [int(v) for v in (space.get("epochs", {}).get("choices") or [])]
                 + [int(space.get("epochs", {}).get("high") or 0)])
    search = Search(space=space, fixed=fixed, sampler=cfg.sampler, pruner=cfg.pruner,
                    seed=study.training.seed if cfg.seed is None else cfg.seed, epochs=epochs,
                    first=first, try_first=tuple(try_first), warm=warm)
    return search, {f: analysis.optimum[f] for f in held}


def refine_engine(engine: Engine, *, trials: int | None = None) -> tuple[Engine, Analysis, dict[str, str], list[str]]:
    """The engine of the study's refinement, the array's analysis, the held levels and notes.

    Refused in one line: a study without a ``refine:`` section, or whose array is not done.
    """
    from doe_sr.engine.queue import refine_campaign
    from doe_sr.workflow.analyze import study_analysis

    study = engine.study
    if study.refine is None:
        raise UserError(f"study {study.name!r} has no refine: section; add one, e.g. "
                        "refine: {trials: 20, space: {learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}}}")
    array = engine.progress()
    if array.done < array.total:
        raise UserError(f"study {study.name!r}: {array.done} of {array.total} array runs are done; the refinement "
                        f"starts from the whole array, so finish it first (`doe-sr run {engine.study_path}`)")
    if trials is not None and trials < 1:
        raise UserError(f"--trials {trials}: give at least 1")
    analysis, _ = study_analysis(engine)
    notes: list[str] = []
    search, held = _search(engine, analysis, notes)
    fingerprint = study.refine_fingerprint() + "|" + json.dumps(
        {"fixed": search.fixed, "first": search.first, "space": search.space}, sort_keys=True, default=str)
    campaign = refine_campaign(study, search, trials=trials or study.refine.trials, name=study.refine.name,
                               fingerprint=fingerprint)
    return engine.for_campaign(campaign), analysis, held, notes


def work_refine(study, *, trials: int | None = None, console=None, storage: str | None = None,
                tracking_uri: str | None = None) -> Progress:
    """Join the refinement as one worker in this process until its budget is spent (``--worker``)."""
    import sys

    from doe_sr.workflow.run import _open, work

    ref, *_ = refine_engine(_open(study, storage, tracking_uri), trials=trials)
    return work(ref, verbose="auto" if sys.stdout.isatty() else 2, console=console)


def refine_study(study, *, trials: int | None = None, workers: int = 1, gpus: list[str] | None = None,
                 force_workers: bool = False, retry_failed: bool = False, report: bool = True,
                 out: str | Path | None = None, console=None, storage: str | None = None,
                 tracking_uri: str | None = None, confirm: int = 0, verbose: int | str = "auto") -> Refined:
    """Run the refinement's trials that are not settled yet, then compare and report.

    ``confirm``: train the refined best that many times with fresh seeds (the seeds
    ``doe-sr confirm`` gives the Taguchi optimum), so the two optima are compared over
    the same seeds rather than one lucky seed against several. ``verbose``: Keras's, while
    those runs train in this process (0 keeps stdout for ``--format json``).

    Bad input (no ``refine:`` section, an unfinished array, a bad range) is refused
    before any trial trains. With trials left failed or undone, the comparison is
    skipped (the command exits 1; running it again resumes).
    """
    from doe_sr.engine.workers import launch_workers
    from doe_sr.workflow.run import _default_console, _open, local_workers

    engine = _open(study, storage, tracking_uri)
    console = console or _default_console()
    ref, analysis, held, notes = refine_engine(engine, trials=trials)
    gpus = local_workers(workers, force=force_workers) if gpus is None else gpus
    if report:
        from doe_sr.report.writer import make_folder

        make_folder(Path(out) if out else Path("reports"))
    progress = ref.prepare(retry_failed=retry_failed)
    ost = ref.queue.optuna_study
    warm = {"added": int(ost.user_attrs.get("warm_start_trials", 0)),
            "left_out": int(ost.user_attrs.get("warm_start_left_out", 0))}
    searched = list(ref.campaign.search.space)
    console.print(f"[bold]{engine.study.name}[/]: refinement {ref.campaign.name!r} with {ref.campaign.search.sampler}, "
                  f"{progress.total} trials ({progress.settled} settled), warm-started with {warm['added']} array runs"
                  + (f" ({warm['left_out']} outside the space left out)" if warm["left_out"] else "")
                  + f"; searching {', '.join(searched)}"
                  + ("; held at the Taguchi optimum: " + ", ".join(f"{f}={v}" for f, v in held.items())
                     if held else ""))
    start = time.perf_counter()
    if progress.settled < progress.total:
        try:
            launch_workers(ref, workers, console, gpus)
        except KeyboardInterrupt:
            ref.end_session(interrupted=True)
            raise
        progress = ref.end_session()
        console.print(f"refinement trials finished in {time.perf_counter() - start:.0f} s")
    outcome = Refined(ref.campaign.name, progress, held, searched, warm, notes=notes)
    if not outcome.complete:
        return outcome
    from doe_sr.workflow.refine_report import summarise, write_refine_report

    summarise(engine, ref, analysis, outcome)
    if confirm and outcome.best is not None and not outcome.best["is_taguchi_optimum"]:
        confirm_refined(ref, outcome, confirm, say=console.print, verbose=verbose)
        summarise(engine, ref, analysis, outcome)
    if report:
        write_refine_report(engine, ref, analysis, outcome, Path(out) if out else Path("reports"))
        from doe_sr.workflow.report import write_study_report

        write_study_report(engine, out=out, log=True)  # summary.md and index.html gain the refinement's section
    return outcome


CONFIRM_ROLE = "refine_confirmation"  # doe_sr.role of the refined best's fresh-seed runs
BEST_TAG = "doe_sr.refine.trial"  # on those runs: the Optuna trial (number) of the refined best they repeat


def refined_confirmations(ref: Engine, best: dict) -> list:
    """Finished fresh-seed runs of this refinement's best trial (:data:`CONFIRM_ROLE`), oldest first."""
    from doe_sr.engine.queue import REFINE_TAG

    key = ref.campaign.tags[REFINE_TAG]
    return [r for r in ref.tracker.runs(ref.study.name, role=CONFIRM_ROLE, status="FINISHED")
            if r.tags.get(REFINE_TAG) == key and r.tags.get(BEST_TAG) == str(best["optuna_number"])]


def confirm_refined(ref: Engine, outcome: Refined, replicates: int, *, say=print, verbose: int | str = "auto") -> list:
    """Train the refined best until ``replicates`` fresh-seed runs of it finished; those runs.

    Why: the refined best is the best of many trials on the validation images, with
    one seed; like the Taguchi optimum's confirmation (Ross, ch. 15), it is only
    better once it stays better with seeds it was not chosen on. The seeds are those
    of ``doe-sr confirm`` (after the array's replicates), so both optima meet the same
    seeds. Finished runs are reused: asking again trains only what is missing.
    """
    from doe_sr.core.errors import RunFailed
    from doe_sr.engine.queue import REFINE_TAG
    from doe_sr.study.design import Run

    study, best = ref.study, outcome.best
    done = refined_confirmations(ref, best)
    run = Run(run=0, factors=dict(best["params"]), codes={})
    for k in range(len(done), replicates):
        replicate = study.design.replicates + k
        try:
            value = ref.execute(run, replicate, role=CONFIRM_ROLE, run_name=f"refined best rep {k + 1}",
                                verbose=verbose,
                                tags={REFINE_TAG: ref.campaign.tags[REFINE_TAG],
                                      BEST_TAG: str(best["optuna_number"])})
        except RunFailed as exc:
            outcome.warnings.append(f"refined best rep {k + 1} failed: {exc}")
            break
        say(f"refined best rep {k + 1} (seed {study.training.seed + replicate}): {study.response.metric} = {value:.6g}")
    return refined_confirmations(ref, best)

