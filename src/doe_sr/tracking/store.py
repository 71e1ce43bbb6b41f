"""MLflow as the study's record: one parent run per study, one child run per array run.

Why ``MlflowClient`` rather than ``mlflow.start_run``: the fluent API keeps a global
"active run" per process, which breaks as soon as a worker process trains one run while
the engine finalises another, or a crash leaves the active run dangling. The client API
names every run explicitly, so several workers can log to one store at once and a
crashed run can be closed by whoever finds it.

The local default is a folder (``mlruns/``) holding an SQLite backend (``mlflow.db``)
and the artifacts beside it; any tracking URI (``http://host:port`` of an ``mlflow
server``, ``postgresql://...``) works the same. Against ``mlflow server
--artifacts-destination DIR`` (artifact proxying) workers upload models and tables over
HTTP, so machines need no access to the server's disk. Only this package imports MLflow.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

ROLE = "doe_sr.role"
STUDY = "doe_sr.study"
RUN = "doe_sr.run"
REPLICATE = "doe_sr.replicate"
ROW = "doe_sr.array_row"
SEED = "doe_sr.seed"
TRIAL = "doe_sr.optuna_trial"
REASON = "doe_sr.failure_reason"
FINGERPRINT = "doe_sr.fingerprint"
WORKER = "doe_sr.worker"  # host:pid of the worker that created a child run
NOTE = "mlflow.note.content"  # a run's description, as the MLflow UI shows and edits it
#: MLflow 3's UI treats an experiment without this tag as GenAI (it opens on "Overview" and
#: "Traces"); ``custom_model_development`` is its training kind, whose view is the runs table
EXPERIMENT_KIND, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"

#: what SQLite or alembic say when another process is creating or migrating the same store
_CONCURRENT_CREATION = ("already exists", "duplicate column", "no such index", "no such table",
                        "database is locked", "out-of-date database schema")


#: MLflow's HTTP defaults (7 retries with backoff, 120 s per request) make an unreachable
#: server take about 4 minutes to report; these bound it. Users may override either.
HTTP_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "20", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
                     "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def resolve_uri(uri: str) -> tuple[str, str | None]:
    """(tracking URI, artifact location for new experiments) of a study's ``tracking.uri``.

    A plain path means a local store: ``<path>/mlflow.db`` (SQLite) with artifacts in
    ``<path>/artifacts``. Anything with a scheme is passed to MLflow unchanged. A URI
    MLflow cannot record to (``bogus://``, ``/proc/x``, a file) is refused in one line,
    here as well as in the study schema because ``--tracking-uri`` bypasses the schema;
    an http(s) server is contacted once, within a stated timeout.
    """
    from doe_sr.core.errors import UserError
    from doe_sr.study.schema import tracking_uri_problem

    problem = tracking_uri_problem(uri)
    if problem:
        raise UserError(f"tracking URI {uri!r}: {problem}")
    if uri.lower().startswith(("http://", "https://")):
        _check_server(uri)
        return uri, None
    if "://" in uri or uri.startswith("databricks"):
        return uri, None
    folder = Path(uri).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"tracking URI {uri!r}: cannot create the folder {folder} ({exc.strerror or exc}); "
                        "use a folder you can write to") from None
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def _check_server(uri: str) -> None:
    """Fail fast, in one line, when nothing answers at an http(s) tracking URI.

    Sets MLflow's HTTP timeout and retries (unless the user set them) so that later
    requests cannot hang for minutes either, then makes one request: any HTTP answer,
    even an error status, means a server is there; only a connection failure or a
    timeout is refused.
    """
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    from doe_sr.core.errors import UserError

    for name, value in HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        timeout = float(os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    except ValueError:
        raise UserError(f"MLFLOW_HTTP_REQUEST_TIMEOUT={os.environ['MLFLOW_HTTP_REQUEST_TIMEOUT']!r} is not a "
                        "number of seconds") from None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, ssl.SSLError):
            return  # something answered; MLflow applies the user's TLS settings (MLFLOW_TRACKING_INSECURE_TLS)
        reason = " ".join(str(reason).split()) or type(exc).__name__
        raise UserError(f"tracking URI {uri}: no MLflow server answered within {timeout:g} s ({reason}); start "
                        "`mlflow server` there or fix tracking.uri (MLFLOW_HTTP_REQUEST_TIMEOUT sets the wait)"
                        ) from None


def sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:///`` URL (None for another scheme or an in-memory database)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def refuse_damaged_sqlite(path: Path | None, what: str, corrupt: str = "") -> None:
    """Refuse, in one line, an SQLite store file (``what``: MLflow or Optuna) that is a
    folder, not a database or truncated; ``corrupt`` is SQLite's own complaint when the
    file passed :func:`sqlite_problem` but failed to open (its inner pages are broken).

    Why one place: both stores report such a file only at their first query, deep
    inside MLflow or Optuna, where it read as "check the URL".
    """
    from doe_sr.core.errors import UserError

    if path is None:
        return
    problem = sqlite_problem(path) or (f"is damaged ({corrupt})" if corrupt else None)
    if problem:
        raise UserError(f"{path} {problem}: it is not a valid {what} database; move it away (a new one is "
                        "created in its place) or restore it from a backup")


def sqlite_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an SQLite database ("is a folder", "is truncated", ...), or None.

    Cheap checks only (the 100-byte header and the file's size): an absent or empty file
    is fine (SQLite creates the database), and inner damage shows when the file is used.
    The header records the page size and, when its version counter is current, the
    number of pages, so a file shorter than that was cut off.
    """
    if path.is_dir():
        return "is a folder, not a database file"
    problem = _header_problem(path)
    if problem and problem.startswith("is truncated"):
        # A live writer (another process creating or migrating the store) writes page 1
        # before it extends the file, so a file seen mid-commit looks cut off: look again
        # holding SQLite's shared lock, which waits for that commit to end.
        locked = _under_read_lock(path, _header_problem)
        problem = problem if locked is None else locked
    return problem or None


def _header_problem(path: Path) -> str | None:
    """:func:`sqlite_problem`'s header and size checks, once, without any lock ("" = fine)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if size == 0:
        return ""
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return "is not an SQLite database"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] == head[92:96] and size < pages * page_size:
        return f"is truncated ({size} of {pages * page_size} bytes)"
    return ""


def _under_read_lock(path: Path, check):  # noqa: ANN001, ANN202 - check: Path -> str | None
    """``check(path)`` inside a read transaction of ``path`` (None when SQLite cannot take it,
    so the caller keeps what it saw without the lock)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        con.execute("BEGIN")
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the shared lock
        return check(path)
    except sqlite3.Error:
        return None
    finally:
        con.close()


def _schema_state(path: Path) -> str:
    """``absent``, ``ready`` (migrated to this MLflow's latest schema), ``damaged`` or ``partial``."""
    import sqlite3

    if not path.exists():
        return "absent"
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = (con.execute("SELECT version_num FROM alembic_version").fetchone()
                       if "alembic_version" in tables else None)
        finally:
            con.close()
    except sqlite3.OperationalError:  # locked by a writer, or not readable yet
        return "partial"
    except sqlite3.DatabaseError:
        return "damaged"
    if version is None or any(t.startswith("_alembic_tmp") for t in tables):
        return "partial"
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        return "ready" if version[0] == _get_latest_schema_revision() else "partial"
    except Exception:  # MLflow moved its helper: trust the stamped version
        return "ready"


def _wait_for_creator(path: Path, quiet_for: float = 5.0, timeout: float = 180.0) -> str:
    """Wait while another process is creating or migrating the SQLite store at ``path``; its state.

    A store short of the latest schema that was written in the last ``quiet_for``
    seconds is being created by someone (MLflow holds no lock while it migrates, so a
    second migration at once breaks the schema); one left alone longer is an old store
    to upgrade, or a creator that died, and MLflow handles it as it would alone.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        state = _schema_state(path)
        if state in ("absent", "ready", "damaged") or time.monotonic() > deadline:
            return state
        journal = path.with_name(path.name + "-journal")
        try:
            touched = max(p.stat().st_mtime for p in (path, journal) if p.exists())
        except (OSError, ValueError):  # gone meanwhile
            continue
        if time.time() - touched > quiet_for:
            return state
        time.sleep(0.2)


def _create_atomically(path: Path) -> None:
    """Create a fresh MLflow SQLite store beside ``path``, then give it that name unless taken.

    Why: any process opening ``path`` meanwhile (``mlflow ui``, a plain ``MlflowClient``)
    either finds no file and creates its own, which then wins, or finds a complete one;
    it never meets a half-migrated schema of ours, nor we one of its.
    """
    from mlflow.tracking import MlflowClient

    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}")
    try:
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp}")
        client.search_experiments(max_results=1)  # creates and migrates the schema
        try:
            client._tracking_client.store.engine.dispose()
        except AttributeError:
            pass
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process created it meanwhile: theirs is the store
            pass
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as plain values: what the rest of doe-sr reads of a run.

    Why a copy instead of MLflow's ``Run`` entity: callers outside ``tracking`` then
    never touch MLflow's types, so the store stays swappable and the import contract
    ("only tracking imports MLflow") holds for attribute access too.
    """

    run_id: str
    name: str
    status: str
    start_time: int | None
    end_time: int | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifact_uri: str = ""


def _record(run) -> RunRecord:  # noqa: ANN001 - an mlflow.entities.Run
    """The plain :class:`RunRecord` of an MLflow ``Run`` entity."""
    info, data = run.info, run.data
    return RunRecord(run_id=info.run_id, name=info.run_name or "", status=info.status,
                     start_time=info.start_time, end_time=info.end_time, tags=dict(data.tags),
                     params=dict(data.params), metrics=dict(data.metrics), artifact_uri=info.artifact_uri or "")


def quiet_mlflow() -> None:
    # MLflow's first use of an SQLite store runs its migrations through alembic,
    # which logs a page of INFO lines that say nothing to a researcher.
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent", "mlflow.store"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def git_commit() -> str:
    """The working tree's commit, so a run can be traced back to its code ('' outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


class Tracker:
    """The MLflow side of one study."""

    def __init__(self, uri: str, experiment: str):
        quiet_mlflow()
        self.uri, artifact_location = resolve_uri(uri)
        self.artifact_root = artifact_location  # where a local store keeps artifacts (None: the server says)
        exp = self._open_store(experiment)
        if exp is None:
            try:
                self.experiment_id = self._client.create_experiment(experiment, artifact_location=artifact_location,
                                                                    tags={EXPERIMENT_KIND: TRAINING_KIND})
            except Exception:  # another worker created it first
                exp = self._client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id

    def _open_store(self, experiment: str, attempts: int = 10):
        """Open the store and look up ``experiment``.

        A local SQLite store is created atomically when absent, and one that another
        process is creating is waited for (see :func:`_wait_for_creator`): processes
        outside doe-sr (``mlflow ui``, a plain ``MlflowClient``) take no lock, and two
        MLflow migrations at once fail with ``table datasets already exists``. The
        retries cover what is left of that race. A damaged file is refused in one line.
        """
        import sqlite3
        import time

        from mlflow.tracking import MlflowClient

        path = sqlite_path(self.uri)
        if path is not None:
            refuse_damaged_sqlite(path, "MLflow")
            if _wait_for_creator(path) == "absent":
                _create_atomically(path)
        for attempt in range(attempts):
            refuse_damaged_sqlite(path, "MLflow")
            try:
                self._client = MlflowClient(tracking_uri=self.uri)
                return self._client.get_experiment_by_name(experiment)
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if path is not None and type(getattr(exc, "orig", exc)) is sqlite3.DatabaseError:
                    refuse_damaged_sqlite(path, "MLflow", first)
                if not any(m in str(exc) for m in _CONCURRENT_CREATION):
                    raise
                if attempt + 1 == attempts:
                    if path is None:
                        raise
                    from doe_sr.core.errors import UserError

                    raise UserError(f"{path}: its MLflow schema was left half-created or half-migrated ({first}), "
                                    "perhaps by another process that stopped meanwhile; move it away (a new one "
                                    "is created in its place) or restore it from a backup") from None
                time.sleep(1.0)
                if path is not None:
                    _wait_for_creator(path)
        return None

    def mark_training_experiment(self) -> None:
        """Tag the experiment as model training for the MLflow UI (see ``EXPERIMENT_KIND``),
        for experiments created before doe-sr tagged them at creation."""
        tags = self._client.get_experiment(self.experiment_id).tags
        if tags.get(EXPERIMENT_KIND) != TRAINING_KIND:
            self._client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, TRAINING_KIND)

    # -- runs ------------------------------------------------------------------------
    def find_parent(self, study: str) -> str | None:
        runs = self._client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE}` = 'parent' and tags.`{STUDY}` = '{study}'",
            order_by=["attributes.start_time ASC", "attributes.run_id ASC"], max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def parent_run(self, study: str, *, params: Mapping[str, object], tags: Mapping[str, str],
                   artifacts: Iterable[Path] = (), description: str = "") -> str:
        """The study's parent run, created on first use (its params describe the fixed settings).

        One parent per study: local processes find-or-create it under the engine's store
        lock; processes on several machines sharing a server may both create one, so a
        creator that finds an older parent beside its own deletes its own and uses the
        older one (the oldest, by start time then id, wins for everyone).

        A new parent is RUNNING: the parent is the study, so it ends when the study's
        last run does (the engine ends it, see :meth:`end_parent`), and its start is the
        study's. ``description`` is the study's, shown by the UI as the run's description.
        """
        run_id = self.find_parent(study)
        if run_id is not None:
            return run_id
        run = self._client.create_run(self.experiment_id, run_name=study,
                                     tags={ROLE: "parent", STUDY: study, **({NOTE: description} if description else {}), **tags})
        run_id = run.info.run_id
        first = self.find_parent(study)
        if first is not None and first != run_id:
            self._client.delete_run(run_id)
            return first
        self.log_params(run_id, params)
        for path in artifacts:
            self._client.log_artifact(run_id, str(path))
        return run_id

    def start_parent(self, run_id: str, description: str) -> None:
        """Mark the study's parent RUNNING again as a session starts work, with the study's
        ``description``; the reason of its last end (a KILLED or FAILED session) goes.

        Its end time stays that of the last session until it ends again: MLflow keeps a
        run's end time through a status change, and the UI shows a RUNNING run's status
        beside it.
        """
        run = self._client.get_run(run_id)
        if run.data.tags.get(NOTE, "") != description:
            self.set_tags(run_id, {NOTE: description})
        if REASON in run.data.tags:
            self._client.delete_tag(run_id, REASON)
        if run.info.status != "RUNNING":
            self._client.update_run(run_id, status="RUNNING")

    def end_parent(self, run_id: str, status: str, reason: str | None = None) -> bool:
        """End the study's parent in ``status`` (end time: now) if it is RUNNING; whether it was.

        Why only a RUNNING one: every session that stops may call this, and the first to
        find the study over ends it; a later one (the ``doe-sr run`` whose workers just
        ended it) must not move its end time or overwrite its status.
        """
        if self.status(run_id) != "RUNNING":
            return False
        self.finish(run_id, status, reason)
        return True

    def start_child(self, parent_id: str, *, study: str, run_name: str, params: Mapping[str, object],
                    tags: Mapping[str, str]) -> str:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        run = self._client.create_run(
            self.experiment_id, run_name=run_name,
            tags={MLFLOW_PARENT_RUN_ID: parent_id, STUDY: study, ROLE: "array_run", **tags},
        )
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]
        if items:
            self._client.log_batch(run_id, metrics=items)

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        from mlflow.entities import RunTag

        self._client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(run_id, str(path), artifact_path)

    def log_table(self, run_id: str, table: pd.DataFrame, artifact_file: str) -> None:
        """``table`` as an MLflow table artifact (``artifact_file`` ends in ``.json``), which the
        UI's artifact view shows as a table and its evaluation view can compare across runs."""
        self._client.log_table(run_id, data=table, artifact_file=artifact_file)

    def model_file(self, run_id: str) -> Path:
        """The ``.keras`` model an array run logged, downloaded to a local path (see
        `doe_sr.tracking.models`)."""
        from doe_sr.tracking.models import model_file

        return model_file(self._client, run_id)

    def per_image(self, run_id: str, artifact: str = "test_images.csv") -> pd.DataFrame | None:
        """The per-image test scores a finished child logged (``test_images.csv``); None when it has none.

        Why: paired tests between two runs compare them image by image on the same test split.
        """
        import pandas as pd

        if not any(a.path == artifact for a in self._client.list_artifacts(run_id)):
            return None
        return pd.read_csv(self._client.download_artifacts(run_id, artifact))

    def finish(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        """Close a run; FAILED and KILLED runs carry their reason as a tag."""
        if reason:
            self.set_tags(run_id, {REASON: reason[:5000]})
        self._client.set_terminated(run_id, status)

    def status(self, run_id: str) -> str:
        return self._client.get_run(run_id).info.status

    # -- reading back ------------------------------------------------------------------
    def run(self, run_id: str) -> RunRecord:
        """One run, by id, as plain values."""
        return _record(self._client.get_run(run_id))

    def metric_history(self, run_id: str, key: str) -> list[float]:
        """Every value a run logged for metric ``key``, in step order (e.g. the per-epoch loss)."""
        return [m.value for m in sorted(self._client.get_metric_history(run_id, key),
                                        key=lambda m: (m.step, m.timestamp))]

    def runs(self, study: str, *, role: str = "array_run", status: str | None = None,
             run: int | None = None, replicate: int | None = None) -> list[RunRecord]:
        """The study's child runs of one role (``array_run`` or ``confirmation``), oldest first,
        as plain values; only those in ``status`` and of (``run``, ``replicate``) when given."""
        where = f"tags.`{ROLE}` = '{role}' and tags.`{STUDY}` = '{study}'"
        if status is not None:
            where += f" and attributes.status = '{status}'"
        if run is not None:
            where += f" and tags.`{RUN}` = '{run}'"
        if replicate is not None:
            where += f" and tags.`{REPLICATE}` = '{replicate}'"
        return [_record(r) for r in self._client.search_runs([self.experiment_id], filter_string=where,
                                                             order_by=["attributes.start_time ASC"],
                                                             max_results=50000)]

    def results(self, study: str, factors: list[str], *, status: str = "FINISHED",
                role: str = "array_run") -> pd.DataFrame:
        """One row per child run of ``role`` in ``status``: run, replicate, factor values (as logged), metrics.

        Confirmation runs are a role of their own, so array analyses never see them
        (they are not rows of the array and would unbalance it).
        """
        rows = []
        for r in self.runs(study, role=role):
            if r.status != status:
                continue
            row: dict[str, object] = {
                "run": int(r.tags.get(RUN, 0)),
                "replicate": int(r.tags.get(REPLICATE, 0)),
                "run_id": r.run_id,
            }
            row.update({f: r.params.get(f) for f in factors})
            row.update(r.metrics)
            rows.append(row)
        df = pd.DataFrame(rows)
        return df.sort_values(["run", "replicate"]).reset_index(drop=True) if len(df) else df

    def log_dataset(self, run_id: str, *, name: str, digest: str, source: str, schema: Mapping[str, object],
                    profile: Mapping[str, object], context: str = "training") -> None:
        """Record the images a run used as an MLflow dataset input (``run.inputs``).

        Why: the digest says what the data *are* (names, contents, split, LR protocol),
        so runs trained on other images can be told apart in MLflow itself. The store
        keeps one dataset per (experiment, name, digest) and one input per run, so
        logging the same dataset again is a no-op.
        """
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}),
                          schema=json.dumps(schema, sort_keys=True), profile=json.dumps(profile, sort_keys=True))
        self._client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT,
                                                                                        context)])])


def environment() -> dict[str, str]:
    """What a run ran on: Python, platform, package versions, code version."""
    from importlib.metadata import PackageNotFoundError, version

    env = {"python": platform.python_version(), "platform": platform.platform(), "git_commit": git_commit()}
    for pkg in ("doe-sr", "tensorflow", "keras", "optuna", "mlflow", "numpy", "pyDOE3"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = ""
    return env
