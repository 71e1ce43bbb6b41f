"""Concurrent starts on a fresh folder: the stores are created once, under a lock.

Two ``doe-sr run`` of one study started together used to crash in MLflow's schema
migration (``duplicate column name: step``), refuse Optuna's storage ("check the URL"),
or make two parent runs; a plain ``MlflowClient`` opening the fresh store while ``run``
created it made ``run`` die with ``table datasets already exists``.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from test_workers import L4_STUDY, ROLE, child_runs, pair

PLAIN_CLIENT = """
import sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
uri, stop, start = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
while not start.exists() and not stop.exists():  # doe-sr is about to open the MLflow store
    time.sleep(0.01)
while not stop.exists():
    try:
        MlflowClient(tracking_uri=uri).search_experiments()
    except Exception:
        pass  # not ours: only doe-sr has to survive the race
    time.sleep(0.05)
"""


def _study(tmp_path: Path) -> Path:
    study = tmp_path / "l4.yaml"
    study.write_text(L4_STUDY.format(name="l4", replicates=1, bad_lr="0.01", tracking=tmp_path / "mlruns"))
    return study


def _run(study: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "doe_sr.cli", "run", str(study), "--no-report", *extra],
                            cwd=study.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _parents(tracking: str) -> list:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("l4")
    return [r for r in client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
            if r.data.tags.get(ROLE) == "parent"]


def _check_study(tracking: str) -> None:
    runs = child_runs(tracking, "l4")
    assert [r.info.status for r in runs] == ["FINISHED"] * 4
    assert Counter(pair(r) for r in runs) == {(1, 0): 1, (2, 0): 1, (3, 0): 1, (4, 0): 1}
    parents = _parents(tracking)
    assert len(parents) == 1, f"{len(parents)} parent runs (deleted ones included)"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}


def test_two_runs_started_together_share_one_parent_and_train_each_run_once(tmp_path):
    study = _study(tmp_path)
    procs = [_run(study), _run(study)]  # both start before either has created a store
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
        assert "Traceback" not in out, out
    _check_study(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    logs = sorted((tmp_path / "mlruns" / "logs" / "l4").glob("*.log"))
    assert len(logs) == 2, "each session writes its own worker log"


def test_a_plain_mlflow_client_creating_the_store_meanwhile_does_not_stop_run(tmp_path):
    study = _study(tmp_path)
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    stop = tmp_path / "stop"
    # one client: two would break each other's migration; it starts creating the store as
    # soon as `run` has created the Optuna one, that is when `run` opens MLflow's
    start = tmp_path / "mlruns" / "optuna.db"
    clients = [subprocess.Popen([sys.executable, "-c", PLAIN_CLIENT, tracking, str(stop), str(start)])]
    try:
        run = _run(study, "--workers", "2")
        out = run.communicate(timeout=600)[0]
    finally:
        stop.touch()
        for c in clients:
            c.wait(timeout=120)
    assert run.returncode == 0, out
    assert "Traceback" not in out, out
    _check_study(tracking)
