"""`doe-sr confirm` on the tiny study: the predicted optimum is trained as confirmation
child runs, judged against Ross's confirmation interval, and kept out of the array analysis."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from scipy import stats
from conftest import doe_sr



def analysis_json(study: Path, *extra: str) -> dict:
    out = doe_sr("analyze", str(study), "--format", "json", *extra, cwd=study.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_confirm_tiny_study(finished_tiny: Path):
    tiny_study = finished_tiny
    cwd = tiny_study.parent
    before = analysis_json(tiny_study, "--pool", "auto")

    # A saturated L9 with one replicate and no pooling has no error estimate: refused before training.
    refused = doe_sr("confirm", str(tiny_study), "--pool", "none", cwd=cwd)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert "no error estimate" in last and "--pool auto" in last, refused.stderr

    out = doe_sr("confirm", str(tiny_study), "--replicates", "2", "--format", "json", cwd=cwd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    record = json.loads(out.stdout)

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("doe_sr.role") == "parent")
    confirmations = [r for r in runs if r.data.tags.get("doe_sr.role") == "confirmation"]
    assert len(confirmations) == 2
    assert len([r for r in runs if r.data.tags.get("doe_sr.role") == "array_run"]) == 9
    for r in confirmations:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["doe_sr.run"] == "0"  # never an array row number
        assert {f: r.data.params[f] for f in before["factors"]} == before["optimum"]
    assert sorted(r.info.run_name for r in confirmations) == ["confirmation rep 1", "confirmation rep 2"]
    # fresh seeds after the array's (seed 0, one replicate), so no array run is repeated
    assert sorted(int(r.data.tags["doe_sr.seed"]) for r in confirmations) == [1, 2]

    # The verdict: the observed values are the confirmation runs' logged metric, and the
    # interval is Ross's mean_pred +- sqrt(F(0.05; 1, dof_e) MS_e (1/n_eff + 1/r)).
    observed = [r.data.metrics["val_psnr"] for r in confirmations]
    assert record["optimum"] == before["optimum"] and record["r"] == 2
    assert record["observed_mean"] == pytest.approx(sum(observed) / 2)
    p = before["predicted"]
    assert record["predicted_mean"] == pytest.approx(p["mean"])
    half = math.sqrt(stats.f.ppf(0.95, 1, p["error_dof"]) * p["error_ms"] * (1 / p["n_eff"] + 1 / 2))
    assert record["interval"] == pytest.approx([p["mean"] - half, p["mean"] + half])
    assert record["inside"] == (p["mean"] - half <= record["observed_mean"] <= p["mean"] + half)
    assert record["pooled"] == before["pooled"] and record["pooled"]
    verdict = "confirmed" if record["inside"] else "not confirmed"
    assert record["message"].startswith(verdict)

    parent = client.get_run(parent.info.run_id)
    assert parent.data.tags["doe_sr.confirmation.verdict"] == verdict
    assert parent.data.metrics["confirmation_observed_mean"] == pytest.approx(record["observed_mean"])
    summary = (cwd / "reports" / "tiny" / "summary.md").read_text()
    assert "## Confirmation run" in summary and verdict in summary

    # Confirmation runs stay out of the array analysis.
    after = analysis_json(tiny_study, "--pool", "auto")
    for key in ("sn_response", "mean_response", "anova", "optimum", "predicted", "runs"):
        assert after[key] == before[key], key

    # Asking again reuses the finished confirmation runs instead of training more.
    again = doe_sr("confirm", str(tiny_study), "--replicates", "2", "--no-report", cwd=cwd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing 2 finished confirmation run(s)" in again.stdout
    assert "verdict:" in again.stdout
    assert len([r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("doe_sr.role") == "confirmation"]) == 2


def test_run_confirm_puts_the_verdict_at_the_top_of_the_same_report(finished_tiny: Path):
    """`doe-sr run --confirm R` on a finished study: nothing of the array is trained again, the
    optimum is confirmed (reusing confirmation runs already finished) and the report opens with
    a verdict whose optimum sentence carries the confirmation's own numbers."""
    cwd = finished_tiny.parent
    out = doe_sr("run", str(finished_tiny), "--confirm", "2", cwd=cwd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "all 9 runs are already done" in out.stdout
    assert "verdict:" in out.stdout
    record = json.loads((cwd / "reports" / "tiny" / "confirmation.json").read_text())
    assert record["r"] == 2
    summary = (cwd / "reports" / "tiny" / "summary.md").read_text()
    assert summary.startswith("# Study `tiny`\n\n## Verdict\n")
    verdict = summary.split("## Noise")[0]
    word = "It was confirmed by 2 confirmation runs" if record["inside"] else "It was NOT confirmed by 2 confirmation runs"
    assert f"{word}: their mean {record['observed_mean']:.3f}" in verdict
    low, high = record["interval"]
    assert f"{low:.3f} to {high:.3f}" in verdict and "*(see `confirmation`)*" in verdict
    # the noise section states the pooling the confirmation's interval rests on
    noise = summary.split("## Noise")[1].split("##")[0]
    assert "pooled" in noise and ", ".join(record["pooled"]) in noise
