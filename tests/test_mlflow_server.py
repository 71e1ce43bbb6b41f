"""A real ``mlflow server`` on 127.0.0.1: a replicated study logs to it over HTTP, its
artifacts reach the server's artifact store, and everything reads back through the REST
client; the analysis sees every replicate."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from conftest import free_port
from test_workers import L4_STUDY, REP, RUN, child_runs, doe_sr, pair



@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` with an SQLite backend and proxied artifacts (``--artifacts-destination``):
    clients upload artifacts over HTTP, they never write the server's folder themselves."""
    port = free_port()
    backend, artifacts = tmp_path / "server" / "mlflow.db", tmp_path / "server" / "artifacts"
    artifacts.mkdir(parents=True)
    log = open(tmp_path / "server" / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{backend}", "--artifacts-destination", str(artifacts), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path / "server")
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > end:
                log.flush()
                pytest.fail(f"mlflow server did not start:\n{(tmp_path / 'server' / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, artifacts
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_replicated_study_logs_to_a_real_mlflow_server(tmp_path, monkeypatch, mlflow_server):
    from mlflow.tracking import MlflowClient

    url, server_artifacts = mlflow_server
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "l4.yaml"
    study.write_text(L4_STUDY.format(name="l4", replicates=2, bad_lr="0.01", tracking=url))
    out = doe_sr("run", str(study), "--workers", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # nothing was tracked locally

    runs = child_runs(url, "l4")
    assert [r.info.status for r in runs] == ["FINISHED"] * 8
    assert sorted(Counter(pair(r) for r in runs).values()) == [1] * 8
    from doe_sr.study.schema import load_study

    seed = load_study(study).training.seed
    assert {int(r.data.tags["doe_sr.seed"]) - int(r.data.tags[REP]) for r in runs} == {seed}

    # artifacts went through the server into its store
    client = MlflowClient(tracking_uri=url)
    for r in runs:
        assert "test_images.csv" in {a.path for a in client.list_artifacts(r.info.run_id)}
    assert len(list(server_artifacts.rglob("test_images.csv"))) == 8
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert "summary.md" in {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}

    # the analysis averages both replicates of each run (equal weight per run)
    out = doe_sr("analyze", str(study), "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    per_run: dict[int, list[float]] = {}
    for r in runs:
        per_run.setdefault(int(r.data.tags[RUN]), []).append(r.data.metrics["val_psnr"])
    assert all(len(v) == 2 for v in per_run.values())
    lr_of = {int(r.data.tags[RUN]): r.data.params["learning_rate"] for r in runs}
    for level in ("0.001", "0.01"):
        means = [sum(v) / 2 for run, v in per_run.items() if lr_of[run] == level]
        assert result["mean_response"]["learning_rate"][level] == pytest.approx(sum(means) / len(means))
