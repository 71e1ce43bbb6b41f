"""Confirm a study's predicted optimum: what ``doe-sr confirm`` does.

Taguchi's loop closes with a confirmation experiment (Ross, *Taguchi Techniques for
Quality Engineering*, 2nd ed., ch. 15; Phadke, ch. 5): train the predicted optimum a few
more times and check that the observed mean falls inside the additive model's
confirmation interval (:func:`doe_sr.analysis.confirmation.judge_confirmation`). Outside
means the main-effect model missed something (an interaction, a curved effect), so the
"optimum" is not trusted.

The steps: analyze the array runs, find the optimum's confirmation runs that already
finished (reused: asking again does not train again), train the missing ones through
the engine (role ``confirmation``, so they never enter the array analysis), judge,
record the verdict as tags and metrics on the study's parent run, and update the
report and the analysis filed with the parent run (:mod:`doe_sr.workflow.publish`). The CLI only parses and prints; a notebook calls :func:`confirm_optimum`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from doe_sr.analysis.confirmation import Confirmation, ConfirmationRun, judge_confirmation
from doe_sr.core.errors import RunFailed, UserError
from doe_sr.workflow.analyze import study_analysis

__all__ = ["CONFIRMATION_RUN", "OPTIMUM_TAG", "POOLED_TAG", "RUNS_TAG", "VERDICT_TAG", "confirm_optimum",
           "finished_confirmations", "log_verdict", "optimum_run", "verdict_metrics", "verdict_tags"]

#: Parent-run tags and metrics that record a confirmation verdict in MLflow.
VERDICT_TAG = "doe_sr.confirmation.verdict"
OPTIMUM_TAG = "doe_sr.confirmation.optimum"
POOLED_TAG = "doe_sr.confirmation.pooled"
RUNS_TAG = "doe_sr.confirmation.run_ids"

#: The run number of a confirmation run. 0 is never a row of an orthogonal array
#: (rows are numbered from 1), so a confirmation run cannot be mistaken for an array run
#: even when the optimum coincides with one of the array's rows.
CONFIRMATION_RUN = 0


def optimum_run(study, optimum: dict[str, str]):
    """The :class:`~doe_sr.study.design.Run` of the predicted optimum (run number ``CONFIRMATION_RUN``).

    Codes are the level indices in the study file, so it trains exactly like an array
    run with those levels, whether or not the combination is a row of the array.
    """
    from doe_sr.study.design import Run

    codes = {f: study.factor(f).level_labels.index(optimum[f]) for f in study.factor_names}
    values = {f: study.factor(f).levels[codes[f]] for f in study.factor_names}
    return Run(run=CONFIRMATION_RUN, factors=values, codes=codes)


def finished_confirmations(engine, optimum: dict[str, str], metric: str) -> list[ConfirmationRun]:
    """Finished confirmation runs of this study at this optimum, oldest first."""
    from doe_sr.tracking.store import REPLICATE

    out = []
    for r in engine.tracker.runs(engine.study.name, role="confirmation"):
        if r.status != "FINISHED" or metric not in r.metrics:
            continue
        if any(r.params.get(f) != level for f, level in optimum.items()):
            continue  # confirmed an earlier optimum (the array results changed since)
        out.append(ConfirmationRun(run_id=r.run_id, replicate=int(r.tags.get(REPLICATE, 0)),
                                   value=float(r.metrics[metric])))
    return out


def _array_row_of(engine, run) -> int | None:
    for r in engine.runs.values():
        if r.codes == run.codes:
            return r.run
    return None


def verdict_tags(confirmation: Confirmation) -> dict[str, str]:
    """The verdict as parent-run tags (what the MLflow UI's run list shows)."""
    return {
        VERDICT_TAG: confirmation.verdict.word,
        OPTIMUM_TAG: ", ".join(f"{f}={lvl}" for f, lvl in confirmation.optimum.items()),
        POOLED_TAG: ", ".join(confirmation.pooled) or "none",
        RUNS_TAG: ", ".join(d.run_id for d in confirmation.runs),
    }


def verdict_metrics(confirmation: Confirmation) -> dict[str, float | None]:
    """The verdict's numbers as parent-run metrics (None: not logged)."""
    v = confirmation.verdict
    interval = v.interval or [None, None]
    sn_interval = v.sn_interval or [None, None]
    return {
        "confirmation_r": v.r,
        "confirmation_observed_mean": v.observed_mean,
        "confirmation_predicted_mean": v.predicted_mean,
        "confirmation_ci_low": interval[0], "confirmation_ci_high": interval[1],
        "confirmation_inside": None if v.inside is None else float(v.inside),
        "confirmation_observed_sn": v.observed_sn,
        "confirmation_predicted_sn": v.predicted_sn,
        "confirmation_sn_ci_low": sn_interval[0], "confirmation_sn_ci_high": sn_interval[1],
        "confirmation_sn_inside": None if v.sn_inside is None else float(v.sn_inside),
    }


def log_verdict(engine, confirmation: Confirmation) -> None:
    """Tags and metrics on the study's parent run, so the MLflow UI shows the verdict."""
    parent = engine.tracker.find_parent(engine.study.name)
    if parent is None:
        return
    engine.tracker.set_tags(parent, verdict_tags(confirmation))
    engine.tracker.log_metrics(parent, verdict_metrics(confirmation))


def update_report(engine, confirmation: Confirmation, *, pool=None, impute: str | None = None,
                  out: str | Path | None = None) -> None:
    """Write confirmation.json/.md beside the study's report, refresh summary.md and
    index.html, and file them and the analysis with the parent run (so its copy of the
    report shows the verdict too)."""
    from doe_sr.report.writer import write_confirmation
    from doe_sr.workflow.report import report_folder, write_study_report

    write_confirmation(report_folder(engine.study, out), confirmation)
    write_study_report(engine, pool=pool, impute=impute, out=out, log=True)


def _stdout(line: str) -> None:
    print(line)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def confirm_optimum(engine, *, replicates: int = 3, pool="auto", impute: str | None = None,
                    verbose: int | str = "auto", report: bool = True, out: str | Path | None = None,
                    say: Callable[[str], None] = _stdout,
                    warn: Callable[[str], None] = _stderr) -> Confirmation | None:
    """Train the predicted optimum until ``replicates`` confirmation runs finished, judge them,
    log the verdict on the parent run and (with ``report``) update ``out``/<study>.

    ``say`` gets the progress lines, ``warn`` a failed run's line. Returns None when a
    confirmation run failed (nothing is judged or recorded then).
    """
    if replicates < 1:
        raise UserError("--replicates must be at least 1")
    study = engine.study
    metric = study.response.metric
    analysis, _ = study_analysis(engine, pool=pool, impute=impute)
    if not analysis.predicted.has_interval:
        raise UserError(
            f"study {study.name!r} has no error estimate (a saturated {study.design.array} without "
            "replicates or pooling), so no confirmation interval exists; use --pool auto or pool named factors")
    run = optimum_run(study, analysis.optimum)
    in_array = _array_row_of(engine, run)
    done = finished_confirmations(engine, analysis.optimum, metric)
    where = f"row {in_array} of the array" if in_array else f"not a row of the {study.design.array} array"
    say(f"{study.name}: confirming the predicted optimum "
        + ", ".join(f"{f}={lvl}" for f, lvl in analysis.optimum.items())
        + f" ({where}; levels by S/N" + (f", pooled: {', '.join(analysis.pooled)}" if analysis.pooled else "")
        + ")")
    if done:
        say(f"reusing {min(len(done), replicates)} finished confirmation run(s)")
    done = done[:replicates]
    for k in range(len(done), replicates):
        # Fresh seeds, after the array's replicates: a confirmation must be a new
        # experiment, not a re-run of seed 0 (which would repeat an array run exactly
        # when the optimum is a row of the array).
        replicate = study.design.replicates + k
        try:
            value = engine.execute(run, replicate, role="confirmation", run_name=f"confirmation rep {k + 1}",
                                   verbose=verbose)
        except RunFailed as exc:
            warn(f"doe-sr: confirmation rep {k + 1} failed: {exc}")
            return None
        done = finished_confirmations(engine, analysis.optimum, metric)[:replicates]
        say(f"confirmation rep {k + 1}: {metric} = {value:.6g}")
    if not done:
        return None
    confirmation = Confirmation(
        study=study.name, response=metric, objective=analysis.objective, optimum=analysis.optimum,
        array_row=in_array, run=CONFIRMATION_RUN, pooled=analysis.pooled, runs=done,
        verdict=judge_confirmation(analysis, [d.value for d in done]),
    )
    log_verdict(engine, confirmation)
    if report:
        update_report(engine, confirmation, pool=pool, impute=impute, out=out)
    else:
        from doe_sr.workflow.publish import publish_analysis

        publish_analysis(engine, analysis)
    return confirmation
