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
HTTP, so machines need no access to the server's disk. Only this module imports MLflow.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
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


def resolve_uri(uri: str) -> tuple[str, str | None]:
    """(tracking URI, artifact location for new experiments) of a study's ``tracking.uri``.

    A plain path means a local store: ``<path>/mlflow.db`` (SQLite) with artifacts in
    ``<path>/artifacts``. Anything with a scheme is passed to MLflow unchanged.
    """
    if "://" in uri or uri.startswith("databricks"):
        return uri, None
    folder = Path(uri).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


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
        from mlflow.tracking import MlflowClient

        self.uri, artifact_location = resolve_uri(uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
            except Exception:  # another worker created it first
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id

    # -- runs ------------------------------------------------------------------------
    def find_parent(self, study: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE}` = 'parent' and tags.`{STUDY}` = '{study}'",
            order_by=["attributes.start_time ASC"], max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def parent_run(self, study: str, *, params: Mapping[str, object], tags: Mapping[str, str],
                   artifacts: Iterable[Path] = ()) -> str:
        """The study's parent run, created on first use (its params describe the fixed settings)."""
        run_id = self.find_parent(study)
        if run_id is not None:
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=study,
                                     tags={ROLE: "parent", STUDY: study, **tags})
        run_id = run.info.run_id
        self.log_params(run_id, params)
        for path in artifacts:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def start_child(self, parent_id: str, *, study: str, run_name: str, params: Mapping[str, object],
                    tags: Mapping[str, str]) -> str:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        run = self.client.create_run(
            self.experiment_id, run_name=run_name,
            tags={MLFLOW_PARENT_RUN_ID: parent_id, STUDY: study, ROLE: "array_run", **tags},
        )
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def finish(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        """Close a run; FAILED and KILLED runs carry their reason as a tag."""
        if reason:
            self.set_tags(run_id, {REASON: reason[:5000]})
        self.client.set_terminated(run_id, status)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    # -- reading back ------------------------------------------------------------------
    def child_runs(self, study: str, *, role: str = "array_run") -> list:
        """The study's child runs of one role (``array_run`` or ``confirmation``), oldest first."""
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE}` = '{role}' and tags.`{STUDY}` = '{study}'",
            order_by=["attributes.start_time ASC"], max_results=50000,
        )

    def results(self, study: str, factors: list[str], *, status: str = "FINISHED",
                role: str = "array_run") -> pd.DataFrame:
        """One row per child run of ``role`` in ``status``: run, replicate, factor values (as logged), metrics.

        Confirmation runs are a role of their own, so array analyses never see them
        (they are not rows of the array and would unbalance it).
        """
        rows = []
        for r in self.child_runs(study, role=role):
            if r.info.status != status:
                continue
            row: dict[str, object] = {
                "run": int(r.data.tags.get(RUN, 0)),
                "replicate": int(r.data.tags.get(REPLICATE, 0)),
                "run_id": r.info.run_id,
            }
            row.update({f: r.data.params.get(f) for f in factors})
            row.update(r.data.metrics)
            rows.append(row)
        df = pd.DataFrame(rows)
        return df.sort_values(["run", "replicate"]).reset_index(drop=True) if len(df) else df


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
