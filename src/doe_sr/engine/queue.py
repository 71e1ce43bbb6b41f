"""Optuna as the run queue: one enqueued trial per (array run, replicate).

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

States of a (run, replicate) (:class:`State`): done (a COMPLETE trial), queued
(WAITING), running (RUNNING), failed (FAIL with a reason: diverged, out of memory, an
exception; re-run only with ``retry_failed``) or interrupted (Ctrl-C or a dead worker:
re-run by the next ``doe-sr run``, or by a surviving worker once the heartbeat is
stale). MLflow holds the record; Optuna holds the queue.

This is the only module of doe-sr that imports Optuna (an import-linter contract in
``pyproject.toml`` checks it): the executor, the workers and the live view talk to the
queue through :class:`Queue`, :class:`Taken` and :class:`Progress`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path

from doe_sr.core.errors import UserError
from doe_sr.engine.bayes import OPTIMUM, PRUNED, WARM
from doe_sr.study.design import Run
from doe_sr.study.schema import Study

log = logging.getLogger("doe_sr")

FAILURE = "failure"  # trial user attr: why a trial failed
INTERRUPTED = "interrupted"
WORKER = "worker"  # trial user attr: host:pid of the process that runs it
DUPLICATE = "duplicate_of"  # trial user attr: number of the trial that runs this pair instead
ADOPTED = "adopted"  # trial user attr: True when the trial took over a FINISHED child instead of training
FINGERPRINT_ATTR = "fingerprint"  # Optuna study user attr: the study's settings the queue was made for
DATA_ATTR = "data_digest"  # Optuna study user attr: digest of the images the study trains on
REUSED = "reused_from"  # trial user attr: the MLflow run (of another campaign) whose result the pair took over
ROLE = "role"  # trial user attr: the doe_sr.role of the trial's MLflow run (array_run, validation, refine)


def _pair(trial) -> tuple[int, int] | None:
    """The (run, replicate) a trial works on; None for a trial that is no pair of its campaign
    (a refinement's warm start: an array run added as a completed trial)."""
    attrs = trial.user_attrs
    if "run" not in attrs or attrs.get(WARM):
        return None
    return int(attrs["run"]), int(attrs["replicate"])


@dataclass(frozen=True)
class Campaign:
    """A named set of (run, replicate) pairs the engine trains: the array, or a validation set.

    Why one notion: the array and the sets that check it (``doe-sr validate``: the full
    factorial or a larger array; later Bayesian refinement) need the same queue, workers,
    resumption and record. Each campaign is its own Optuna study in the study's storage
    (``name``), its children carry their own ``role`` (and ``tags``) in MLflow, and its
    runs are numbered within the campaign. The array's campaign keeps the Optuna study
    name and role it always had (:func:`array_campaign`).
    """

    kind: str  # "array" | "validation" | "refine"
    name: str  # the Optuna study name
    runs: dict[int, Run]
    replicates: int
    role: str  # doe_sr.role of its MLflow children
    fingerprint: str  # the settings its queue was made for
    tags: dict[str, str] = field(default_factory=dict)  # extra tags of its children (what tells it from others)
    attrs: dict[str, str] = field(default_factory=dict)  # Optuna study user attributes set on creation
    label_prefix: str = "r"  # children's names: ``r08 lr=...`` for the array, ``v37 lr=...`` for validation
    worker_args: tuple[str, ...] = ("worker",)  # doe-sr arguments (before the study file) of a worker joining it
    worker_options: tuple[str, ...] = ()  # doe-sr options (after the study file) of a worker joining it
    search: object | None = None  # a refinement's doe_sr.engine.bayes.Search: its trials' settings are sampled

    @property
    def sampled(self) -> bool:
        """True when a sampler chooses each trial's settings as a worker takes it (``doe-sr refine``)."""
        return self.search is not None

    @property
    def pairs(self) -> int:
        return len(self.runs) * self.replicates


def array_campaign(study: Study, runs: dict[int, Run]) -> Campaign:
    """The study's array: Optuna study named as the study, children with role ``array_run``."""
    return Campaign(kind="array", name=study.name, runs=runs, replicates=study.design.replicates, role="array_run",
                    fingerprint=study.fingerprint(), attrs={"array": study.design.array})


VALIDATION_TAG = "doe_sr.validation"  # MLflow tag of a validation child: the set it belongs to ("full", "L27")


def validation_campaign(study: Study, against: str, replicates: int | None = None) -> Campaign:
    """The set ``doe-sr validate --against`` trains: its own Optuna study ``<study>/validation/<set>``.

    Children have role ``validation`` and the tag ``doe_sr.validation=<set>``, are named
    ``v37 lr=0.001 adam elu f64``, and train with the array's seed rule, so a
    combination the array (or another validation set) already ran is the same run.
    ``replicates`` (default the study's) other than the study's give the set a name
    of its own (``.../x2``), so changing them never collides with a finished queue.
    """
    from doe_sr.study.design import validation_runs

    key, runs = validation_runs(study, against)
    reps = study.design.replicates if replicates is None else replicates
    if reps < 1:
        raise UserError(f"--replicates {reps}: give at least 1")
    name = f"{study.name}/validation/{key}" + (f"/x{reps}" if reps != study.design.replicates else "")
    return Campaign(kind="validation", name=name, runs={r.run: r for r in runs}, replicates=reps, role="validation",
                    fingerprint=f"{study.fingerprint()}|validation:{key}|replicates:{reps}",
                    tags={VALIDATION_TAG: key}, attrs={"validation": key, "of": study.name},
                    label_prefix="v", worker_args=("validate",),
                    worker_options=("--against", against.strip(), "--replicates", str(reps), "--worker"))


REFINE_TAG = "doe_sr.refine"  # MLflow tag of a refinement child: the refinement it belongs to


def refine_campaign(study: Study, search, *, trials: int, name: str = "", fingerprint: str = "") -> Campaign:
    """The refinement ``doe-sr refine`` trains: its own Optuna study ``<study>/refine[/<name>]``.

    ``trials`` numbered slots (run 1..trials, replicate 0) are queued; a worker taking
    one has the sampler choose its settings then (:func:`doe_sr.engine.bayes.suggest`).
    Raising ``trials`` later queues more slots of the same refinement. Children have
    role ``refine`` and the tag ``doe_sr.refine=<name>``, are named ``t07 lr=0.00032 adam
    elu f96``, and train with the array's first seed, so each trial differs from the
    array's replicate 0 only by its settings.
    """
    from doe_sr.study.design import Run

    key = name or "refine"
    camp_name = f"{study.name}/refine" + (f"/{name}" if name else "")
    options = ("--trials", str(trials), "--worker")
    slots = {k: Run(run=k, factors={}, codes={}) for k in range(1, trials + 1)}
    return Campaign(kind="refine", name=camp_name, runs=slots,
                    replicates=1, role="refine", fingerprint=f"{study.fingerprint()}|refine:{fingerprint}",
                    tags={REFINE_TAG: key}, attrs={"refine": key, "of": study.name, "sampler": search.sampler},
                    label_prefix="t", worker_args=("refine",), worker_options=options, search=search)


class State(str, Enum):
    """The state of a (run, replicate), spelled as ``doe-sr status --format json`` writes it.

    A ``str`` so that it compares, hashes, formats and serialises (JSON) as the plain
    word; the members are in display order (most advanced first).
    """

    DONE = "done"
    PRUNED = "pruned"  # a refinement trial the pruner stopped early: settled, not failed
    RUNNING = "running"
    QUEUED = "queued"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PENDING = "pending"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


#: Which trial of a pair speaks for it when several exist: the most advanced one.
_RANK = {State.DONE: 5, State.PRUNED: 5, State.RUNNING: 4, State.QUEUED: 3, State.FAILED: 2, State.INTERRUPTED: 1,
         State.PENDING: 0}


# -- the study's local folder and default storage ----------------------------------------
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


# -- opening the storage ------------------------------------------------------------------
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
    ``host:pid``) would then look dead to :meth:`Queue.fail_dead`.
    """
    import copy

    from optuna.storages import RetryHeartbeatStaleTrialCallback

    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def callback(study, trial) -> None:
        trial = copy.copy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in ("run", "replicate", OPTIMUM)}
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


# -- who holds a trial ----------------------------------------------------------------------
def worker_id() -> str:
    """This process as the queue records the holder of a trial: ``host:pid``."""
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


# -- the progress snapshot ------------------------------------------------------------------
@dataclass
class RunState:
    run: int
    replicate: int
    state: State  # done | queued | running | failed | interrupted | pending
    value: float | None = None
    reason: str = ""
    mlflow_run_id: str = ""
    seconds: float | None = None
    started: str = ""  # ISO time the newest trial of the pair started (running/done)
    worker: str = ""  # host:pid that runs or ran it
    flag: str = ""  # the degenerate-run flag of a done pair (set by workflow.run.study_status)
    flag_cause: str = ""

    def to_dict(self) -> dict:
        """The pair as ``doe-sr status --format json`` writes it (the state as its plain word)."""
        return {**self.__dict__, "state": str(self.state)}


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
        return self.count(State.DONE)

    @property
    def settled(self) -> int:
        """Pairs that need no more work: done, or pruned (a refinement's trial stopped early on purpose)."""
        return self.done + self.count(State.PRUNED)

    @property
    def todo(self) -> int:
        """Pairs some worker will still take: queued, pending or interrupted."""
        return sum(1 for s in self.states if s.state in (State.QUEUED, State.PENDING, State.INTERRUPTED))

    def ordered(self) -> list[RunState]:
        """The pairs by state (in :class:`State`'s order), then run and replicate: how ``status`` lists them."""
        order = list(State)
        return sorted(self.states, key=lambda s: (order.index(State(s.state)), s.run, s.replicate))

    def eta(self, workers: int, now: datetime | None = None) -> float | None:
        """Seconds until every pair is done or failed, from the mean duration of done runs.

        Work left = the rest of each running run (mean minus its elapsed time, at least
        0) plus the mean for each pair not started, shared by ``workers`` (at least one).
        ``None`` until a run has finished.
        """
        durations = [s.seconds for s in self.states if s.state in (State.DONE, State.PRUNED) and s.seconds is not None]
        if not durations:
            return None
        mean = sum(durations) / len(durations)
        now = now or datetime.now()
        left = mean * self.todo
        for s in self.states:
            if s.state == State.RUNNING and s.started:
                left += max(mean - (now - datetime.fromisoformat(s.started)).total_seconds(), 0.0)
        return left / max(workers, 1)


# -- a taken trial and its heartbeat --------------------------------------------------------
class Heartbeat:
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

    def __enter__(self) -> "Heartbeat":
        self._storage.record_heartbeat(self._trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Taken:
    """A queued trial this process took: what the executor needs of an Optuna trial."""

    storage: object
    trial_id: int
    number: int
    run: int
    replicate: int
    handle: object = None  # a refinement's optuna.Trial once its settings are sampled (reports epochs, prunes)

    def set_user_attr(self, key: str, value) -> None:
        self.storage.set_trial_user_attr(self.trial_id, key, value)


@dataclass(frozen=True)
class TrialRecord:
    """What closing orphaned MLflow runs needs of a trial, without Optuna's types."""

    number: int
    running: bool
    failed: bool
    mlflow_run_id: str


# -- the queue ------------------------------------------------------------------------------
class Queue:
    """The Optuna queue of one study: opened (and its design enqueued) on first use.

    ``lock`` (a context manager, :class:`doe_sr.engine.lock.StoreLock` for local
    stores) is held while the storage is created, so one process creates the schema
    and enqueues the design and the others find it done.
    """

    def __init__(self, study: Study, runs: dict[int, Run], url: str,
                 lock: AbstractContextManager | None = None, campaign: Campaign | None = None):
        self.study, self.url = study, url
        self.campaign = campaign if campaign is not None else array_campaign(study, runs)
        self.runs = self.campaign.runs
        self.lock = lock if lock is not None else nullcontext()
        self._optuna = None
        self._storage = None

    # -- opening -----------------------------------------------------------------------
    @property
    def optuna_study(self):
        if self._optuna is None:
            with self.lock:  # one process creates the schema and enqueues the design
                self._optuna = self._open()
        return self._optuna

    @property
    def storage(self):
        self.optuna_study
        return self._storage

    @property
    def study_id(self) -> int:
        return self.storage.get_study_id_from_name(self.campaign.name)

    def _open(self):
        import optuna

        self._storage = open_storage(self.url, self.study)
        camp = self.campaign
        direction = "minimize" if self.study.response.objective == "smaller" else "maximize"
        ost = optuna.create_study(study_name=camp.name, storage=self._storage, direction=direction,
                                  load_if_exists=True)
        fingerprint = camp.fingerprint
        stored = ost.user_attrs.get(FINGERPRINT_ATTR)
        if stored is not None and stored != fingerprint:
            # A corrected study reuses its store while the store holds no result: every trial
            # failed, was interrupted or is still queued (say a patch too large for the
            # images). The stored queue is replaced; MLflow keeps the record of failed runs.
            from optuna.storages import fail_stale_trials

            fail_stale_trials(ost)  # a dead worker's trial is not "in progress"
            done, running = self._held(ost)
            if done or running:
                held = f"{done} finished run(s)" if done else f"{running} run(s) in progress"
                what = "study" if camp.kind == "array" else f"{camp.kind} set"
                raise UserError(
                    f"{what} {camp.name!r} already exists in {self.url} with another design or "
                    f"settings and {held}; give the changed study a new name, or delete its storage to start over")
            log.warning("study %r: no run of its earlier settings finished; its queue is replaced by the "
                        "changed study's", camp.name)
            optuna.delete_study(study_name=camp.name, storage=self._storage)
            ost = optuna.create_study(study_name=camp.name, storage=self._storage, direction=direction,
                                      load_if_exists=True)
            stored = None
        if stored is None:
            ost.set_user_attr(FINGERPRINT_ATTR, fingerprint)
            for key, value in camp.attrs.items():
                ost.set_user_attr(key, value)
            # Enqueue in a stable order; a concurrent first start on another machine may
            # enqueue twice, which taking resolves (see duplicate_of).
            if camp.sampled:
                self._warm_start(ost)
            elif not ost.get_trials(deepcopy=False):
                for run in camp.runs.values():
                    for rep in range(camp.replicates):
                        ost.enqueue_trial({}, user_attrs={"run": run.run, "replicate": rep},
                                          skip_if_exists=False)
        if camp.sampled:
            self._enqueue_slots(ost)
            self._arm(ost)
        return ost

    # -- a refinement (sampled campaign) ---------------------------------------------------
    def _warm_start(self, ost) -> None:
        """The array's finished pairs added as completed trials (once, when the refinement is created)."""
        from doe_sr.engine.bayes import add_warm_trials

        added, skipped = add_warm_trials(ost, self.campaign.search)
        ost.set_user_attr("warm_start_trials", added)
        ost.set_user_attr("warm_start_left_out", skipped)

    def _enqueue_slots(self, ost) -> None:
        """Queue the budget's slots not queued yet (all on creation; the new ones when the budget grows).

        Slot 1 measures the Taguchi optimum when no array run did (``search.first``); the
        study file's ``try_first`` points come next; the sampler chooses the rest.
        """
        search = self.campaign.search
        have = {p[0] for t in ost.get_trials(deepcopy=False) if (p := _pair(t)) is not None}
        points = ([search.first] if search.first else []) + list(search.try_first)
        for slot in self.campaign.runs:
            if slot in have:
                continue
            attrs = {"run": slot, "replicate": 0, ROLE: self.campaign.role}
            if search.first and slot == 1:
                attrs[OPTIMUM] = True
            params = points[slot - 1] if slot <= len(points) else {}
            ost.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)

    def _arm(self, ost) -> None:
        """The refinement's sampler and pruner on this process's handle of its Optuna study."""
        from doe_sr.engine.bayes import make_pruner, make_sampler

        search = self.campaign.search
        ost.sampler = make_sampler(search.sampler, search.seed, int(ost.user_attrs.get("warm_start_trials", 0)))
        ost.pruner = make_pruner(search.pruner, search.epochs)

    def suggest(self, taken: Taken) -> dict:
        """The settings of a refinement trial just taken, sampled now (or fixed by an enqueued point)."""
        from doe_sr.engine.bayes import suggest

        taken.handle, params = suggest(self.optuna_study, taken.trial_id, self.campaign.search)
        return params

    def report(self, taken: Taken, epoch: int, value: float) -> bool:
        """Record a refinement trial's response after ``epoch``; True when the pruner says stop.

        The trial that measures the Taguchi optimum is never pruned: the report compares
        the refined best with it.
        """
        import math

        trial = taken.handle
        if trial is None:
            return False
        if math.isfinite(value):
            trial.report(float(value), int(epoch))
        if self.storage.get_trial(taken.trial_id).user_attrs.get(OPTIMUM):
            return False
        return bool(trial.should_prune())

    def prune(self, taken: Taken, reason: str) -> None:
        """Close ``taken`` as PRUNED (the pruner stopped it), saying why."""
        from optuna.trial import TrialState

        taken.set_user_attr(PRUNED, reason[:1000])
        self.optuna_study.tell(taken.number, state=TrialState.PRUNED)

    def sampled_trials(self) -> list[dict]:
        """Every settled trial of a refinement (warm start included) as plain values:
        number, state, value, params, intermediate values, user attributes, seconds."""
        from optuna.trial import TrialState

        out = []
        for t in self.optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if DUPLICATE in t.user_attrs:
                continue
            out.append({"number": t.number, "state": t.state.name.lower(), "value": t.value,
                        "params": dict(t.params), "intermediate": dict(t.intermediate_values),
                        "attrs": dict(t.user_attrs), "warm": bool(t.user_attrs.get(WARM)),
                        "seconds": ((t.datetime_complete - t.datetime_start).total_seconds()
                                    if t.datetime_start and t.datetime_complete else None)})
        return out

    @staticmethod
    def _held(ost) -> tuple[int, int]:
        """(finished, running) trials of ``ost``: what a change of settings or data must not pull the rug from."""
        from optuna.trial import TrialState

        states = [t.state for t in ost.get_trials(deepcopy=False) if not t.user_attrs.get(WARM)]
        return states.count(TrialState.COMPLETE), states.count(TrialState.RUNNING)

    # -- state -------------------------------------------------------------------------
    def progress(self) -> Progress:
        """State of every (run, replicate), from the Optuna trials (the most advanced trial wins)."""
        from optuna.trial import TrialState

        by_pair: dict[tuple[int, int], RunState] = {}
        for t in self.optuna_study.get_trials(deepcopy=False):
            key = _pair(t)
            if key is None or DUPLICATE in t.user_attrs:
                continue
            reason = str(t.user_attrs.get(FAILURE, ""))
            if t.state == TrialState.COMPLETE:
                state, reason = State.DONE, ""
            elif t.state == TrialState.PRUNED:
                state, reason = State.PRUNED, str(t.user_attrs.get(PRUNED, ""))
            elif t.state == TrialState.RUNNING:
                state, reason = State.RUNNING, ""
            elif t.state == TrialState.WAITING:
                state, reason = State.QUEUED, ""
            elif t.state == TrialState.FAIL and reason and reason != INTERRUPTED:
                state = State.FAILED
            else:  # FAIL without a reason: its worker died (heartbeat) or was interrupted
                state = State.INTERRUPTED
                reason = ("interrupted by the user (Ctrl-C)" if reason == INTERRUPTED
                          else "worker stopped without finishing the run (crash or kill)")
            seconds = None
            if t.datetime_start and t.datetime_complete:
                seconds = (t.datetime_complete - t.datetime_start).total_seconds()
            started = (t.datetime_start.isoformat()
                       if t.datetime_start and state in (State.RUNNING, State.DONE) else "")
            cand = RunState(key[0], key[1], state, t.value, reason, str(t.user_attrs.get("mlflow_run_id", "")),
                            seconds, started, str(t.user_attrs.get(WORKER, "")) if state != State.QUEUED else "")
            if key not in by_pair or _RANK[state] >= _RANK[by_pair[key].state]:
                by_pair[key] = cand
        states = []
        for run in self.runs:
            for rep in range(self.campaign.replicates):
                states.append(by_pair.get((run, rep), RunState(run, rep, State.PENDING)))
        return Progress(states)

    def trials(self) -> list[TrialRecord]:
        """Every trial's number, whether it runs or failed, and the MLflow run it names."""
        from optuna.trial import TrialState

        return [TrialRecord(t.number, t.state == TrialState.RUNNING, t.state == TrialState.FAIL,
                            str(t.user_attrs.get("mlflow_run_id") or ""))
                for t in self.optuna_study.get_trials(deepcopy=False)]

    def has_running(self) -> bool:
        """True while some worker holds a trial."""
        from optuna.trial import TrialState

        return bool(self.optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def has_queued(self) -> bool:
        """True while a queued trial of a pair waits (one just retried after a stale heartbeat, say)."""
        from optuna.trial import TrialState

        waiting = self.optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        return any((p := _pair(t)) is not None and p[0] in self.runs for t in waiting)

    # -- keeping the queue honest --------------------------------------------------------
    def fail_dead(self) -> None:
        """Fail trials whose worker died on this host or stopped beating; their copies go back in the queue."""
        from optuna.storages import fail_stale_trials

        self._fail_dead_local()
        fail_stale_trials(self.optuna_study)

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

    def requeue(self, retry_failed: bool) -> int:
        """Put back in the queue what an earlier session left interrupted (and failed, if asked)."""
        wanted = {State.INTERRUPTED, State.PENDING} | ({State.FAILED} if retry_failed else set())
        n = 0
        for s in self.progress().states:
            if s.state in wanted:
                self.enqueue(s.run, s.replicate)
                n += 1
        return n

    def enqueue(self, run: int, replicate: int) -> None:
        """Queue one more trial of (``run``, ``replicate``); a pair queued twice runs once (see :meth:`duplicate_of`).

        In a refinement the copy keeps what its last trial was given: the settings it was
        sampled or enqueued with, and the mark of the trial that measures the Taguchi
        optimum, so an interrupted trial runs again as the same trial.
        """
        params: dict = {}
        attrs: dict = {"run": run, "replicate": replicate}
        if self.campaign.sampled:
            attrs[ROLE] = self.campaign.role
            prior = [t for t in self.optuna_study.get_trials(deepcopy=False) if _pair(t) == (run, replicate)]
            if prior:
                last = max(prior, key=lambda t: t.number)
                params = dict(last.params) or dict(last.system_attrs.get("fixed_params") or {})
                if last.user_attrs.get(OPTIMUM):
                    attrs[OPTIMUM] = True
        self.optuna_study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)

    def retry_stale(self, taken: Taken) -> None:
        """Fail ``taken`` as a stale heartbeat would and queue its copy through the same callback."""
        from optuna.trial import TrialState

        storage = self.storage
        storage.set_trial_state_values(taken.trial_id, state=TrialState.FAIL)
        storage.get_heartbeat_stale_trial_callback()(self.optuna_study, storage.get_trial(taken.trial_id))

    def check_data(self, digest: str, *, accept_new_data: bool = False) -> bool:
        """Refuse images other than those the study's finished runs used; True if they changed.

        Why: the study fingerprint leaves out where the data live (workers mount them at
        other paths), so only the digest of what they *are* (names, contents, split, LR
        protocol; see :func:`doe_sr.sr.data.data_identity`) tells that runs 1-4 trained on
        other images than runs 5-9. It is kept in the Optuna study, which every worker
        shares. The images may change freely while no run has finished.
        """
        ost = self.optuna_study
        stored = ost.user_attrs.get(DATA_ATTR)
        if stored == digest:
            return False
        if stored is not None:
            done, running = self._held(ost)
            held = f"{done} finished run(s)" if done else f"{running} run(s) in progress"
            if (done or running) and not accept_new_data:
                raise UserError(
                    f"data: the images of study {self.study.name!r} are not those its {held} used (data digest "
                    f"{stored[:12]}, now {digest[:12]}); give the study a new name to start a new study "
                    "on these images, or add --accept-new-data to `doe-sr run` to go on with them")
            if done or running:
                log.warning("study %r goes on with other images (data digest %s, was %s); its %s used the old ones",
                            self.study.name, digest[:12], stored[:12], held)
        ost.set_user_attr(DATA_ATTR, digest)
        return stored is not None

    # -- taking queued trials ------------------------------------------------------------
    def take(self, pair: tuple[int, int] | None = None) -> Taken | None:
        """Atomically take one queued trial (WAITING -> RUNNING), or None if the queue is empty.

        ``pair``: only a queued trial of this (run, replicate).
        """
        from optuna.trial import TrialState

        storage, study_id = self.storage, self.study_id
        for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
            key = _pair(t)
            if key is None or key[0] not in self.runs:  # a warm start, or a slot beyond a lowered budget
                continue
            if pair is not None and key != pair:
                continue
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                try:
                    # Beat at once: Optuna never calls a RUNNING trial without any heartbeat stale,
                    # so a worker stopped right here would otherwise hold the pair forever.
                    storage.record_heartbeat(trial_id)
                    taken = Taken(storage, trial_id, t.number, int(t.user_attrs["run"]),
                                  int(t.user_attrs["replicate"]))
                    taken.set_user_attr(WORKER, worker_id())
                    taken.set_user_attr(ROLE, self.campaign.role)  # readable in optuna-dashboard
                    # a retried copy inherits the dead trial's MLflow run id; that run is not ours
                    taken.set_user_attr("mlflow_run_id", "")
                except BaseException:
                    storage.set_trial_state_values(trial_id, state=TrialState.FAIL)  # interrupted: requeued later
                    raise
                return taken
        return None

    def complete_reused(self, run: int, replicate: int, value: float, mlflow_run_id: str, source: str) -> bool:
        """Record (``run``, ``replicate``) as done with the result of an MLflow run recorded
        elsewhere (``source``: its role), without training it; whether it did.

        Why through a queued trial: the pair then reads as done everywhere the queue is
        read (progress, status, a resumed session), and exactly-once holds: a pair a
        worker has already taken is left to it (False).
        """
        taken = self.take((run, replicate))
        if taken is None:
            if any(s.run == run and s.replicate == replicate and s.state in (State.RUNNING, State.DONE)
                   for s in self.progress().states):
                return False
            self.enqueue(run, replicate)
            taken = self.take((run, replicate))
            if taken is None:
                return False
        taken.set_user_attr("mlflow_run_id", mlflow_run_id)
        taken.set_user_attr(REUSED, source)
        self.complete(taken, value)
        return True

    def reused(self) -> dict[str, int]:
        """How many done pairs took their result from another campaign's record, by its role."""
        from optuna.trial import TrialState

        out: dict[str, int] = {}
        for t in self.optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            source = t.user_attrs.get(REUSED)
            if source and DUPLICATE not in t.user_attrs:
                out[str(source)] = out.get(str(source), 0) + 1
        return out

    def duplicate_of(self, taken: Taken) -> int | None:
        """The trial that runs ``taken``'s pair instead, if any: a COMPLETE trial of the pair,
        or a queued/running one with a lower number (so two copies taken at once never both
        step aside)."""
        from optuna.trial import TrialState

        for t in self.optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                       TrialState.RUNNING, TrialState.WAITING)):
            if t.number == taken.number or DUPLICATE in t.user_attrs or _pair(t) != (taken.run, taken.replicate):
                continue
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or t.number < taken.number:
                return t.number
        return None

    def heartbeat(self, taken: Taken) -> Heartbeat:
        """Keep ``taken`` alive while it runs: ``with queue.heartbeat(taken): ...``."""
        return Heartbeat(self.storage, taken.trial_id, self.study.execution.heartbeat_interval)

    # -- telling how a trial ended -------------------------------------------------------
    def complete(self, taken: Taken, value: float) -> None:
        """``taken`` is done with response ``value``."""
        self.optuna_study.tell(taken.number, value)

    def fail(self, taken: Taken) -> None:
        """``taken`` failed (its ``failure`` attribute says why) or was interrupted (no reason, or ``interrupted``)."""
        from optuna.trial import TrialState

        self.optuna_study.tell(taken.number, state=TrialState.FAIL)

    def step_aside(self, taken: Taken, other: int) -> None:
        """Close ``taken`` as PRUNED: trial ``other`` runs its pair."""
        from optuna.trial import TrialState

        taken.set_user_attr(DUPLICATE, other)
        self.optuna_study.tell(taken.number, state=TrialState.PRUNED)
