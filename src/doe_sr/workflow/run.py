"""Running a study: what ``doe-sr run``, ``doe-sr worker`` and ``doe-sr status`` do, callable from Python.

Every function takes a study file's path or an engine already opened
(:func:`doe_sr.workflow.session.open_study`), and says what it does on ``console``
(anything with rich's ``print``; a plain rich console by default), so a notebook user
sees the same lines as the command.

A second ``run`` of a study that is already running joins it: its workers take what is
still queued (the queue hands each pair to one worker only), it says so in one line,
and both sessions end when the queue is empty. Why join rather than refuse: that is
what a second ``doe-sr worker`` does, it is what a researcher who starts the study
again on a free GPU wants, and "already running" cannot be told reliably from a session
that has only just started.

The study's MLflow parent run follows the sessions: RUNNING from the start of the one
that begins work until its last run ends, then FINISHED, FAILED (runs left failed or
undone: exit code 1) or KILLED (Ctrl-C or SIGTERM: exit code 130). A session that stops
while another session's workers still run leaves it RUNNING for them to end (see
:meth:`doe_sr.engine.study_engine.Engine.end_session`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from doe_sr.engine.progress import summary
from doe_sr.engine.queue import Progress, State, worker_id
from doe_sr.engine.study_engine import Engine
from doe_sr.engine.workers import check_workers, cpus, launch_workers, visible_gpus


def _open(study: str | Path | Engine, storage: str | None, tracking_uri: str | None) -> Engine:
    if isinstance(study, Engine):
        return study
    from doe_sr.workflow.session import open_study

    return open_study(study, storage=storage, tracking_uri=tracking_uri)


def _default_console():
    from rich.console import Console

    return Console(highlight=False)


def local_workers(workers: int, *, force: bool = False) -> list[str]:
    """The GPUs local workers get, after refusing a ``workers`` count this machine cannot use."""
    gpus = visible_gpus()
    check_workers(workers, gpus, cpus(), force)
    return gpus


def run_study(study: str | Path | Engine, *, workers: int = 1, gpus: list[str] | None = None,
              force_workers: bool = False, retry_failed: bool = False, accept_new_data: bool = False,
              console=None, storage: str | None = None, tracking_uri: str | None = None) -> Progress:
    """Train every run of the study that is not done yet with ``workers`` local processes; the final progress.

    ``gpus``: those the workers are spread over (default: :func:`local_workers`).
    """
    engine = _open(study, storage, tracking_uri)
    engine.accept_new_data = accept_new_data
    gpus = local_workers(workers, force=force_workers) if gpus is None else gpus
    console = console or _default_console()
    progress = engine.prepare(retry_failed=retry_failed)
    if progress.done == progress.total:
        console.print(f"[bold]{engine.study.name}[/]: all {progress.total} runs are already done; nothing to train.")
        return progress
    console.print(f"[bold]{engine.study.name}[/]: {engine.study.design.array}, "
                  f"{progress.total - progress.done} of {progress.total} runs to do; "
                  f"storage {engine.storage_url}, tracking {engine.tracker.uri}")
    try:
        running = [s for s in progress.states if s.state == State.RUNNING]
        if running:
            console.print(f"{len(running)} run(s) already running (workers "
                          f"{', '.join(sorted({s.worker for s in running if s.worker}))}); joining them")
        start = time.perf_counter()
        launch_workers(engine, workers, console, gpus)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the workers have stopped; the parent run is KILLED
        engine.end_session(interrupted=True)
        raise
    progress = engine.end_session()  # the workers normally ended the parent run already
    console.print(f"finished in {time.perf_counter() - start:.0f} s")
    return progress


def work(study: str | Path | Engine, *, verbose: int | str | None = None, console=None,
         storage: str | None = None, tracking_uri: str | None = None) -> Progress:
    """Join the study as one worker in this process until its queue is empty; the final progress.

    ``verbose``: Keras's; by default a progress bar on a terminal, one line per epoch in a log.
    """
    engine = _open(study, storage, tracking_uri)
    console = console or _default_console()
    console.print(f"worker {worker_id()} joins {engine.study.name!r}: storage {engine.storage_url}, "
                  f"tracking {engine.tracking_uri}")
    start = time.monotonic()
    verbose = ("auto" if sys.stdout.isatty() else 2) if verbose is None else verbose
    progress = engine.run(verbose=verbose, on_change=lambda p: console.print(summary(p, 1, time.monotonic() - start)))
    console.print(f"worker {worker_id()}: no queued run left; {summary(progress, 1, time.monotonic() - start)}")
    return progress


def study_status(study: str | Path | Engine, *, storage: str | None = None,
                 tracking_uri: str | None = None) -> Progress:
    """Every (run, replicate) of the study by state, after failing the trials of dead workers.

    Each pair also carries ``flag`` and ``flag_cause`` (empty strings unless its finished
    run is degenerate, see :mod:`doe_sr.analysis.degenerate`), so ``status`` and its JSON
    show them. They are set as attributes of each :class:`~doe_sr.engine.queue.RunState`,
    whose ``to_dict`` writes every attribute.
    """
    engine = _open(study, storage, tracking_uri)
    progress = engine.refresh()
    attach_flags(engine, progress)
    return progress


def attach_flags(engine: Engine, progress: Progress) -> None:
    """Set ``flag``/``flag_cause`` on every pair of ``progress``: its finished MLflow run's flag
    (found by run id, else by run and replicate), empty for other states and healthy runs."""
    from doe_sr.tracking.store import REPLICATE, RUN
    from doe_sr.workflow.session import run_flags

    done = [s for s in progress.states if s.state == State.DONE]
    flags = run_flags(engine) if done else {}
    by_pair = {}
    if any(s.mlflow_run_id not in flags for s in done):
        by_pair = {(int(r.tags.get(RUN, 0)), int(r.tags.get(REPLICATE, 0))): flags.get(r.run_id)
                   for r in engine.tracker.runs(engine.study.name, status="FINISHED")}
    for s in progress.states:
        flag = None
        if s.state == State.DONE:
            flag = flags[s.mlflow_run_id] if s.mlflow_run_id in flags else by_pair.get((s.run, s.replicate))
        s.flag = flag.kind if flag else ""
        s.flag_cause = flag.cause if flag else ""
