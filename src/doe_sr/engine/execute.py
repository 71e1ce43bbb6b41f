"""Optuna as the run engine: one enqueued trial per (array run, replicate).

Why Optuna for a fixed design: its storages already solve what an overnight study
needs. The storage persists, so a study resumes after a crash; heartbeats mark the
trial of a dead worker stale and Optuna's ``RetryHeartbeatStaleTrialCallback`` puts a
copy back in the queue. The design, not a sampler, decides the parameters: every trial
is enqueued up front with its run number and replicate as user attributes, and a
worker only ever takes a *queued* trial (never ``study.ask()``, which would create a
fresh, design-less trial when another worker took the last queued one first).

Exactly once: a queued trial is taken by a compare-and-set on its state (WAITING ->
RUNNING) inside one storage transaction. PostgreSQL and MySQL lock the row
(``SELECT ... FOR UPDATE``); SQLite has no row locks and Python's sqlite3 driver only
opens a transaction at the first write, so two processes could both read WAITING and
both "take" the trial. :func:`open_storage` therefore makes every SQLite transaction
``BEGIN IMMEDIATE`` (SQLAlchemy's documented pysqlite recipe), which serialises them.
A (run, replicate) enqueued twice (two sessions requeued it at once) is run by its
lowest-numbered live trial; the other copy is closed as PRUNED with ``duplicate_of``.

States of a (run, replicate): done (a COMPLETE trial), queued (WAITING), running
(RUNNING), failed (FAIL with a reason: diverged, out of memory, an exception; re-run
only with ``retry_failed``) or interrupted (Ctrl-C or a dead worker: re-run by the next
``doe-sr run``, or by a surviving worker once the heartbeat is stale). MLflow holds the
record; Optuna holds the queue.

Two stores cannot be written in one transaction, so a worker killed between two writes
leaves them disagreeing; each child run is therefore tagged with its trial, its (run,
replicate) and its worker (``host:pid``), and the handshake is recoverable from either
side (:meth:`Engine.refresh`, :meth:`Engine._adopt`): a FINISHED child whose trial was
never told complete is adopted instead of trained again, and a RUNNING child whose
worker is gone is closed as KILLED, found by its tags.

Local SQLite stores are created or upgraded once, under a file lock in the study's
folder (:class:`StoreLock`), before anything else opens them, and the parent run is
found-or-created under the same lock, so concurrent ``doe-sr run`` of one study neither
race through schema migrations nor make two parents.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from doe_sr.study.design import Run, build_runs
from doe_sr.core.errors import RunFailed, UserError
from doe_sr.study.schema import Study

log = logging.getLogger("doe_sr")

FAILURE = "failure"  # trial user attr: why a trial failed
INTERRUPTED = "interrupted"
WORKER = "worker"  # trial user attr: host:pid of the process that runs it
DUPLICATE = "duplicate_of"  # trial user attr: number of the trial that runs this pair instead
ADOPTED = "adopted"  # trial user attr: True when the trial took over a FINISHED child instead of training
#: test-only: ``after-child-created`` or ``after-child-finished`` makes a worker SIGKILL itself
#: at that point, to reproduce the windows between the MLflow and Optuna writes
TEST_DIE_AT = "DOE_SR_TEST_DIE_AT"


def local_folder(study: Study) -> Path:
    """The study's local folder: ``tracking.uri`` when it is a path, else ``./mlruns``.

    Holds the default Optuna database and the worker logs.
    """
    uri = study.tracking.uri
    folder = Path("mlruns") if "://" in uri else Path(uri).expanduser()
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def default_storage(study: Study) -> str:
    """The study's Optuna storage URL: ``execution.storage`` or SQLite beside the MLflow store."""
    if study.execution.storage:
        return study.execution.storage
    return f"sqlite:///{local_folder(study) / 'optuna.db'}"


