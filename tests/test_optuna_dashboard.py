"""optuna-dashboard reads a study's Optuna storage, and its trials carry readable user
attributes (issue 13): the run, the replicate, the role and the MLflow run id of each trial.

Why through the real ``optuna-dashboard`` command and its JSON API: the README tells users
to run exactly that command on ``sqlite:///<tracking folder>/optuna.db``; the test checks
what they will see, not what Optuna's Python API returns. The MLflow run id is checked
against the study's MLflow store with a plain ``MlflowClient``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, wait_for

HEX32 = re.compile(r"[0-9a-f]{32}")


def _get(url: str):
    """The JSON at ``url``, or None while nothing (or not yet the app) answers there."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            if r.status != 200:
                return None
            return json.loads(r.read().decode())
    except (OSError, ValueError):
        return None


@pytest.mark.timeout(300)
def test_optuna_dashboard_reads_the_storage_and_the_trials_user_attrs(finished_tiny: Path):
    exe = shutil.which("optuna-dashboard")
    if exe is None:
        pytest.skip("the optuna-dashboard executable is not installed")
    folder = finished_tiny.parent
    db = folder / "mlruns" / "optuna.db"
    assert db.is_file(), f"no Optuna storage at {db}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([exe, f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        listing = wait_for(lambda: _get(f"{base}/api/studies"), timeout=120,
                           what="optuna-dashboard to answer /api/studies", proc=proc)
        studies = {s["study_name"]: s for s in listing["study_summaries"]}
        assert "tiny" in studies, sorted(studies)
        assert studies["tiny"]["directions"] == ["maximize"]
        detail = _get(f"{base}/api/studies/{studies['tiny']['study_id']}")
        assert detail is not None and detail["name"] == "tiny"
        trials = detail["trials"]
        # the array's 9 runs, one trial each (other tests may add runs to the shared
        # study, so every completed trial is checked, and the 9 runs are all there)
        attrs = [{a["key"]: a["value"] for a in t["user_attrs"]} for t in trials]
        complete = [a for t, a in zip(trials, attrs) if t["state"] == "Complete"]
        assert sorted({int(a["run"]) for a in complete}) == list(range(1, 10)), attrs
        assert len(trials) >= 9
        run_ids = {}
        for a in complete:
            assert {"run", "replicate", "mlflow_run_id"} <= set(a), a
            assert a["run"].isdigit() and a["replicate"].isdigit(), a
            assert HEX32.fullmatch(a["mlflow_run_id"]), a
            run_ids[a["mlflow_run_id"]] = a["run"]
        assert len(run_ids) == len(complete)  # one MLflow run per trial
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    for run_id, run_number in run_ids.items():
        run = client.get_run(run_id)  # raises if the store has no such run
        assert run.data.tags.get("doe_sr.role") == "array_run"
        assert run.data.tags.get("doe_sr.run") == run_number  # the trial's run is the MLflow child's
    # the role as doe-sr tags the MLflow child ("doe_sr.role"), readable in the dashboard too
    assert all(a.get("role") == "array_run" for a in complete), [a.get("role") for a in complete]
