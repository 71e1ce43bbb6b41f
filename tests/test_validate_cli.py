"""``doe-sr validate`` through the real CLI: a small study's full factorial trained through the engine.

The study: three factors at two levels in an L4, so its full factorial has eight
combinations, four of which are the array's runs (same levels, replicate and seed):
those must be reused from the record, the other four trained once as MLflow children
with role ``validation``, and a second ``validate`` (of the same set, or of an L8
holding the same combinations) must train nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import doe_sr

STUDY = """
name: t2
design:
  array: L4(2^3)
  factors:
    - name: learning_rate
      levels: [0.01, 0.001]
    - name: optimizer
      levels: [adam, adagrad]
    - name: activation
      levels: [tanh, relu]
data:
  source: sample
  patch_size: 32
  max_side: 96
model:
  depth: 5
  filters: 4
training:
  epochs: 1
  steps_per_epoch: 2
  batch_size: 2
tracking:
  uri: {mlruns}
execution:
  heartbeat_interval: 2
  grace_period: 6
"""


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "t2.yaml"
    path.write_text(STUDY.format(mlruns=tmp_path / "mlruns"))
    return path


def _tracker(tmp_path: Path):
    from doe_sr.workflow.session import open_study

    return open_study(tmp_path / "t2.yaml").tracker


def _children(tmp_path: Path, role: str):
    return _tracker(tmp_path).runs("t2", role=role)


def test_bad_sets_are_refused_in_one_line(tmp_path):
    study = _write(tmp_path)
    for against, why in (("L4", "not more than"), ("L99", "unknown orthogonal array"), ("L9", "cannot hold")):
        out = doe_sr("validate", str(study), "--against", against, cwd=tmp_path, timeout=300)
        assert out.returncode == 2, out.stderr
        assert why in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "mlruns" / "optuna.db").exists()  # refused before any store was made


def test_validate_full_factorial_reuses_the_array_and_resumes_to_nothing(tmp_path):
    study = _write(tmp_path)
    out = doe_sr("run", str(study), "--workers", "2", "--no-report", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    array = _children(tmp_path, "array_run")
    assert len(array) == 4

    out = doe_sr("validate", str(study), "--against", "full", "--workers", "2", "--format", "json",
                 cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    data = json.loads(out.stdout)
    assert data["runs"] == {"total": 8, "done": 8, "failed": 0, "reused": 4, "reused_by_role": {"array_run": 4},
                            "trained": 4}
    assert "4 reused from the record" in " ".join(out.stderr.split())  # rich wraps lines

    # the four trained combinations: children of the study's parent, role validation, named v..
    validation = _children(tmp_path, "validation")
    assert len(validation) == 4 and all(r.status == "FINISHED" for r in validation)
    parent = array[0].tags["mlflow.parentRunId"]
    for r in validation:
        assert r.tags["doe_sr.validation"] == "full" and r.tags["mlflow.parentRunId"] == parent
        assert r.name.startswith("v0") and r.tags["doe_sr.seed"] == "0"
    levels = ("learning_rate", "optimizer", "activation")
    combos_a = {tuple(r.params[f] for f in levels) for r in array}
    combos_v = {tuple(r.params[f] for f in levels) for r in validation}
    assert not combos_a & combos_v and len(combos_a | combos_v) == 8  # no combination trained twice

    # the comparison is computed from these eight runs
    values = {tuple(r.params[f] for f in levels): r.metrics["val_psnr"] for r in [*array, *validation]}
    best = max(values, key=values.get)
    assert data["true_best_value"] == max(values.values())
    assert tuple(data["true_best"][f] for f in levels) == best
    opt = tuple(data["array_optimum"][f] for f in levels)
    assert data["regret"] == max(values.values()) - values[opt]
    assert data["optimum_is_best"] == (values[opt] == max(values.values()))
    assert set(data["kendall_tau"]) == set(levels)
    # an L4 with three factors aliases each two-factor interaction with the third factor
    assert {c["interaction"]: c["aliased_with"] for c in data["confounded"]} == {
        "learning_rate×optimizer": "activation", "learning_rate×activation": "optimizer",
        "optimizer×activation": "learning_rate"}

    folder = tmp_path / "reports" / "t2" / "validation_full"
    for name in ("validation.json", "validation.md", "validation_predicted_vs_observed.png",
                 "validation_main_effects.pdf", "validation_confounded.tex", "validation_combinations.csv"):
        assert (folder / name).stat().st_size > 0, name
    assert json.loads((folder / "validation.json").read_text())["regret"] == data["regret"]
    uri = _tracker(tmp_path).run(parent).artifact_uri
    filed = Path(uri.removeprefix("file://")) / "validation" / "full"
    assert (filed / "validation.json").exists() and (filed / "validation_main_effects.svg").exists()

    # again: everything is done, nothing trains, the result is the same
    again = doe_sr("validate", str(study), "--against", "full", "--format", "json", cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 to train" in " ".join(again.stderr.split())
    assert json.loads(again.stdout)["regret"] == data["regret"]
    assert len(_children(tmp_path, "validation")) == 4 and len(_children(tmp_path, "array_run")) == 4

    # another set (an L8 holds the same eight combinations, numbered otherwise) reuses every run recorded
    l8 = doe_sr("validate", str(study), "--against", "L8", "--format", "json", cwd=tmp_path, timeout=600)
    assert l8.returncode == 0, l8.stderr[-2000:]
    runs = json.loads(l8.stdout)["runs"]
    assert runs["reused_by_role"] == {"array_run": 4, "validation": 4} and runs["trained"] == 0
    assert json.loads(l8.stdout)["true_best_value"] == data["true_best_value"]
    assert len(_children(tmp_path, "validation")) == 4