def _serialise_sqlite(engine) -> None:
    """Make every transaction on an SQLite engine ``BEGIN IMMEDIATE``.

    Why: pysqlite starts a transaction lazily at the first write, so Optuna's
    read-check-write of a trial's state is not atomic across processes (measured: four
    processes taking 300 queued trials took 41 of them twice). With an immediate
    transaction the reserved lock is held from the read on, and the second process
    waits (busy timeout) and then sees RUNNING. Recipe from SQLAlchemy's pysqlite docs
    ("Serializable isolation / Savepoints / Transactional DDL").
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while Optuna created the schema lack the hooks


def open_storage(url: str, study: Study):
    """An Optuna RDB storage with heartbeats, so the trial of a dead worker is retried.

    SQLite is the local default, safe for several processes on one machine (see
    :func:`_serialise_sqlite`); any SQLAlchemy URL works, PostgreSQL above all for many
    machines (``postgresql+psycopg2://user:password@host:5432/db``).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sqlite = url.startswith("sqlite")
    if sqlite:
        _check_sqlite_file(url, "Optuna")
    engine_kwargs = {"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True}
    try:
        storage = _create_storage(url, engine_kwargs, study)
    except Exception as exc:  # bad URL, unreachable server, missing driver
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if sqlite and _is_corrupt_sqlite(exc):
            _check_sqlite_file(url, "Optuna", corrupt=first)
        raise UserError(f"execution.storage: cannot open Optuna storage {url!r} ({first}); "
                        "check the URL and that the database server is reachable") from None
    if sqlite:
        _serialise_sqlite(storage.engine)
    return storage


#: What Optuna raises when another process (a worker, optuna-dashboard, a script reading the
#: study) creates the same schema at the same moment: the loser's insert of the schema version
#: or its ``CREATE TABLE`` fails although the storage is fine a moment later.
_CONCURRENT_SCHEMA = ("UNIQUE constraint failed: alembic_version", "duplicate key value", "already exists",
                      "database is locked")


def _create_storage(url: str, engine_kwargs: dict, study: Study, attempts: int = 10):
    """``RDBStorage(url)``, retried while another process is creating the same schema.

    Why: a reader that opened a new ``optuna.db`` a few milliseconds after the engine
    made the engine's schema creation fail with ``UNIQUE constraint failed:
    alembic_version.version_num`` and ``doe-sr run`` exit 2 (seen in CI, where a test
    polls the store while the study starts).
    """
    from optuna.storages import RDBStorage

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # Optuna flags its (years-stable) heartbeat API as experimental
                warnings.simplefilter("ignore")
                return RDBStorage(
                    url, engine_kwargs=engine_kwargs,
                    heartbeat_interval=study.execution.heartbeat_interval,
                    grace_period=study.execution.grace_period,
                    heartbeat_stale_trial_callback=_retry_stale(max_retry=3),
                )
        except Exception as exc:
            if attempt + 1 == attempts or not any(m in str(exc) for m in _CONCURRENT_SCHEMA):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _retry_stale(max_retry: int):
    """Optuna's ``RetryHeartbeatStaleTrialCallback``, whose queued copy carries only the pair's identity.

    Why: Optuna's copy inherits every user attribute, the dead worker's ``host:pid``
    included, and a worker that has just taken the copy (before it writes its own
    ``host:pid``) would then look dead to :meth:`Engine._fail_dead_local`.
    """
    import copy

    from optuna.storages import RetryHeartbeatStaleTrialCallback

    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def callback(study, trial) -> None:
        trial = copy.copy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in ("run", "replicate")}
        retry(study, trial)

    return callback


def _check_sqlite_file(url: str, what: str, corrupt: str = "") -> None:
    """Refuse a damaged SQLite store file at ``url`` in one line (see :func:`refuse_damaged_sqlite`)."""
    from doe_sr.tracking.store import refuse_damaged_sqlite, sqlite_path

    refuse_damaged_sqlite(sqlite_path(url), what, corrupt)


def _is_corrupt_sqlite(exc: BaseException) -> bool:
    """True when SQLite said the file is not a (sound) database, rather than that it cannot open it."""
    import sqlite3

    orig = getattr(exc, "orig", exc)
    return type(orig) is sqlite3.DatabaseError  # OperationalError (locked, cannot open) is a subclass


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_gone(worker: str) -> bool:
    """True when ``worker`` (``host:pid``) ran on this host and that process no longer lives.

    Only a local process can be checked; a worker on another machine is gone only once
    its trial's heartbeat is stale. A zombie (killed, not yet reaped by ``doe-sr run``)
    counts as gone. A reused pid reads as alive: the safe side, the heartbeat decides.
    """
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _test_die_at(point: str) -> None:
    """Test-only hook: die by SIGKILL at ``point`` (see ``TEST_DIE_AT``) to reproduce a kill window."""
    if os.environ.get(TEST_DIE_AT) == point:
        os.kill(os.getpid(), signal.SIGKILL)


class StoreLock:
    """An exclusive ``flock`` on ``path`` (re-entrant in one process); ``None`` locks nothing.

    Why: MLflow migrates a fresh SQLite store and Optuna creates its schema without any
    lock between processes, so two ``doe-sr run`` started together crashed in the
    migration (``duplicate column name``) or made two parent runs. Holding this lock
    while a process opens the stores and finds-or-creates the parent makes the first
    one do it and the others find it done. A server store (PostgreSQL, ``mlflow
    server``) needs no file lock: its own transactions serialise the writes.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self._depth = 0
        self._fd: int | None = None
        self._mutex = threading.RLock()

    def __enter__(self) -> "StoreLock":
        if self.path is None:
            return self
        self._mutex.acquire()
        if self._depth == 0:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                self._mutex.release()
                raise
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        if self.path is None:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        self._mutex.release()


@dataclass
class RunState:
    run: int
    replicate: int
    state: str  # done | queued | running | failed | interrupted | pending
    value: float | None = None
    reason: str = ""
    mlflow_run_id: str = ""
    seconds: float | None = None
    started: str = ""  # ISO time the newest trial of the pair started (running/done)
    worker: str = ""  # host:pid that runs or ran it


@dataclass
class Progress:
    """Counts of a study's (run, replicate) pairs by state."""

    states: list[RunState] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for s in self.states if s.state == state)

    @property
    def total(self) -> int:
        return len(self.states)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def todo(self) -> int:
        """Pairs some worker will still take: queued, pending or interrupted."""
        return sum(1 for s in self.states if s.state in ("queued", "pending", "interrupted"))

    def eta(self, workers: int, now: datetime | None = None) -> float | None:
        """Seconds until every pair is done or failed, from the mean duration of done runs.

        Work left = the rest of each running run (mean minus its elapsed time, at least
        0) plus the mean for each pair not started, shared by ``workers`` (at least one).
        ``None`` until a run has finished.
        """
        durations = [s.seconds for s in self.states if s.state == "done" and s.seconds is not None]
        if not durations:
            return None
        mean = sum(durations) / len(durations)
        now = now or datetime.now()
        left = mean * self.todo
        for s in self.states:
            if s.state == "running" and s.started:
                left += max(mean - (now - datetime.fromisoformat(s.started)).total_seconds(), 0.0)
        return left / max(workers, 1)


