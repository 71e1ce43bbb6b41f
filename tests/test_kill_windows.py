"""``kill -9`` between the MLflow and the Optuna write of one run, at exactly that point.

A worker writes two stores that share no transaction: it creates the MLflow child, stores
its id on the trial, trains, marks the child FINISHED and then tells Optuna the trial is
complete. The test-only variable ``DOE_SR_TEST_DIE_AT`` makes the worker SIGKILL itself
right after one of those writes; the next ``doe-sr run`` must leave exactly one FINISHED
child per (run, replicate), no child RUNNING, and an analysis that sees each run once.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import doe_sr
from test_workers import L4_STUDY, REASON, child_runs, pair, trials

WINDOWS = {
    # child created, its id not yet stored on the trial: only its tags lead to it
    "after-child-created": "KILLED",
    # child FINISHED, the trial not yet told complete: its result must be adopted, not trained again
    "after-child-finished": "FINISHED",
}



@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_a_worker_killed_between_the_two_stores_is_recovered(window, tmp_path):
    from optuna.trial import TrialState

    mlruns = tmp_path / "mlruns"
    study = tmp_path / "l4.yaml"
    study.write_text(L4_STUDY.format(name="l4", replicates=1, bad_lr="0.01", tracking=mlruns))
    storage, tracking = f"sqlite:///{mlruns / 'optuna.db'}", f"sqlite:///{mlruns / 'mlflow.db'}"

    out = doe_sr("run", str(study), "--no-report", cwd=tmp_path, env=dict(DOE_SR_TEST_DIE_AT=window))
    assert out.returncode == 1 and "signal 9" in out.stdout, out.stdout + out.stderr
    victim, = child_runs(tracking, "l4")  # the worker died at its first run
    # `run` saw its worker die: the orphan is closed already (found by its tags), a finished child kept
    assert victim.info.status == WINDOWS[window]
    assert TrialState.COMPLETE not in [t.state for t in trials(storage, "l4")]  # Optuna never heard

    out = doe_sr("run", str(study), "--no-report", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    runs = child_runs(tracking, "l4")
    assert "RUNNING" not in [r.info.status for r in runs]
    finished = Counter(pair(r) for r in runs if r.info.status == "FINISHED")
    assert finished == {(1, 0): 1, (2, 0): 1, (3, 0): 1, (4, 0): 1}
    victim = next(r for r in runs if r.info.run_id == victim.info.run_id)
    assert victim.info.status == WINDOWS[window]
    if window == "after-child-created":
        assert "crash or kill" in victim.data.tags[REASON]
    complete = [t for t in trials(storage, "l4") if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["run"] for t in complete) == [1, 2, 3, 4]
    # the queue and the record agree: each COMPLETE trial names a FINISHED child with its value
    by_id = {r.info.run_id: r for r in runs}
    for t in complete:
        assert by_id[t.user_attrs["mlflow_run_id"]].data.metrics["val_psnr"] == pytest.approx(t.value)
    if window == "after-child-finished":  # adopted, not trained again
        assert any(t.user_attrs["mlflow_run_id"] == victim.info.run_id for t in complete)

    out = doe_sr("analyze", str(study), "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [r["n"] for r in json.loads(out.stdout)["runs"]] == [1, 1, 1, 1]
