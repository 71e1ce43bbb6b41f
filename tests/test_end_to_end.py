"""A whole study through the real command: 9 MLflow child runs, a report, and a no-op second run."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient
from conftest import doe_sr



def test_tiny_study_end_to_end(tiny_study: Path):
    cwd = tiny_study.parent
    first = doe_sr("run", str(tiny_study), cwd=cwd)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("doe_sr.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("doe_sr.role") == "array_run"]
    assert len(parents) == 1
    assert len(children) == 9
    parent_id = parents[0].info.run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent_id}
    assert all(r.info.status == "FINISHED" for r in children)
    assert sorted(int(r.data.tags["doe_sr.run"]) for r in children) == list(range(1, 10))
    assert "bicubic_test_psnr" in parents[0].data.metrics

    run4 = next(r for r in children if r.data.tags["doe_sr.run"] == "4")
    assert run4.data.params["learning_rate"] == "0.001"
    assert run4.data.params["optimizer"] == "adadelta"
    assert run4.data.params["filters"] == "8"
    assert run4.data.tags["doe_sr.array_row"] == "2-1-2-3"
    for key in ("val_psnr", "test_psnr", "test_ssim", "train_seconds"):
        assert key in run4.data.metrics
    assert 10 < run4.data.metrics["val_psnr"] < 60
    history = client.get_metric_history(run4.info.run_id, "val_psnr")
    assert sorted(m.step for m in history) == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run4.info.run_id)}
    assert "model" in artifacts and "tiny.yaml" in artifacts

    report = cwd / "reports" / "tiny"
    for name in ("main_effects.png", "main_effects.pdf", "summary.md", "sn_response.csv", "anova.tex"):
        assert (report / name).stat().st_size > 0, name
    summary = (report / "summary.md").read_text()
    assert "bicubic" in summary and "Response table" in summary

    second = doe_sr("run", str(tiny_study), cwd=cwd)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing to train" in second.stdout
    again = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("doe_sr.role") == "array_run"]
    assert len(again) == 9