class _Heartbeat:
    """Records a trial's heartbeat every ``interval`` s in a daemon thread.

    Why our own thread: the engine takes queued trials itself instead of going through
    ``Study.optimize`` (see the module docstring), so it also keeps them alive itself,
    with the storage's public ``record_heartbeat``. A killed process stops beating and
    ``fail_stale_trials`` (any other process) retries its trial after the grace period.
    """

    def __init__(self, storage, trial_id: int, interval: float):
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as exc:  # a database hiccup must not kill the run; the next beat retries
                log.warning("heartbeat of trial %s failed: %s", self._trial_id, exc)

    def __enter__(self) -> "_Heartbeat":
        self._storage.record_heartbeat(self._trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class _Taken:
    """A queued trial this process took: what ``execute`` needs of an Optuna trial."""

    storage: object
    trial_id: int
    number: int
    run: int
    replicate: int

    def set_user_attr(self, key: str, value) -> None:
        self.storage.set_trial_user_attr(self.trial_id, key, value)


def _ignore_sigint() -> None:
    """A second Ctrl-C must not interrupt the bookkeeping of the first."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class Engine:
    """Runs what is not complete yet of one study."""

    def __init__(self, study: Study, study_path: Path | None = None, *, storage: str | None = None,
                 tracking_uri: str | None = None):
        self.study = study
        self.study_path = study_path
        self.storage_url = storage or default_storage(study)
        self.tracking_uri = tracking_uri or study.tracking.uri
        self.runs: dict[int, Run] = {r.run: r for r in build_runs(study)}
        self._optuna = None
        self._storage = None
        self._tracker = None
        self._splits = None
        self.parent_id: str | None = None
        self.lock = StoreLock(self._lock_path())

    def _lock_path(self) -> Path | None:
        """The lock file of the study's local SQLite stores (None when both stores are servers)."""
        if "://" not in self.tracking_uri:
            folder = Path(self.tracking_uri).expanduser().resolve()
        elif self.storage_url.startswith("sqlite") or self.tracking_uri.startswith("sqlite"):
            folder = local_folder(self.study)
        else:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        return folder / ".doe-sr.lock"

    # -- storage -------------------------------------------------------------------
    @property
    def optuna_study(self):
        if self._optuna is None:
            with self.lock:  # one process creates the schema and enqueues the design
                self._optuna = self._open_optuna()
        return self._optuna

    @property
    def storage(self):
        self.optuna_study
        return self._storage

    @property
    def study_id(self) -> int:
        return self.storage.get_study_id_from_name(self.study.name)

    def _open_optuna(self):
        import optuna

        self._storage = open_storage(self.storage_url, self.study)
        direction = "minimize" if self.study.response.objective == "smaller" else "maximize"
        ost = optuna.create_study(study_name=self.study.name, storage=self._storage, direction=direction,
                                  load_if_exists=True)
        fingerprint = self.study.fingerprint()
        stored = ost.user_attrs.get("fingerprint")
        if stored is not None and stored != fingerprint:
            # A corrected study reuses its store while the store holds no result: every trial
            # failed, was interrupted or is still queued (say a patch too large for the
            # images). The stored queue is replaced; MLflow keeps the record of failed runs.
            from optuna.storages import fail_stale_trials
            from optuna.trial import TrialState

            fail_stale_trials(ost)  # a dead worker's trial is not "in progress"
            states = [t.state for t in ost.get_trials(deepcopy=False)]
            done, running = states.count(TrialState.COMPLETE), states.count(TrialState.RUNNING)
            if done or running:
                held = f"{done} finished run(s)" if done else f"{running} run(s) in progress"
                raise UserError(
                    f"study {self.study.name!r} already exists in {self.storage_url} with another design or "
                    f"settings and {held}; give the changed study a new name, or delete its storage to start over")
            log.warning("study %r: no run of its earlier settings finished; its queue is replaced by the "
                        "changed study's", self.study.name)
            optuna.delete_study(study_name=self.study.name, storage=self._storage)
            ost = optuna.create_study(study_name=self.study.name, storage=self._storage, direction=direction,
                                      load_if_exists=True)
            stored = None
        if stored is None:
            ost.set_user_attr("fingerprint", fingerprint)
            ost.set_user_attr("array", self.study.design.array)
            # Enqueue in a stable order; a concurrent first start on another machine may
            # enqueue twice, which taking resolves (see _duplicate_of).
            if not ost.get_trials(deepcopy=False):
                for run in self.runs.values():
                    for rep in range(self.study.design.replicates):
                        ost.enqueue_trial({}, user_attrs={"run": run.run, "replicate": rep},
                                          skip_if_exists=False)
        return ost

    @property
    def tracker(self):
        if self._tracker is None:
            from doe_sr.tracking.store import Tracker

            with self.lock:  # one process creates or migrates a local MLflow store
                self._tracker = Tracker(self.tracking_uri, self.study.experiment)
        return self._tracker

    # -- state ---------------------------------------------------------------------
    def progress(self) -> Progress:
        """State of every (run, replicate), from the Optuna trials (the most advanced trial wins)."""
        from optuna.trial import TrialState

        by_pair: dict[tuple[int, int], RunState] = {}
        rank = {"done": 5, "running": 4, "queued": 3, "failed": 2, "interrupted": 1, "pending": 0}
        for t in self.optuna_study.get_trials(deepcopy=False):
            if "run" not in t.user_attrs or DUPLICATE in t.user_attrs:
                continue
            key = (int(t.user_attrs["run"]), int(t.user_attrs["replicate"]))
            reason = str(t.user_attrs.get(FAILURE, ""))
            if t.state == TrialState.COMPLETE:
                state, reason = "done", ""
            elif t.state == TrialState.RUNNING:
                state, reason = "running", ""
            elif t.state == TrialState.WAITING:
                state, reason = "queued", ""
            elif t.state == TrialState.FAIL and reason and reason != INTERRUPTED:
                state = "failed"
            else:  # FAIL without a reason: its worker died (heartbeat) or was interrupted
                state = "interrupted"
                reason = ("interrupted by the user (Ctrl-C)" if reason == INTERRUPTED
                          else "worker stopped without finishing the run (crash or kill)")
            seconds = None
            if t.datetime_start and t.datetime_complete:
                seconds = (t.datetime_complete - t.datetime_start).total_seconds()
            started = t.datetime_start.isoformat() if t.datetime_start and state in ("running", "done") else ""
            cand = RunState(key[0], key[1], state, t.value, reason, str(t.user_attrs.get("mlflow_run_id", "")),
                            seconds, started, str(t.user_attrs.get(WORKER, "")) if state != "queued" else "")
            if key not in by_pair or rank[state] >= rank[by_pair[key].state]:
                by_pair[key] = cand
        states = []
        for run in self.runs:
            for rep in range(self.study.design.replicates):
                states.append(by_pair.get((run, rep), RunState(run, rep, "pending")))
        return Progress(states)

    def refresh(self) -> Progress:
        """Fail trials whose worker stopped beating or, on this host, died (their copies go
        back in the queue), close their MLflow runs, and return the progress."""
        from optuna.storages import fail_stale_trials

        self._fail_dead_local()
        fail_stale_trials(self.optuna_study)
        self._close_orphans()
        return self.progress()

    def _fail_dead_local(self) -> None:
        """Fail at once the RUNNING trials of workers that died on this host, as a stale heartbeat would.

        Why: a worker killed on this machine is known dead at once; waiting out the
        grace period would only delay the resume. Its copy goes back in the queue
        through the same callback as a stale trial's.
        """
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        ost, storage = self.optuna_study, self.storage
        failed = []
        for t in ost.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not worker_gone(str(t.user_attrs.get(WORKER, ""))):
                continue
            try:
                if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    failed.append(t._trial_id)
            except UpdateFinishedTrialError:  # another process got there first
                pass
        callback = storage.get_heartbeat_stale_trial_callback()
        for trial_id in failed:
            if callback is not None:
                callback(ost, storage.get_trial(trial_id))

    def _requeue(self, retry_failed: bool) -> int:
        """Put back in the queue what an earlier session left interrupted (and failed, if asked)."""
        wanted = {"interrupted", "pending"} | ({"failed"} if retry_failed else set())
        n = 0
        for s in self.progress().states:
            if s.state in wanted:
                self.optuna_study.enqueue_trial({}, user_attrs={"run": s.run, "replicate": s.replicate},
                                                skip_if_exists=False)
                n += 1
        return n

    def _close_orphans(self) -> None:
        """MLflow runs left RUNNING by a worker that died: mark them KILLED with the reason.

        A child is orphaned when its trial is no longer RUNNING, or its worker was on this
        host and is dead. A child whose trial still runs with a live heartbeat is never
        touched: its worker is training it.
        """
        from optuna.trial import TrialState

        from doe_sr.tracking.store import TRIAL as TRIAL_TAG
        from doe_sr.tracking.store import WORKER as WORKER_TAG

        reason = "worker stopped (crash or kill) before the run finished; the run was queued again"
        trials = self.optuna_study.get_trials(deepcopy=False)
        for t in trials:
            if t.state != TrialState.FAIL:
                continue
            run_id = t.user_attrs.get("mlflow_run_id")
            if run_id and self.tracker.status(run_id) == "RUNNING":
                self.tracker.finish(run_id, "KILLED", reason)
        # By tag: a worker killed between creating its child and storing the child's id on
        # the trial left a RUNNING child that no trial names.
        by_number = {t.number: t for t in trials}
        for child in self.tracker.child_runs(self.study.name, status="RUNNING"):
            tags = child.data.tags
            number = tags.get(TRIAL_TAG, "")
            trial = by_number.get(int(number)) if number.isdigit() else None
            if worker_gone(tags.get(WORKER_TAG, "")) or (trial is not None and trial.state != TrialState.RUNNING):
                self.tracker.finish(child.info.run_id, "KILLED", reason)

    # -- taking queued trials ------------------------------------------------------
    def _take(self) -> _Taken | None:
        """Atomically take one queued trial (WAITING -> RUNNING), or None if the queue is empty."""
        from optuna.trial import TrialState

        storage, study_id = self.storage, self.study_id
        for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
            if "run" not in t.user_attrs:
                continue
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                try:
                    # Beat at once: Optuna never calls a RUNNING trial without any heartbeat stale,
                    # so a worker stopped right here would otherwise hold the pair forever.
                    storage.record_heartbeat(trial_id)
                    taken = _Taken(storage, trial_id, t.number, int(t.user_attrs["run"]),
                                   int(t.user_attrs["replicate"]))
                    taken.set_user_attr(WORKER, worker_id())
                    # a retried copy inherits the dead trial's MLflow run id; that run is not ours
                    taken.set_user_attr("mlflow_run_id", "")
                except BaseException:
                    storage.set_trial_state_values(trial_id, state=TrialState.FAIL)  # interrupted: requeued later
                    raise
                return taken
        return None

    def _duplicate_of(self, taken: _Taken) -> int | None:
        """The trial that runs ``taken``'s pair instead, if any: a COMPLETE trial of the pair,
        or a queued/running one with a lower number (so two copies taken at once never both
        step aside)."""
        from optuna.trial import TrialState

        for t in self.optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING,
                                                                       TrialState.WAITING)):
            if t.number == taken.number or DUPLICATE in t.user_attrs or "run" not in t.user_attrs:
                continue
            if (int(t.user_attrs["run"]), int(t.user_attrs["replicate"])) != (taken.run, taken.replicate):
                continue
            if t.state == TrialState.COMPLETE or t.number < taken.number:
                return t.number
        return None

    # -- execution -----------------------------------------------------------------
    def prepare(self, *, retry_failed: bool = False) -> Progress:
        """Bring the queue up to date before workers start; return the progress.

        Stale trials are failed (and retried), orphaned MLflow runs closed, interrupted
        (and, if asked, failed) pairs queued again, and a queue whose finished runs the
        MLflow store lost is refused. When work is left, the data are loaded (bad data
        fail here, before any trial is taken) and the MLflow parent run and bicubic
        baseline are created once, under the store lock, so concurrent sessions and
        workers never race to.
        """
        with self.lock:  # two sessions starting at once must not both requeue a pair
            self.refresh()
            self._requeue(retry_failed)
            progress = self.progress()
            self._check_record(progress)
        if progress.done < progress.total:
            self.splits()
            with self.lock:  # one parent run per study, whoever comes first
                self.ensure_parent()
        return progress

    def _check_record(self, progress: Progress) -> None:
        """Refuse a queue whose finished runs the MLflow store no longer holds.

        Why refuse rather than train them again: the usual cause is a ``tracking.uri``
        pointing at another store (a typo, another server), and training there would
        split the study's record silently; when the store really was deleted, the user
        says so by moving the queue away too.
        """
        recorded = {s.mlflow_run_id for s in progress.states if s.state == "done" and s.mlflow_run_id}
        if not recorded:
            return
        present = {r.info.run_id for r in self.tracker.child_runs(self.study.name, status="FINISHED")}
        missing = recorded - present
        if missing:
            sqlite = self.storage_url.startswith("sqlite:///")
            where = self.storage_url.removeprefix("sqlite:///") if sqlite else "the Optuna storage"
            fresh = f"move {where} away" if sqlite else "delete the study from the Optuna storage"
            raise UserError(
                f"study {self.study.name!r}: {len(missing)} of the {len(recorded)} finished runs recorded in "
                f"{where} are missing from the MLflow store {self.tracker.uri} (deleted, or tracking.uri points "
                f"elsewhere); point tracking.uri at the store that holds them, or {fresh} (or give the study "
                "a new name) to train them again")

    def run(self, *, retry_failed: bool = False, wait: bool = True, poll: float | None = None,
            verbose: int | str = "auto", on_change: Callable[[Progress], None] | None = None) -> Progress:
        """Execute queued (run, replicate) pairs until none is left; return the final progress.

        ``wait``: when the queue is empty but other workers still hold running trials,
        keep polling (every ``poll`` s, default the heartbeat interval): if their
        heartbeats stop, their trials come back to the queue and this worker runs them.
        """
        from optuna.trial import TrialState

        before = self.prepare(retry_failed=retry_failed)
        if before.done == before.total:
            return before
        poll = poll if poll is not None else float(self.study.execution.heartbeat_interval)
        while True:
            taken = self._take()
            if taken is None:
                self.refresh()
                if wait and self.optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    time.sleep(poll)
                    continue
                waiting = self.optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                if any("run" in t.user_attrs for t in waiting):
                    continue  # a stale trial was just retried
                break
            if on_change is not None:
                on_change(self.progress())
            self._run_taken(taken, verbose)
            if on_change is not None:
                on_change(self.progress())
        return self.refresh()

    def _run_taken(self, taken: _Taken, verbose) -> None:
        """Execute one taken trial under a heartbeat and tell Optuna how it ended."""
        from optuna.trial import TrialState

        ost = self.optuna_study
        with _Heartbeat(self.storage, taken.trial_id, self.study.execution.heartbeat_interval):
            other = self._duplicate_of(taken)
            if other is not None:
                taken.set_user_attr(DUPLICATE, other)
                ost.tell(taken.number, state=TrialState.PRUNED)
                return
            adopted = self._adopt(taken)
            if adopted is not None:
                ost.tell(taken.number, adopted)
                return
            try:
                value = self.execute(self.runs[taken.run], taken.replicate, trial=taken, verbose=verbose)
            except KeyboardInterrupt:
                _ignore_sigint()
                taken.set_user_attr(FAILURE, INTERRUPTED)
                ost.tell(taken.number, state=TrialState.FAIL)
                raise
            except RunFailed:  # recorded by execute (MLflow tag + trial attr); the study goes on
                ost.tell(taken.number, state=TrialState.FAIL)
                return
            except BaseException:
                # Not the run's fault (MLflow or the database went away): leave the pair
                # interrupted so the next session runs it again, and stop this worker.
                ost.tell(taken.number, state=TrialState.FAIL)
                raise
            ost.tell(taken.number, value)

    def _adopt(self, taken: _Taken) -> float | None:
        """Take over a FINISHED child of ``taken``'s pair instead of training it again; its response.

        Why: a worker killed after its child run was marked FINISHED but before Optuna
        heard of it leaves a pair with a result in MLflow and no COMPLETE trial; training
        it again gave the pair two FINISHED children, which the analysis counted as two
        replicates. ``taken`` is held exclusively (and :meth:`_duplicate_of` found no
        COMPLETE trial of the pair), so no other worker adopts or trains the pair now.
        """
        metric = self.study.response.metric
        for child in self.tracker.child_runs(self.study.name, status="FINISHED", run=taken.run,
                                             replicate=taken.replicate):
            value = child.data.metrics.get(metric)
            if value is None:
                continue
            taken.set_user_attr("mlflow_run_id", child.info.run_id)
            taken.set_user_attr(ADOPTED, True)
            if "val_psnr" in child.data.metrics:
                taken.set_user_attr("val_psnr", child.data.metrics["val_psnr"])
            log.warning("run %s replicate %s: adopting its finished MLflow run %s (its worker stopped before the "
                        "queue recorded it)", taken.run, taken.replicate, child.info.run_id)
            return float(value)
        return None

    #: ``doe-sr run --accept-new-data``: go on with images other than the finished runs used.
    accept_new_data = False
    DATA_ATTR = "data_digest"  # Optuna study user attr: digest of the images the study trains on
    DATA_TAG = "doe_sr.data_digest"  # the same digest as a tag of the parent and of every child

    def ensure_parent(self) -> str:
        """The study's MLflow parent run, created on first use after the checks that need the data.

        Nothing is trained or recorded before them: the patch must fit every training
        image, and the images must be those the study's finished runs used.
        """
        if self.parent_id is None:
            from doe_sr.sr.data import check_patch_size
            from doe_sr.tracking.store import FINGERPRINT, ROLE, environment

            splits = self.splits()
            check_patch_size(splits, self.study.data.patch_size, self.study.data.max_side)
            data_changed = self._check_data(splits.identity)
            fingerprint = self.study.fingerprint()
            old = self.tracker.find_parent(self.study.name)
            if old is not None and self.tracker.client.get_run(old).data.tags.get(FINGERPRINT) != fingerprint:
                # The queue of an earlier design was replaced (none of its runs finished, see
                # _open_optuna); its parent's params describe that design, so a new parent
                # describes this one. The old parent keeps its failed children.
                self.tracker.set_tags(old, {ROLE: "superseded_parent"})
            params = {f"{section}.{k}": v for section in ("data", "model", "training", "response")
                      for k, v in getattr(self.study, section).model_dump(mode="json").items()}
            params.update({"design.array": self.study.design.array,
                           "design.replicates": self.study.design.replicates,
                           "design.factors": ", ".join(self.study.factor_names)})
            artifacts = [self.study_path] if self.study_path else []
            self.parent_id = self.tracker.parent_run(
                self.study.name, params=params, artifacts=artifacts,
                tags={FINGERPRINT: fingerprint, **{f"env.{k}": v for k, v in environment().items()}})
            if data_changed or "bicubic_test_psnr" not in self.tracker.client.get_run(self.parent_id).data.metrics:
                self.tracker.log_metrics(self.parent_id, self.bicubic_baseline())
            self._log_data(self.parent_id)
        return self.parent_id

    def _check_data(self, identity) -> bool:
        """Refuse images other than those the study's finished runs used; True if they changed.

        Why: the study fingerprint leaves out where the data live (workers mount them at
        other paths), so only the digest of what they *are* (names, contents, split, LR
        protocol; see :func:`doe_sr.sr.data.data_identity`) tells that runs 1-4 trained on
        other images than runs 5-9. It is kept in the Optuna study, which every worker
        shares. The images may change freely while no run has finished.
        """
        from optuna.trial import TrialState

        ost = self.optuna_study
        stored = ost.user_attrs.get(self.DATA_ATTR)
        if stored == identity.digest:
            return False
        if stored is not None:
            states = [t.state for t in ost.get_trials(deepcopy=False)]
            done, running = states.count(TrialState.COMPLETE), states.count(TrialState.RUNNING)
            held = f"{done} finished run(s)" if done else f"{running} run(s) in progress"
            if (done or running) and not self.accept_new_data:
                raise UserError(
                    f"data: the images of study {self.study.name!r} are not those its {held} used (data digest "
                    f"{stored[:12]}, now {identity.digest[:12]}); give the study a new name to start a new study "
                    "on these images, or add --accept-new-data to `doe-sr run` to go on with them")
            if done or running:
                log.warning("study %r goes on with other images (data digest %s, was %s); its %s used the old ones",
                            self.study.name, identity.digest[:12], stored[:12], held)
        ost.set_user_attr(self.DATA_ATTR, identity.digest)
        return stored is not None

    def _log_data(self, run_id: str) -> None:
        """Record the study's images on an MLflow run: a dataset input carrying the digest, and a tag."""
        ident = self.splits().identity
        self.tracker.log_dataset(run_id, name=ident.name, digest=ident.digest, source=ident.source,
                                 schema=ident.schema(), profile=ident.profile())
        self.tracker.set_tags(run_id, {self.DATA_TAG: ident.digest})

    def bicubic_baseline(self) -> dict[str, float]:
        """Bicubic's PSNR/SSIM on the study's val and test images: the floor every run must beat."""
        from doe_sr.sr.train import bicubic_metrics

        sp = self.splits()
        out = {}
        for part, pairs in (("val", sp.val), ("test", sp.test)):
            m = bicubic_metrics(pairs, scale=sp.scale)
            out.update({f"bicubic_{part}_psnr": m["psnr"], f"bicubic_{part}_ssim": m["ssim"]})
        return out

    def splits(self):
        if self._splits is None:
            from doe_sr.sr.data import load_splits

            self._splits = load_splits(self.study.data)
        return self._splits

    def run_params(self, run: Run) -> dict[str, object]:
        cfg = self.study.run_config(run.factors)
        params: dict[str, object] = {name: self.study.factor(name).level_labels[run.codes[name]]
                                     for name in self.study.factor_names}
        params.update({f"model.{k}": v for k, v in cfg.model.model_dump(mode="json").items()})
        params.update({f"training.{k}": v for k, v in cfg.training.model_dump(mode="json").items()})
        params.update({"data.patch_size": self.study.data.patch_size, "data.scale": self.study.data.scale})
        return params

    def execute(self, run: Run, replicate: int, *, trial=None, verbose: int | str = "auto",
                role: str = "array_run", run_name: str | None = None) -> float:
        """Train one run, log it as a child run, return its response. Raises RunFailed."""
        from doe_sr.tracking.store import REPLICATE, ROLE, ROW, RUN, SEED, TRIAL, WORKER, environment
        from doe_sr.sr.train import device_info, train_run

        import tempfile

        splits = self.splits()
        parent = self.ensure_parent()
        seed = self.study.training.seed + replicate
        tags = {RUN: run.run, REPLICATE: replicate, ROW: run.row, SEED: seed, ROLE: role, WORKER: worker_id()}
        if trial is not None:
            tags[TRIAL] = trial.number
        name = run_name or f"run {run.run:02d}" + (f" rep {replicate}" if self.study.design.replicates > 1 else "")
        child = self.tracker.start_child(parent, study=self.study.name, run_name=name,
                                         params=self.run_params(run), tags={k: str(v) for k, v in tags.items()})
        self._log_data(child)  # issue 9 item 1: the images this run trains on (MLflow dataset input)
        _test_die_at("after-child-created")
        env = {**environment(), **device_info(self.study.training.mixed_precision)}
        self.tracker.set_tags(child, {f"env.{k}": v for k, v in env.items()})
        if trial is not None:
            trial.set_user_attr("mlflow_run_id", child)
        cfg = self.study.run_config(run.factors)
        try:
            with tempfile.TemporaryDirectory(prefix="doe-sr-") as tmp:
                result = train_run(
                    cfg, splits, patch_size=self.study.data.patch_size, seed=seed, workdir=Path(tmp),
                    on_epoch_end=lambda epoch, m: self.tracker.log_metrics(child, m, step=epoch), verbose=verbose)
                # per-epoch keys (val_psnr, ...) are already logged step by step; their final
                # value is the last step, so only the run-level numbers are added here
                self.tracker.log_metrics(child, {k: v for k, v in result.metrics.items() if k not in result.history})
                self.tracker.set_tags(child, result.tags)
                if result.model_path is not None:
                    self.tracker.log_artifact(child, result.model_path, "model")
                per_image = Path(tmp) / "test_images.csv"
                import pandas as pd

                pd.DataFrame(result.per_image).to_csv(per_image, index=False)
                self.tracker.log_artifact(child, per_image)
                if self.study_path:
                    self.tracker.log_artifact(child, self.study_path)
        except KeyboardInterrupt:
            _ignore_sigint()
            self.tracker.finish(child, "KILLED", "interrupted by the user (Ctrl-C)")
            if trial is not None:
                trial.set_user_attr(FAILURE, INTERRUPTED)
            raise
        except RunFailed as exc:
            self._fail(child, trial, str(exc))
            raise
        except Exception as exc:  # OOM (ResourceExhaustedError) and any bug inside one run
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if "ResourceExhausted" in type(exc).__name__ or "OOM" in str(exc)[:200]:
                reason = f"out of memory: {reason}"
            self._fail(child, trial, reason)
            raise RunFailed(reason) from exc
        self.tracker.finish(child, "FINISHED")
        _test_die_at("after-child-finished")
        value = result.metrics[self.study.response.metric]
        if trial is not None:
            trial.set_user_attr("val_psnr", result.metrics["val_psnr"])
        return float(value)

    def _fail(self, child: str, trial, reason: str) -> None:
        self.tracker.finish(child, "FAILED", reason)
        if trial is not None:
            trial.set_user_attr(FAILURE, reason[:1000])
        log.warning("run failed: %s", reason)


