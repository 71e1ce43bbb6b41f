"""The run engine with real processes, TensorFlow, SQLite and MLflow: several workers,
a worker killed with SIGKILL, Ctrl-C, a diverging level, the missing-runs policy.

Outcomes are read back independently of the engine: Optuna trials through a plain
``RDBStorage``, MLflow runs through ``MlflowClient``.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest
from conftest import doe_sr, start_doe_sr, wait_for

ROLE, RUN, REP, REASON = "doe_sr.role", "doe_sr.run", "doe_sr.replicate", "doe_sr.failure_reason"

L4_STUDY = """
name: {name}
design:
  array: L4(2^3)
  replicates: {replicates}
  factors:
    - name: learning_rate
      levels: [0.001, {bad_lr}]
    - name: activation
      levels: [relu, tanh]
    - name: filters
      levels: [4, 6]
data:
  source: sample
  patch_size: 32
  max_side: 96
model:
  depth: 5
training:
  optimizer: sgd
  epochs: 2
  steps_per_epoch: 2
  batch_size: 2
tracking:
  uri: {tracking}
execution:
  heartbeat_interval: 2
  grace_period: 6
"""





def parent_pid(pid: int) -> int | None:
    """The parent of process ``pid`` (None once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def trials(storage_url: str, study: str) -> list:
    """The study's Optuna trials, read with a plain storage (not the engine's)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study, storage=storage_url).get_trials(deepcopy=False)


def child_runs(tracking_uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get(ROLE) == "array_run"]


def pair(run) -> tuple[int, int]:
    return int(run.data.tags[RUN]), int(run.data.tags[REP])



def check_two_workers(folder: Path, study_path: Path, name: str, storage: str, tracking: str, pairs: int) -> None:
    """``doe-sr run --workers 2``: every (run, replicate) trained once, by both workers."""
    from optuna.trial import TrialState

    args = ["run", str(study_path), "--workers", "2", "--no-report"]
    if not storage.startswith("sqlite"):
        args += ["--storage", storage]
    out = doe_sr(*args, cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = child_runs(tracking, name)
    assert [r.info.status for r in runs] == ["FINISHED"] * pairs  # nothing failed, killed or left running
    assert sorted(Counter(pair(r) for r in runs).values()) == [1] * pairs
    ts = trials(storage, name)
    assert len(ts) == pairs, "a worker created a trial outside the design (or a pair ran twice)"
    assert all(t.state == TrialState.COMPLETE for t in ts)
    assert len({(t.user_attrs["run"], t.user_attrs["replicate"]) for t in ts}) == pairs
    assert len({t.user_attrs["worker"] for t in ts}) == 2, "both workers should have trained runs"
    # the record and the queue agree on every response
    by_pair = {pair(r): r.data.metrics["val_psnr"] for r in runs}
    for t in ts:
        assert t.value == pytest.approx(by_pair[(t.user_attrs["run"], t.user_attrs["replicate"])])


def test_two_workers_train_every_run_once(tiny_study, tmp_path):
    mlruns = tmp_path / "mlruns"
    check_two_workers(tmp_path, tiny_study, "tiny", f"sqlite:///{mlruns / 'optuna.db'}",
                      f"sqlite:///{mlruns / 'mlflow.db'}", pairs=9)


def test_kill_ctrl_c_and_a_diverging_level(tmp_path, monkeypatch):
    """kill -9 of a worker mid-run, then Ctrl-C of ``doe-sr run`` mid-run, then a final
    run: each interrupted run is redone, finished runs are kept once, no MLflow run is
    left RUNNING; the diverging level (SGD at lr 1e30) fails with its reason and the
    study goes on; analysis refuses the holes unless ``--impute worst``."""
    from optuna.trial import TrialState

    monkeypatch.chdir(tmp_path)
    mlruns = tmp_path / "mlruns"
    study = tmp_path / "l4.yaml"
    # Longer runs than the other tests: the poller below must catch a run in flight even
    # when the machine is busy (a 4-step run can start and finish between two polls).
    study.write_text(L4_STUDY.format(name="l4", replicates=1, bad_lr="1.0e+30", tracking=mlruns)
                     .replace("steps_per_epoch: 2", "steps_per_epoch: 150"))
    storage, tracking = f"sqlite:///{mlruns / 'optuna.db'}", f"sqlite:///{mlruns / 'mlflow.db'}"

    def running_with_child(exclude: set[str]):
        if not (mlruns / "optuna.db").exists():
            return None
        try:
            ts = trials(storage, "l4")
        except Exception:  # the study is being created
            return None
        return next((t for t in ts if t.state == TrialState.RUNNING and t.user_attrs.get("mlflow_run_id")
                     and t.user_attrs["mlflow_run_id"] not in exclude), None)

    # 1. kill -9 the worker in the middle of its first run
    first = start_doe_sr("run", str(study), "--no-report", cwd=tmp_path)
    victim = wait_for(lambda: running_with_child(set()), what="a running trial", proc=first)
    pid = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    out = first.communicate(timeout=120)[0]
    assert first.returncode == 1, out
    assert "signal 9" in out
    killed_id = victim.user_attrs["mlflow_run_id"]
    # killed mid-run, not after it (`run` fails the trial of its dead worker at once)
    assert trials(storage, "l4")[victim.number].state in (TrialState.RUNNING, TrialState.FAIL)

    # 2. Ctrl-C the next `doe-sr run` in the middle of a run of its own worker
    second = start_doe_sr("run", str(study), "--no-report", cwd=tmp_path)

    def own_child_in_flight():
        """A RUNNING MLflow child of a worker of `second`, once its trial holds the child's id."""
        try:
            runs = child_runs(tracking, "l4")
        except Exception:  # the store is busy
            return None
        for r in runs:
            worker = r.data.tags.get("doe_sr.worker", "")
            if r.info.status != "RUNNING" or not worker.rpartition(":")[2].isdigit():
                continue
            if parent_pid(int(worker.rpartition(":")[2])) == second.pid:
                t = trials(storage, "l4")[int(r.data.tags["doe_sr.optuna_trial"])]
                if t.user_attrs.get("mlflow_run_id") == r.info.run_id:
                    return r
        return None

    target = wait_for(own_child_in_flight, what="a run in flight of the second session's worker",
                      proc=second)
    second.send_signal(signal.SIGINT)
    out = second.communicate(timeout=120)[0]
    assert second.returncode == 130, out
    interrupted_id = target.info.run_id
    t = trials(storage, "l4")[int(target.data.tags["doe_sr.optuna_trial"])]
    assert t.state == TrialState.FAIL and t.user_attrs["failure"] == "interrupted"

    # 3. the last session finishes the study; the diverging runs fail, so the exit code is 1
    out = doe_sr("run", str(study), "--no-report", cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    runs = {r.info.run_id: r for r in child_runs(tracking, "l4")}
    assert "RUNNING" not in [r.info.status for r in runs.values()]
    killed = runs[killed_id]
    assert killed.info.status == "KILLED" and "crash or kill" in killed.data.tags[REASON]
    ctrl_c = runs[interrupted_id]
    assert ctrl_c.info.status == "KILLED" and "Ctrl-C" in ctrl_c.data.tags[REASON]
    finished = Counter(pair(r) for r in runs.values() if r.info.status == "FINISHED")
    assert finished == {(1, 0): 1, (2, 0): 1}  # lr 0.001 runs, each exactly once, the interrupted ones redone
    failed = {pair(r): r.data.tags[REASON] for r in runs.values() if r.info.status == "FAILED"}
    assert sorted(failed) == [(3, 0), (4, 0)] and all("NaN" in why for why in failed.values())
    assert {pair(killed), pair(ctrl_c)} <= {(1, 0), (2, 0), (3, 0), (4, 0)}
    ts = trials(storage, "l4")
    assert sorted(t.user_attrs["run"] for t in ts if t.state == TrialState.COMPLETE) == [1, 2]
    assert sorted(t.user_attrs["run"] for t in ts if t.state == TrialState.FAIL and "NaN" in t.user_attrs.get("failure", "")) == [3, 4]

    # 4. status lists the failures with their reasons
    out = doe_sr("status", str(study), "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    import json

    states = {s["run"]: s for s in json.loads(out.stdout)}
    assert [states[r]["state"] for r in (1, 2, 3, 4)] == ["done", "done", "failed", "failed"]
    assert states[3]["reason"] == failed[(3, 0)][:1000]

    # 5. analysis refuses the holes by default and imputes them, with a warning, when asked
    out = doe_sr("analyze", str(study), "--format", "json", cwd=tmp_path)
    assert out.returncode == 2 and "3, 4" in out.stderr and "--impute worst" in out.stderr, out.stderr
    out = doe_sr("analyze", str(study), "--format", "json", "--impute", "worst", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert any("imputed" in w for w in result["warnings"])
    worst = min(r.data.metrics["val_psnr"] for r in runs.values() if r.info.status == "FINISHED")
    assert result["mean_response"]["learning_rate"]["1e+30"] == pytest.approx(worst)
