"""``doe-sr refine`` through the real CLI on the tiny study's finished array.

What the issue asks, checked on the real stores: the refinement's Optuna study holds
the array's nine runs as warm-start trials plus the budget's new trials, MLflow holds
one ``refine`` child per trial, a pruned trial is PRUNED in Optuna and KILLED (with
``doe_sr.trial_state=PRUNED``) in MLflow, a ``kill -9`` of the worker is resumed by a
rerun that completes the budget exactly without running any trial twice, and the report
section with its figures is written. Bad ranges are refused by ``refine`` in one line.

Pruning is made deterministic, not hoped for: ``try_first`` re-runs the array run that
was worst after the first epoch, with the same seed, so its first-epoch value equals the
warm-start trial's and lies below the median of the array's nine.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
from pathlib import Path

import pytest

from conftest import doe_sr, start_doe_sr, wait_for


def _study_with(finished: Path, name: str, refine: str) -> Path:
    """The finished tiny study's file with a ``refine:`` section, beside it (same stores)."""
    path = finished.parent / f"{name}.yaml"
    path.write_text(finished.read_text() + refine)
    return path


def _optuna(folder: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'mlruns' / 'optuna.db'}")


def _engine(path: Path):
    from doe_sr.workflow.session import open_study

    return open_study(path)


def _worst_first_epoch(folder: Path) -> tuple[dict, float, list[float]]:
    """The array run whose response after epoch 1 was lowest: its levels, that value, and the others'."""
    array = _optuna(folder, "tiny")
    engine = _engine(folder / "tiny.yaml")
    firsts = {}
    for t in array.get_trials(deepcopy=False):
        if t.state.name == "COMPLETE":
            firsts[int(t.user_attrs["run"])] = engine.tracker.metric_history(t.user_attrs["mlflow_run_id"],
                                                                              "val_psnr")[0]
    run = min(firsts, key=firsts.get)
    levels = {f: engine.study.factor(f).level_labels[c] for f, c in engine.runs[run].codes.items()}
    return levels, firsts[run], [v for r, v in firsts.items() if r != run]


