"""The study's record in MLflow as the UI shows it (issue 14): the parent run is the study
(RUNNING while it runs, then FINISHED, FAILED or KILLED, spanning its runs, described
as the study is), children are named by their levels and log learning curves by epoch,
and the experiment is one of model training, not GenAI.

Read back with a plain ``MlflowClient``, independently of doe-sr's tracker.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from conftest import doe_sr, start_doe_sr

ROLE, NOTE, REASON = "doe_sr.role", "mlflow.note.content", "doe_sr.failure_reason"
KIND = "mlflow.experimentKind"


def _client(study_path: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{study_path.parent / 'mlruns' / 'mlflow.db'}")


def _runs(client, experiment: str) -> tuple[object, list]:
    """(the parent, its array-run children), oldest child first."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000, order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if r.data.tags.get(ROLE) == "parent"]
    assert len(parents) == 1, [r.data.tags.get(ROLE) for r in runs]
    return parents[0], [r for r in runs if r.data.tags.get(ROLE) == "array_run"]


def _check_spans(parent, children) -> None:
    """The parent lasts at least as long as its children together: it is the study."""
    assert parent.info.start_time <= min(c.info.start_time for c in children)
    assert parent.info.end_time >= max(c.info.end_time for c in children)


def test_parent_status_follows_the_sessions_in_the_store(tmp_path):
    """The tracker's part, without training: a new parent is RUNNING with the study's
    description; it ends once (a second end neither moves its end time nor its status);
    a new session reopens it without the reason of its last end."""
    from doe_sr.tracking.store import Tracker

    tracker = Tracker(str(tmp_path / "mlruns"), "exp")
    client = _client(tmp_path / "study.yaml")
    assert client.get_experiment(tracker.experiment_id).tags[KIND] == "custom_model_development"
    parent = tracker.parent_run("s", params={"a": 1}, tags={}, description="what the study is about")
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and run.data.tags[NOTE] == "what the study is about"

    assert tracker.end_parent(parent, "KILLED", "interrupted")
    ended = client.get_run(parent).info.end_time
    assert not tracker.end_parent(parent, "FINISHED")
    run = client.get_run(parent)
    assert (run.info.status, run.info.end_time, run.data.tags[REASON]) == ("KILLED", ended, "interrupted")

    tracker.start_parent(parent, "a corrected description")
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and REASON not in run.data.tags
    assert run.data.tags[NOTE] == "a corrected description"
    assert tracker.end_parent(parent, "FINISHED")
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_finished_study_reads_as_one_in_the_ui(finished_tiny):
    from doe_sr.study.design import build_runs
    from doe_sr.study.schema import load_study

    study = load_study(finished_tiny)
    client = _client(finished_tiny)
    parent, children = _runs(client, study.experiment)
    # children carry their levels, e.g. "r08 lr=0.0001 adam tanh f8"
    expected = {str(r.run): r.label() for r in build_runs(study)}
    assert {c.data.tags["doe_sr.run"]: c.info.run_name for c in children} == expected
    assert expected["8"] == "r08 lr=0.0001 adam tanh f8"
    # the parent is the study: FINISHED, spanning its runs, described as the study
    assert parent.info.status == "FINISHED"
    _check_spans(parent, children)
    assert parent.data.tags.get(NOTE, "") == study.description
    assert client.get_experiment(parent.info.experiment_id).tags[KIND] == "custom_model_development"
    # learning curves: val_psnr and loss per epoch, one step per epoch
    for child in children:
        for metric in ("val_psnr", "loss"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, metric)]
            assert sorted(steps) == list(range(study.training.epochs)), (child.info.run_name, metric, steps)


def _in_flight(client, experiment: str):
    """A RUNNING child under a RUNNING parent (None while the store is created or busy)."""
    try:
        parent, children = _runs(client, experiment)
    except Exception:  # no store, experiment or parent yet, or the store is busy
        return None
    running = [c for c in children if c.info.status == "RUNNING"]
    return parent if parent.info.status == "RUNNING" and running else None


@pytest.mark.timeout(1200)
def test_ctrl_c_kills_the_parent_and_a_resumed_study_finishes_it(tiny_study):
    """Ctrl-C of ``doe-sr run`` mid-study leaves the parent KILLED with its reason; the next
    ``doe-sr run`` reopens it, and it ends FINISHED, spanning every run, reason gone."""
    description = "Tiny L9 study, described on its parent run"
    tiny_study.write_text(f"description: \"{description}\"\n" + tiny_study.read_text())
    cwd = tiny_study.parent
    client = _client(tiny_study)

    first = start_doe_sr("run", str(tiny_study), "--no-report", cwd=cwd)
    deadline = time.monotonic() + 600
    while not _in_flight(client, "tiny"):
        assert first.poll() is None, f"doe-sr run ended ({first.returncode}) before a run was in flight:\n" \
                                     f"{first.communicate()[0]}"
        assert time.monotonic() < deadline, "no run in flight after 600 s"
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    out = first.communicate(timeout=300)[0]
    assert first.returncode == 130, out
    parent, children = _runs(client, "tiny")
    assert parent.info.status == "KILLED", out
    assert "interrupted" in parent.data.tags[REASON]
    assert parent.data.tags[NOTE] == description
    assert "RUNNING" not in [c.info.status for c in children]
    _check_spans(parent, children)

    out = doe_sr("run", str(tiny_study), "--no-report", cwd=cwd)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    parent, children = _runs(client, "tiny")
    assert parent.info.status == "FINISHED" and REASON not in parent.data.tags
    assert parent.data.tags[NOTE] == description
    assert sorted(int(c.data.tags["doe_sr.run"]) for c in children if c.info.status == "FINISHED") == \
        list(range(1, 10))
    _check_spans(parent, children)