# -- local workers ---------------------------------------------------------------------
def visible_gpus() -> list[str]:
    """GPU ids a worker can be pinned to, without importing TensorFlow.

    ``CUDA_VISIBLE_DEVICES`` when set (the user already chose; "" or "-1" means none),
    else the indices ``nvidia-smi`` lists, else none (a CPU machine).
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [g.strip() for g in env.split(",") if g.strip()]
        return [] if ids in ([], ["-1"]) else ids
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []


def worker_env(index: int, workers: int, gpus: list[str], cpus: int) -> dict[str, str]:
    """Environment variables of local worker ``index`` of ``workers``.

    GPUs: worker i sees only GPU ``gpus[i % len(gpus)]`` (``CUDA_VISIBLE_DEVICES``), so
    each trains on its own card; when workers outnumber cards they share them and
    TensorFlow must allocate GPU memory on demand (``TF_FORCE_GPU_ALLOW_GROWTH``)
    instead of each taking the whole card. CPUs: the cores are split evenly between the
    workers (TensorFlow's intra-op pool, OpenMP), at least one each, so N workers do not
    oversubscribe the machine N-fold.
    """
    env = {"PYTHONUNBUFFERED": "1", "DOE_SR_WORKER_INDEX": str(index)}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        if workers > len(gpus):
            env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    if workers <= 1:
        return env  # one worker: TensorFlow's defaults already use the whole machine
    share = max(1, cpus // workers)
    env.update({"TF_NUM_INTRAOP_THREADS": str(share), "OMP_NUM_THREADS": str(share),
                "TF_NUM_INTEROP_THREADS": str(min(2, share))})
    return env
