"""``doe-sr ui`` ends everything it started, however it is ended (issue 9, item 11).

The landed version ran ``mlflow ui`` as a plain child: SIGTERM to ``doe-sr ui`` left
``mlflow ui``, its uvicorn workers and the job runner behind, still holding the port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, mlflow_serving, wait_for



def _children() -> dict[int, list[int]]:
    """ppid -> live child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, out, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"




@pytest.mark.timeout(400)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_ui_leaves_nothing_behind(tmp_path: Path, sig: int):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "doe_sr.cli", "ui", "--tracking-uri", str(tmp_path / "mlruns"),
                             "--port", str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    started: set[int] = set()
    try:
        wait_for(lambda: mlflow_serving(port) or proc.poll() is not None, 240, "the MLflow UI to answer")
        assert proc.poll() is None, f"doe-sr ui exited early with {proc.returncode}"
        started = _descendants(proc.pid)
        assert len(started) >= 2, f"expected mlflow ui and its server below doe-sr ui, found {started}"
        os.kill(proc.pid, sig)
        proc.wait(timeout=120)
        wait_for(lambda: not any(_alive(p) for p in started), 120,
                  f"the processes doe-sr ui started ({sorted(started)}) to end")
        wait_for(lambda: not mlflow_serving(port), 30, f"port {port} to stop answering")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in started | _descendants(proc.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_ui_of_a_study_prints_the_link_to_its_runs(finished_tiny: Path):
    """``doe-sr ui STUDY`` (issue 14): serves the study's store, tags its experiment as model
    training, and prints the runs view of the study's experiment, opened in the training
    workflow and filtered to the study; no browser is opened under DOE_SR_NO_BROWSER."""
    import re
    import threading
    import urllib.parse

    from mlflow.tracking import MlflowClient

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "doe_sr.cli", "ui", str(finished_tiny), "--port", str(port)],
                            cwd=finished_tiny.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "DOE_SR_NO_BROWSER": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    started: set[int] = set()
    try:
        link_pattern = re.compile(rf"http://127\.0\.0\.1:{port}/#/experiments/(\w+)/runs\?(\S+)")
        wait_for(lambda: any(link_pattern.search(line) for line in lines) or proc.poll() is not None, 240,
                  "doe-sr ui to print the study's link")
        assert proc.poll() is None, "".join(lines)
        experiment_id, query = next(m.groups() for m in map(link_pattern.search, lines) if m)
        client = MlflowClient(tracking_uri=f"sqlite:///{finished_tiny.parent / 'mlruns' / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("tiny")
        assert experiment_id == experiment.experiment_id
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        params = urllib.parse.parse_qs(query)
        assert params["workflowType"] == ["machine_learning"]
        assert params["searchFilter"] == ["tags.`doe_sr.study` = 'tiny'"]
        wait_for(lambda: mlflow_serving(port) or proc.poll() is not None, 240, "the MLflow UI to answer")
        assert proc.poll() is None, "".join(lines)
        started = _descendants(proc.pid)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
        wait_for(lambda: not any(_alive(p) for p in started), 120, "the MLflow UI to stop")


def test_ui_refuses_a_bad_study_in_one_line(tmp_path: Path):
    from conftest import doe_sr

    for study in (tmp_path / "missing.yaml", tmp_path):
        out = doe_sr("ui", str(study), cwd=tmp_path, timeout=120)
        assert out.returncode == 2, out.stdout + out.stderr
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("doe-sr: error: study file"), out.stderr