def test_refine_warm_starts_prunes_records_and_reports(finished_tiny):
    folder = finished_tiny.parent
    worst, worst_first, others = _worst_first_epoch(folder)
    assert worst_first < statistics.median([worst_first, *others])  # the precondition of a deterministic prune
    point = ", ".join(f"{k}: {v}" for k, v in worst.items())
    study = _study_with(finished_tiny, "tiny_refine", f"""
refine:
  trials: 6
  sampler: tpe
  space:
    learning_rate: {{low: 1.0e-4, high: 1.0e-2, log: true}}
    filters: {{low: 4, high: 8, step: 2}}
  try_first:
    - {{{point}}}
""")
    out = doe_sr("refine", str(study), "--format", "json", cwd=folder, timeout=1200)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    data = json.loads(out.stdout)

    # Optuna: the 9 array runs as warm-start trials, plus 6 new ones, one per slot
    ost = _optuna(folder, "tiny/refine")
    trials = ost.get_trials(deepcopy=False)
    warm = [t for t in trials if t.user_attrs.get("warm_start")]
    new = [t for t in trials if not t.user_attrs.get("warm_start")]
    assert len(warm) == 9 and all(t.state.name == "COMPLETE" and t.user_attrs["role"] == "array_run" for t in warm)
    array = {int(t.user_attrs["run"]): t for t in _optuna(folder, "tiny").get_trials(deepcopy=False)}
    for t in warm:  # each warm trial is its array run: value, MLflow run, levels as distributions
        a = array[int(t.user_attrs["run"])]
        assert t.value == a.value and t.user_attrs["mlflow_run_id"] == a.user_attrs["mlflow_run_id"]
        assert set(t.distributions) == {"learning_rate", "optimizer", "activation", "filters"}
        assert len(t.intermediate_values) == 2  # per-epoch values, for the pruner
    assert sorted(int(t.user_attrs["run"]) for t in new) == [1, 2, 3, 4, 5, 6]
    assert all(t.state.name in ("COMPLETE", "PRUNED") and t.user_attrs["role"] == "refine" for t in new)
    assert data["warm_start"] == {"added": 9, "left_out": 0}
    assert data["trials"]["total"] == 6 and data["trials"]["left"] == 0
    for t in new:  # every sampled setting lies in the space
        assert 1e-4 <= t.params["learning_rate"] <= 1e-2 and t.params["filters"] in (4, 6, 8)

    # slot 1 measures the Taguchi optimum (not a row of this L9), never pruned
    engine = _engine(study)
    from doe_sr.workflow.analyze import study_analysis

    analysis, _ = study_analysis(engine)
    first = next(t for t in new if int(t.user_attrs["run"]) == 1)
    assert first.user_attrs.get("taguchi_optimum") is True and first.state.name == "COMPLETE"
    assert {k: str(v) for k, v in first.params.items() if k != "learning_rate"} == {
        k: v for k, v in analysis.optimum.items() if k != "learning_rate"}
    assert first.params["learning_rate"] == float(analysis.optimum["learning_rate"])

    # slot 2 re-ran the worst array run (same seed): the same first-epoch value, pruned there
    pruned = next(t for t in new if int(t.user_attrs["run"]) == 2)
    assert pruned.state.name == "PRUNED", pruned
    assert pruned.intermediate_values == {0: worst_first}
    assert "median pruner" in pruned.user_attrs["pruned"]

    # MLflow: one refine child per new trial, under the study's parent; the pruned one KILLED and tagged
    children = engine.tracker.runs("tiny", role="refine")
    mine = [c for c in children if c.tags.get("doe_sr.refine") == "refine"]
    assert sorted(c.run_id for c in mine) == sorted(t.user_attrs["mlflow_run_id"] for t in new)
    by_id = {c.run_id: c for c in mine}
    parent = engine.tracker.find_parent("tiny")
    for t in new:
        c = by_id[t.user_attrs["mlflow_run_id"]]
        assert c.tags["mlflow.parentRunId"] == parent and c.name.startswith(f"t{int(t.user_attrs['run']):02d} ")
        assert c.status == ("KILLED" if t.state.name == "PRUNED" else "FINISHED"), (t.number, c.status)
    p = by_id[pruned.user_attrs["mlflow_run_id"]]
    assert p.tags["doe_sr.trial_state"] == "PRUNED" and "pruned after epoch 1" in p.tags["doe_sr.failure_reason"]

    # the refined best is the best complete refine trial (chosen on val_psnr)
    complete = [t for t in new if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value)
    assert data["best"]["value"] == best.value and data["best"]["mlflow_run_id"] == best.user_attrs["mlflow_run_id"]
    rows = {r["setting"]: r for r in data["comparison"]}
    assert rows["Refined best"]["val_psnr"] == pytest.approx(best.value)
    assert rows["Taguchi optimum (predicted)"]["val_psnr"] == pytest.approx(analysis.predicted.mean)
    assert rows["Taguchi optimum (measured)"]["val_psnr"] == pytest.approx(first.value)
    assert rows["Taguchi optimum (measured)"]["test_psnr"] == pytest.approx(
        engine.tracker.run(first.user_attrs["mlflow_run_id"]).metrics["test_psnr"])
    importance = {r["factor"]: r for r in data["importance"]}
    assert set(importance) == {"learning_rate", "optimizer", "activation", "filters"}
    assert sum(r["fanova_pct"] for r in importance.values()) == pytest.approx(100.0, abs=0.01)

    # the report section and its figures
    report = folder / "reports" / "tiny" / "refine"
    for name in ("refine.md", "refine.json", "refine_comparison.tex", "refine_trials.csv", "refine_importance.csv",
                 *(f"refine_{fig}.{ext}" for fig in ("history", "slice", "contour", "importance")
                   for ext in ("pdf", "svg", "png"))):
        assert (report / name).stat().st_size > 0, name
    md = (report / "refine.md").read_text()
    assert "Held at the Taguchi optimum: none" in md and "warm start: 9 array runs" in md
    uri = engine.tracker.run(parent).artifact_uri
    assert (Path(uri.removeprefix("file://")) / "refine" / "refine.json").exists()
    summary = (report.parent / "summary.md").read_text()  # the study's report gains the section
    assert "## Refinement of the Taguchi optimum (tiny/refine)" in summary and "](refine/refine_history.svg)" in summary
    assert 'id="refinement-figures"' in (report.parent / "index.html").read_text()

    # again: the budget is spent, nothing trains
    again = doe_sr("refine", str(study), "--format", "json", "--no-report", cwd=folder, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(_optuna(folder, "tiny/refine").get_trials(deepcopy=False)) == 15
    assert len([c for c in engine.tracker.runs("tiny", role="refine")
                if c.tags.get("doe_sr.refine") == "refine"]) == 6


def test_kill_9_of_the_worker_then_a_rerun_completes_the_budget_exactly(finished_tiny):
    folder = finished_tiny.parent
    # 12 epochs a trial, so the worker is killed in the middle of training (after an epoch was logged)
    study = _study_with(finished_tiny, "tiny_resume", """
refine:
  name: resume
  trials: 3
  pruner: none
  space:
    learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
    epochs: {choices: [12]}
""")
    engine = _engine(study)

    def running_child():
        for c in engine.tracker.runs("tiny", role="refine", status="RUNNING"):
            if c.tags.get("doe_sr.refine") == "resume" and "val_psnr" in c.metrics:
                return c
        return None

    proc = start_doe_sr("refine", str(study), "--no-report", cwd=folder)
    try:
        child = wait_for(running_child, timeout=600, what="a refine trial half-way through training", proc=proc)
        pid = int(child.tags["doe_sr.worker"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        output = proc.communicate(timeout=600)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, output[-3000:]
    killed_slot = int(child.tags["doe_sr.run"])

    out = doe_sr("refine", str(study), "--format", "json", "--no-report", cwd=folder, timeout=1200)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert json.loads(out.stdout)["trials"] == {"total": 3, "complete": 3, "pruned": 0, "failed": 0, "left": 0}

    ost = _optuna(folder, "tiny/refine/resume")
    new = [t for t in ost.get_trials(deepcopy=False) if not t.user_attrs.get("warm_start")]
    complete = [t for t in new if t.state.name == "COMPLETE"]
    assert sorted(int(t.user_attrs["run"]) for t in complete) == [1, 2, 3]  # each slot settled once
    failed = [t for t in new if t.state.name == "FAIL"]
    assert [int(t.user_attrs["run"]) for t in failed] == [killed_slot]  # the killed attempt, nothing else
    retried = next(t for t in complete if int(t.user_attrs["run"]) == killed_slot)
    assert retried.params == failed[0].params  # the killed trial's settings, run once more to completion

    children = [c for c in engine.tracker.runs("tiny", role="refine") if c.tags.get("doe_sr.refine") == "resume"]
    finished = [c for c in children if c.status == "FINISHED"]
    assert sorted(int(c.tags["doe_sr.run"]) for c in finished) == [1, 2, 3]  # no trial trained twice
    assert {c.run_id for c in finished} == {t.user_attrs["mlflow_run_id"] for t in complete}
    killed = next(c for c in children if c.run_id == child.run_id)
    assert killed.status == "KILLED" and "worker stopped" in killed.tags["doe_sr.failure_reason"]
    assert len(children) == 4

    # --confirm: the refined best trained again with the fresh seed `doe-sr confirm` would use (1 here)
    best = max(complete, key=lambda t: t.value)
    for _ in range(2):  # the second time reuses the finished run
        out = doe_sr("refine", str(study), "--confirm", "1", "--format", "json", "--no-report", cwd=folder,
                     timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        data = json.loads(out.stdout)
        again = engine.tracker.runs("tiny", role="refine_confirmation")
        assert len(again) == 1 and again[0].status == "FINISHED", again
        assert again[0].tags["doe_sr.refine.trial"] == str(best.number) and again[0].tags["doe_sr.seed"] == "1"
        assert data["best"]["optuna_number"] == best.number
        assert data["refined_confirmed"] == [again[0].metrics["val_psnr"]]
        row = next(r for r in data["comparison"] if r["setting"] == "Refined best (confirmed)")
        assert row["val_psnr"] == pytest.approx(again[0].metrics["val_psnr"]) and row["runs"] == 1


@pytest.mark.parametrize("space, why", [
    ("learning_rate: {low: 0.01, high: 0.0001}", "refine.space.learning_rate: low 0.01 is above high"),
    ("learning_rate: {low: 0.0, high: 0.01, log: true}", "refine.space.learning_rate: a log range needs low > 0"),
])
def test_bad_ranges_are_refused_in_one_line(tiny_study, space, why):
    study = tiny_study.parent / "bad.yaml"
    study.write_text(tiny_study.read_text() + f"refine:\n  space:\n    {space}\n")
    out = doe_sr("refine", str(study), cwd=tiny_study.parent, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and why in out.stderr, out.stderr
    assert not (tiny_study.parent / "mlruns" / "optuna.db").exists()


def test_refine_needs_a_section_and_a_finished_array(tiny_study):
    out = doe_sr("refine", str(tiny_study), cwd=tiny_study.parent, timeout=300)
    assert out.returncode == 2 and "has no refine: section" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    study = tiny_study.parent / "r.yaml"
    study.write_text(tiny_study.read_text() + "refine:\n  space:\n    learning_rate: {low: 1.0e-4, high: 0.01}\n")
    out = doe_sr("refine", str(study), cwd=tiny_study.parent, timeout=300)
    assert out.returncode == 2 and "0 of 9 array runs are done" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
