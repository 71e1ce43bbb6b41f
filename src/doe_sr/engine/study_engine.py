"""One study's engine: its queue (:mod:`~doe_sr.engine.queue`) and its executor
(:mod:`~doe_sr.engine.executor`) behind one object.

Why a facade: every workflow starts from "the study, its queue, its MLflow store"; the
CLI, the report, the confirmation and the comparison reach the study, its runs, the
tracker and the store lock through one object, while the logic lives in the queue and
the executor. What needs both is here: bringing the queue and the record up to date
before workers start (:meth:`Engine.prepare`), the worker loop (:meth:`Engine.run`),
and the parent run's status, which follows the queue (:meth:`Engine.end_session`).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from doe_sr.engine.executor import Executor
from doe_sr.engine.lock import StoreLock, lock_path
from doe_sr.engine.queue import Campaign, Progress, Queue, State, array_campaign, default_storage
from doe_sr.study.design import Run, build_runs
from doe_sr.study.schema import Study


@contextmanager
def _shielded() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored meanwhile (main thread only): a second signal must not
    cut short the bookkeeping of the first, nor leave the parent run half-ended."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def parent_outcome(progress: Progress, interrupted: bool) -> tuple[str, str | None]:
    """The parent run's end status and reason when the study stops with nothing running.

    The same verdict as ``doe-sr run``'s exit code: every run done is FINISHED (exit
    0); runs left failed or undone are FAILED (exit 1, ``--retry-failed`` resumes);
    a session stopped by Ctrl-C or SIGTERM is KILLED (exit 130).
    """
    done, total = progress.settled, progress.total
    if interrupted:
        return "KILLED", f"interrupted (Ctrl-C or SIGTERM) with {done} of {total} runs done"
    if done == total:
        return "FINISHED", None
    failed = progress.count(State.FAILED)
    return "FAILED", (f"{total - done} of {total} runs not done ({failed} failed); `doe-sr status` lists why, "
                      "`doe-sr run --retry-failed` runs them again")


class Engine:
    """Runs what is not complete yet of one study."""

    def __init__(self, study: Study, study_path: Path | None = None, *, storage: str | None = None,
                 tracking_uri: str | None = None, campaign: Campaign | None = None):
        self.study = study
        self.study_path = study_path
        self.storage_url = storage or default_storage(study)
        self.tracking_uri = tracking_uri or study.tracking.uri
        if campaign is None:
            campaign = array_campaign(study, {r.run: r for r in build_runs(study)})
        self.campaign = campaign
        self.runs: dict[int, Run] = campaign.runs
        self.lock = StoreLock(lock_path(study, self.storage_url, self.tracking_uri))
        self.queue = Queue(study, self.runs, self.storage_url, self.lock, campaign)
        self.executor = Executor(study, self.queue, runs=self.runs, tracking_uri=self.tracking_uri,
                                 study_path=study_path, lock=self.lock)
        self._working = False  # this session marked the parent RUNNING (see prepare)

    def for_campaign(self, campaign: Campaign) -> Engine:
        """The engine of another campaign of the same study (a validation set), on the same stores."""
        return Engine(self.study, self.study_path, storage=self.storage_url, tracking_uri=self.tracking_uri,
                      campaign=campaign)

    # -- what callers reach through the engine --------------------------------------------
    @property
    def tracker(self):
        return self.executor.tracker

    @property
    def accept_new_data(self) -> bool:
        """``doe-sr run --accept-new-data``: go on with images other than the finished runs used."""
        return self.executor.accept_new_data

    @accept_new_data.setter
    def accept_new_data(self, value: bool) -> None:
        self.executor.accept_new_data = value

    @property
    def parent_id(self) -> str | None:
        return self.executor.parent_id

    def splits(self):
        return self.executor.splits()

    def ensure_parent(self) -> str:
        return self.executor.ensure_parent()

    def bicubic_baseline(self) -> dict[str, float]:
        return self.executor.bicubic_baseline()

    def run_params(self, run: Run) -> dict[str, object]:
        return self.executor.run_params(run)

    def execute(self, run: Run, replicate: int, **kwargs) -> float:
        """Train one run outside the queue (a confirmation run, a benchmark); see :meth:`Executor.execute`."""
        return self.executor.execute(run, replicate, **kwargs)

    # -- state -----------------------------------------------------------------------------
    def progress(self) -> Progress:
        """State of every (run, replicate), read from the queue."""
        return self.queue.progress()

    def refresh(self) -> Progress:
        """Fail trials whose worker stopped beating or, on this host, died (their copies go
        back in the queue), close their MLflow runs, and return the progress."""
        self.queue.fail_dead()
        self.executor.close_orphans()
        return self.progress()

    def prepare(self, *, retry_failed: bool = False) -> Progress:
        """Bring the queue up to date before workers start; return the progress.

        Stale trials are failed (and retried), orphaned MLflow runs closed, interrupted
        (and, if asked, failed) pairs queued again, and a queue whose finished runs the
        MLflow store lost is refused. When work is left, the data are loaded (bad data
        fail here, before any trial is taken), each distinct network is built and run on
        a dummy input (a builder that fails, fails the study here) and the MLflow parent run and bicubic
        baseline are created once, under the store lock, so concurrent sessions and
        workers never race to. When runs are queued or running, the parent is marked
        RUNNING: this session works on the study until :meth:`end_session`.
        """
        with self.lock:  # two sessions starting at once must not both requeue a pair
            self.refresh()
            self.queue.requeue(retry_failed)
            progress = self.progress()
            self.executor.check_record(progress)
        if progress.settled < progress.total:
            self.splits()
            if self.executor.parent_id is None:  # each network built once, before anything is recorded
                self.executor.check_models()
            with self.lock:  # one parent run per study, whoever comes first
                self.ensure_parent()
                if self.campaign.kind != "array":  # what the record already holds is not trained again
                    self.executor.reuse_recorded(progress)
                    progress = self.progress()
                if progress.todo or progress.count(State.RUNNING):
                    self.executor.start_parent()
                    self._working = True
        return progress

    def end_session(self, *, interrupted: bool = False) -> Progress:
        """This session stops working on the study: end the parent run if the study stopped; the progress.

        The parent ends (now) once no trial is running anywhere: FINISHED, FAILED or
        KILLED as :func:`parent_outcome` says. While another session's workers still
        run trials it stays RUNNING, and the last of them ends it. Dead workers' trials
        are failed first (:meth:`refresh`), so a killed worker does not keep the study
        running. A session that never started work (:meth:`prepare` found nothing to
        do) leaves the parent as it is.
        """
        with _shielded(), self.lock:
            progress = self.refresh()
            if self._working and not self.queue.has_running():
                self.executor.end_parent(*self._outcome(progress, interrupted))
        return progress

    def _outcome(self, progress: Progress, interrupted: bool) -> tuple[str, str | None]:
        """The parent's end status: the array's outcome, and a campaign's own once the array is done.

        Why the array's too: the parent stands for the study, so a finished validation
        set does not make a study whose array runs failed read FINISHED.
        """
        if self.campaign.kind == "array":
            return parent_outcome(progress, interrupted)
        array = Queue(self.study, {r.run: r for r in build_runs(self.study)}, self.storage_url, self.lock)
        status, reason = parent_outcome(array.progress(), interrupted)
        if status != "FINISHED":
            return status, reason
        status, reason = parent_outcome(progress, interrupted)
        if reason and status == "FAILED":
            reason = f"{self.campaign.kind} set {self.campaign.name!r}: {reason.split(';')[0]}"
        return status, reason

    def run(self, *, retry_failed: bool = False, wait: bool = True, poll: float | None = None,
            verbose: int | str = "auto", on_change: Callable[[Progress], None] | None = None) -> Progress:
        """Execute queued (run, replicate) pairs until none is left; return the final progress.

        ``wait``: when the queue is empty but other workers still hold running trials,
        keep polling (every ``poll`` s, default the heartbeat interval): if their
        heartbeats stop, their trials come back to the queue and this worker runs them.
        """
        before = self.prepare(retry_failed=retry_failed)
        if before.settled == before.total:
            return before
        poll = poll if poll is not None else float(self.study.execution.heartbeat_interval)
        try:
            while True:
                taken = self.queue.take()
                if taken is None:
                    self.refresh()
                    if wait and self.queue.has_running():
                        time.sleep(poll)
                        continue
                    if self.queue.has_queued():
                        continue  # a stale trial was just retried
                    break
                if on_change is not None:
                    on_change(self.progress())
                self.executor.run_taken(taken, verbose)
                if on_change is not None:
                    on_change(self.progress())
        except KeyboardInterrupt:
            self.end_session(interrupted=True)
            raise
        return self.end_session()
