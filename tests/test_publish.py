"""The parent run carries the analysis: after ``doe-sr report`` the study's MLflow parent
run holds per-factor metrics, the optimum as tags, the figures, the tables as MLflow tables
and index.html; a second report changes nothing (no extra metric history, no doubled
tables). Read back with a plain MlflowClient, as the UI reads them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from conftest import doe_sr


def parent_of(study: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{study.parent / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    parents = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("doe_sr.role") == "parent"]
    assert len(parents) == 1
    return client, parents[0].info.run_id


def table(client: MlflowClient, run_id: str, path: str, dst: Path) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, path, str(dst))).read_text())


def test_report_files_the_analysis_with_the_parent_run(finished_tiny: Path, tmp_path: Path):
    cwd = finished_tiny.parent
    analyzed = doe_sr("analyze", str(finished_tiny), "--pool", "auto", "--format", "json", cwd=cwd)
    assert analyzed.returncode == 0, analyzed.stderr[-3000:]
    expected = json.loads(analyzed.stdout)  # analyze's JSON is unchanged by publishing: still pure JSON
    out = doe_sr("report", str(finished_tiny), "--pool", "auto", "--out", str(tmp_path / "reports"), cwd=cwd)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    client, parent = parent_of(finished_tiny)
    run = client.get_run(parent)
    metrics, tags = run.data.metrics, run.data.tags
    anova = {row["source"]: row for row in expected["anova"]}
    for f in expected["factors"]:
        assert metrics[f"factor.{f}.delta_sn"] == pytest.approx(expected["delta"][f])
        assert metrics[f"factor.{f}.rank"] == expected["rank"][f]
        assert 0 <= metrics[f"factor.{f}.contribution_pct"] <= 100
        if anova[f]["p"] is not None:  # estimable: the factors left unpooled
            assert metrics[f"factor.{f}.p"] == pytest.approx(anova[f]["p"])
        assert tags[f"doe_sr.optimum.{f}"] == expected["optimum"][f]
    assert expected["pooled"] and tags["doe_sr.analysis.pooled"] == ", ".join(expected["pooled"])
    assert any(anova[f]["p"] is not None for f in expected["factors"])
    assert metrics["optimum.predicted_sn"] == pytest.approx(expected["predicted"]["sn"])

    figures = {a.path for a in client.list_artifacts(parent, "figures")}
    assert {"figures/main_effects.png", "figures/main_effects.svg", "figures/interactions.png",
            "figures/anova_contribution.svg"} <= figures
    report = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/index.html", "report/summary.md", "report/main_effects.pdf", "report/runs.csv"} <= report
    html = Path(client.download_artifacts(parent, "report/index.html", str(tmp_path / "dl"))).read_text()
    drawn = sorted(f.stem for f in (tmp_path / "reports" / "tiny").glob("*.svg"))
    # pooled factors leave residual dof, so the four-in-one residual plot joins the set
    assert drawn == ["anova_contribution", "interactions", "main_effects", "pareto", "residuals"]
    assert html.count("<svg") == len(drawn)
    listed = {entry["path"] for entry in json.loads(tags["mlflow.loggedArtifacts"]) if entry["type"] == "table"}
    assert {"tables/anova.json", "tables/sn_response.json", "tables/mean_response.json",
            "tables/optimum.json", "tables/runs.json"} <= listed
    first_anova = table(client, parent, "tables/anova.json", tmp_path / "a1")
    assert len(first_anova["data"]) == len(expected["anova"])
    assert [row[0] for row in first_anova["data"]][:len(expected["factors"])] == [
        f"{f} (pooled)" if f in expected["pooled"] else f for f in expected["factors"]]
    sn = table(client, parent, "tables/sn_response.json", tmp_path / "s1")
    assert sn["columns"][0] == "Level" and [row[0] for row in sn["data"]] == ["1", "2", "3", "Delta", "Rank"]

    keys = [k for k in metrics if k.startswith(("factor.", "optimum."))]
    history = {k: len(client.get_metric_history(parent, k)) for k in keys}
    again = doe_sr("report", str(finished_tiny), "--pool", "auto", "--out", str(tmp_path / "reports"), cwd=cwd)
    assert again.returncode == 0, again.stderr[-2000:]
    after = client.get_run(parent).data
    for k in keys:
        assert after.metrics[k] == metrics[k] or math.isclose(after.metrics[k], metrics[k], rel_tol=1e-12), k
        assert len(client.get_metric_history(parent, k)) == history[k], k  # unchanged values are not re-logged
    assert table(client, parent, "tables/anova.json", tmp_path / "a2") == first_anova  # replaced, not appended
    assert after.tags["mlflow.loggedArtifacts"] == tags["mlflow.loggedArtifacts"]


def test_analyze_of_a_results_csv_has_nothing_to_publish(tmp_path: Path):
    csv = tmp_path / "r.csv"
    csv.write_text("run,a,b,y\n1,x,p,1.0\n2,x,q,2.0\n3,z,p,3.0\n4,z,q,4.5\n")
    out = doe_sr("analyze", "--results", str(csv), "--factors", "a,b", "--response", "y", "--objective", "larger",
                 "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["factors"] == ["a", "b"]
    assert not (tmp_path / "mlruns").exists()
