"""Broken stores in ``work/mlruns`` (the study's local folder): garbage, truncated or
damaged SQLite files, folders where a database file should be, and a queue whose MLflow
record was deleted. Real stores are made with Optuna and MLflow themselves, then broken.
"""

from __future__ import annotations

import os
from pathlib import Path

GARBAGE = b"this is not a database, it is a text file someone saved here\n" * 40


def _mlruns(work: Path) -> Path:
    folder = work / "mlruns"
    folder.mkdir(exist_ok=True)
    return folder


def _optuna_db(work: Path) -> Path:
    """A real Optuna database holding the study's queue (4 trials)."""
    from doe_sr.engine.study_engine import Engine
    from doe_sr.study.schema import load_study

    os.chdir(work)  # tracking.uri is relative to the work folder
    engine = Engine(load_study(work / "study.yaml"), work / "study.yaml")
    engine.queue.optuna_study  # creates the schema and enqueues the design
    engine.queue.storage.engine.dispose()
    return _mlruns(work) / "optuna.db"


def _mlflow_db(work: Path) -> Path:
    """A real MLflow database (schema migrated, one experiment)."""
    from mlflow.tracking import MlflowClient

    path = _mlruns(work) / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").create_experiment("hostile-stores")
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _scramble_after_header(path: Path) -> None:
    """Keep the 100-byte header (and the size), overwrite every page after it."""
    data = path.read_bytes()
    path.write_bytes(data[:100] + bytes((i * 7 + 13) % 256 for i in range(len(data) - 100)))


def optuna_garbage(work: Path) -> None:
    (_mlruns(work) / "optuna.db").write_bytes(GARBAGE)


def optuna_truncated(work: Path) -> None:
    _truncate(_optuna_db(work))


def optuna_scrambled(work: Path) -> None:
    _scramble_after_header(_optuna_db(work))


def optuna_header_only(work: Path) -> None:
    (_mlruns(work) / "optuna.db").write_bytes(b"SQLite format 3\x00" + bytes(84))


def optuna_folder(work: Path) -> None:
    (_mlruns(work) / "optuna.db").mkdir()


def mlflow_garbage(work: Path) -> None:
    (_mlruns(work) / "mlflow.db").write_bytes(GARBAGE)


def mlflow_truncated(work: Path) -> None:
    _truncate(_mlflow_db(work))


def mlflow_scrambled(work: Path) -> None:
    _scramble_after_header(_mlflow_db(work))


def mlflow_folder(work: Path) -> None:
    (_mlruns(work) / "mlflow.db").mkdir()


def mlflow_deleted_optuna_kept(work: Path) -> None:
    """Every run done in the queue, with the MLflow run ids of a store that is gone."""
    from doe_sr.engine.study_engine import Engine
    from doe_sr.study.schema import load_study

    os.chdir(work)
    engine = Engine(load_study(work / "study.yaml"), work / "study.yaml")
    ost = engine.queue.optuna_study
    while (taken := engine.queue.take()) is not None:
        taken.set_user_attr("mlflow_run_id", f"{taken.number:032x}")
        ost.tell(taken.number, 21.5)
    engine.queue.storage.engine.dispose()
