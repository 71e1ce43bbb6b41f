"""Degenerate runs flagged (issue 12 item 4): the pure classifier on synthetic records,
the report's table and summary line, and one end-to-end study through the real engine
whose tiny learning rate leaves the output equal to bicubic and whose huge one diverges.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from conftest import doe_sr
from doe_sr.analysis.degenerate import (BELOW_BICUBIC_DB, COLLAPSE_DB, FLAG_CAUSE_TAG, FLAG_TAG, NO_CHANGE_GREY,
                                        Flag, classify, flag_summary, flag_tags, flagged_runs_table, recorded_flag)

BASE = {"bicubic_val_psnr": 22.5}


def _metrics(**kw) -> dict:
    m = {"val_psnr": 23.1, "val_change_from_bicubic": 2.4, "train_steps": 480.0, "train_loss_start": 0.05,
         "train_loss_end": 0.03}
    m.update(kw)
    return {k: v for k, v in m.items() if v is not None}


def _params(opt: str, lr: str) -> dict:
    return {"training.optimizer": opt, "training.learning_rate": lr}


# -- the classifier ------------------------------------------------------------------------
def test_output_equal_to_bicubic_is_no_learning_with_the_optimizers_own_reason():
    m = _metrics(val_psnr=22.5, val_change_from_bicubic=0.0, train_loss_start=0.05, train_loss_end=0.04998)
    flag = classify(m, _params("adadelta", "0.0001"), BASE)
    assert flag is not None and flag.kind == "no_learning" and flag.label == "no learning"
    # the numbers come from the record: 0.04% movement, 480 steps, the learning rate as a study writes it
    assert "the loss moved by less than 0.1% over 480 steps (0.05 to 0.04998)" in flag.cause
    assert "adadelta at learning rate 1e-4 takes almost no step" in flag.cause
    # Keras' Adadelta's first step: lr * sqrt(eps / (1 - rho)) = 1e-4 * sqrt(1e-7 / 0.05), by hand 1.414e-7
    assert f"{1e-4 * math.sqrt(1e-7 / 0.05):.1e}" == "1.4e-07" and "1.4e-07 per weight" in flag.cause
    assert "Adagrad" not in flag.cause

    adagrad = classify(m, _params("adagrad", "0.001"), BASE)
    assert adagrad.kind == "no_learning" and "adagrad at learning rate 0.001" in adagrad.cause
    assert "accumulated" in adagrad.cause and "Adadelta" not in adagrad.cause
    adam = classify(m, _params("adam", "1e-06"), BASE)
    assert adam.kind == "no_learning" and "adam at learning rate 1e-6 moves each weight by at most" in adam.cause
    assert "4.8e-04 in all over 480 steps" in adam.cause and "almost no step" not in adam.cause
    # an optimizer without a known reason gets none invented
    rmsprop = classify(m, _params("rmsprop", "1e-06"), BASE)
    assert rmsprop.cause.endswith(": rmsprop at learning rate 1e-6 did not move the weights enough")


def test_no_learning_threshold_and_a_loss_that_moved_with_the_patches():
    params = _params("sgd", "1e-05")
    just_below = classify(_metrics(val_change_from_bicubic=NO_CHANGE_GREY * 0.99, val_psnr=22.5), params, BASE)
    assert just_below.kind == "no_learning" and "mean change 0.099 grey levels" in just_below.cause
    assert classify(_metrics(val_change_from_bicubic=NO_CHANGE_GREY, val_psnr=22.5), params, BASE) is None
    # the output is bicubic, so a loss that fell 40% fell only because other patches were drawn
    moved = classify(_metrics(val_change_from_bicubic=0.0, val_psnr=22.5, train_steps=4.0, train_loss_start=0.0333,
                              train_loss_end=0.0195), params, BASE)
    assert "its loss changed only with the patches drawn (0.0333 to 0.0195 over 4 steps)" in moved.cause


def test_runs_recorded_before_the_change_measure_fall_back_on_equal_psnr():
    old = {"val_psnr": 22.5004, "loss": 0.05}
    flag = classify(old, {"optimizer": "adagrad", "learning_rate": "0.0001"}, BASE, loss_history=[0.05, 0.0499])
    assert flag.kind == "no_learning"
    assert flag.cause.startswith("val PSNR 22.500 dB equals bicubic's 22.500 dB; the loss moved by 0.2% (0.05 to 0.0499)")
    assert classify({"val_psnr": 22.5 + 0.002}, {}, BASE) is None  # 0.002 dB is a network that moved


def test_diverged_when_the_loss_grew_and_psnr_fell_or_when_psnr_collapsed():
    grew = classify(_metrics(val_psnr=21.0, train_loss_start=0.05, train_loss_end=3.1), _params("adam", "0.01"), BASE)
    assert grew == Flag("diverged", "the loss went from 0.05 to 3.1 over 480 steps and val PSNR fell to 21.0 dB, "
                                    "1.5 dB below bicubic's 22.5 dB: adam at learning rate 0.01 diverged; lower the "
                                    "learning rate")
    # collapsed PSNR is divergence even without a logged loss
    collapsed = classify({"val_psnr": 22.5 - COLLAPSE_DB, "val_change_from_bicubic": 104.0}, _params("sgd", "10"), BASE)
    assert collapsed.kind == "diverged" and "sgd at learning rate 10 diverged" in collapsed.cause
    # a loss that doubled on a noisy short run while the network beats bicubic is not divergence
    assert classify(_metrics(val_psnr=22.8, train_loss_start=0.02, train_loss_end=0.05), _params("adam", "0.001"),
                    BASE) is None


def test_below_bicubic_by_more_than_the_tolerance():
    flag = classify(_metrics(val_psnr=21.9, train_loss_start=0.05, train_loss_end=0.045), _params("adam", "0.001"), BASE)
    assert flag.kind == "below_bicubic"
    assert flag.cause.startswith("val PSNR 21.90 dB is 0.60 dB below bicubic's 22.50 dB; the loss went from 0.05 to "
                                 "0.045 over 480 steps: adam at learning rate 0.001 made the bicubic input worse")
    assert classify(_metrics(val_psnr=22.5 - BELOW_BICUBIC_DB * 0.9), _params("adam", "0.001"), BASE) is None


def test_healthy_run_and_the_tags_recorded():
    healthy = _metrics()
    assert classify(healthy, _params("adam", "0.001"), BASE) is None
    assert flag_tags(healthy, _params("adam", "0.001"), BASE) == {FLAG_TAG: "none"}
    bad = _metrics(val_psnr=22.5, val_change_from_bicubic=0.0)
    tags = flag_tags(bad, _params("adadelta", "0.01"), BASE)
    assert tags[FLAG_TAG] == "no_learning" and tags[FLAG_CAUSE_TAG] == classify(bad, _params("adadelta", "0.01"), BASE).cause
    # the recorded tag wins; without one the record is classified
    assert recorded_flag({FLAG_TAG: "none"}, bad, {}, BASE) is None
    assert recorded_flag({FLAG_TAG: "diverged", FLAG_CAUSE_TAG: "x"}, healthy, {}, BASE) == Flag("diverged", "x")
    assert recorded_flag({}, bad, {}, BASE).kind == "no_learning"
    # no baseline, no change measure: nothing can be said
    assert classify({"val_psnr": 10.0}, {}, {}) is None


# -- what the report gets --------------------------------------------------------------------
def _results(flags: list[str], replicates: int = 1) -> pd.DataFrame:
    rows = []
    for i, f in enumerate(flags):
        rows.append({"run": i // replicates + 1, "replicate": i % replicates, "run_id": f"id{i}",
                     "learning_rate": "0.01", "optimizer": "adam", "val_psnr": 22.5 + i / 10,
                     "flag": f, "flag_cause": f"cause {i}" if f else ""})
    return pd.DataFrame(rows)


def test_flagged_runs_table_and_summary_line():
    res = _results(["no_learning", "", "diverged", "no_learning", "", "", "no_learning", "below_bicubic", ""])
    table = flagged_runs_table(res)
    assert list(table.columns) == ["run", "replicate", "levels", "val_psnr", "flag", "cause"]
    assert table["run"].tolist() == [1, 3, 4, 7, 8]
    assert table.loc[0, "levels"] == "learning_rate=0.01, optimizer=adam"
    assert table.loc[1].to_dict() == {"run": 3, "replicate": 0, "levels": "learning_rate=0.01, optimizer=adam",
                                      "val_psnr": pytest.approx(22.7), "flag": "diverged", "cause": "cause 2"}
    assert flag_summary(res) == ("3 of 9 runs did not learn (output equals bicubic): runs 1, 4, 7; "
                                 "1 of 9 runs diverged: run 3; 1 of 9 runs ended below bicubic: run 8.")
    assert flag_summary(_results(["", ""])) == ("No run was flagged: all 2 finished runs moved away from bicubic "
                                               "without diverging or ending below it.")
    assert flagged_runs_table(_results(["", ""])).empty
    reps = _results(["no_learning", "", "", "no_learning"], replicates=2)
    assert flag_summary(reps) == "2 of 4 runs did not learn (output equals bicubic): runs 1 rep 0, 2 rep 1."


def test_extra_flag_columns_change_no_analysis():
    from doe_sr.analysis.taguchi import analyze

    res = _results(["no_learning", "", "diverged", "", "", "", "", "", ""])
    res["learning_rate"] = ["0.01", "0.01", "0.01", "0.001", "0.001", "0.001", "1e-4", "1e-4", "1e-4"]
    res["optimizer"] = ["a", "b", "c"] * 3
    res["val_psnr"] = [22.1, 22.9, 21.7, 23.0, 22.4, 22.6, 22.2, 23.3, 22.8]
    with_flags = analyze(res, ["learning_rate", "optimizer"], "val_psnr").to_dict()
    without = analyze(res.drop(columns=["flag", "flag_cause"]), ["learning_rate", "optimizer"], "val_psnr").to_dict()
    assert json.dumps(with_flags, sort_keys=True, default=str) == json.dumps(without, sort_keys=True, default=str)


# -- what training measures ------------------------------------------------------------------
def test_loss_trend_windows_and_change_from_bicubic():
    import numpy as np

    from doe_sr.sr.train import change_from_bicubic, loss_trend

    losses = [float(x) for x in range(1, 41)]  # 40 steps: windows of 4
    assert loss_trend(losses) == {"train_steps": 40.0, "train_loss_start": 2.5, "train_loss_end": 38.5}
    assert loss_trend([0.3, 0.1]) == {"train_steps": 2.0, "train_loss_start": 0.3, "train_loss_end": 0.1}
    a = np.zeros((4, 5, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0], b[1, 1, 1] = 255, 3  # uint8 differences must not wrap around
    assert change_from_bicubic(a, b) == pytest.approx(258 / 60)
    assert change_from_bicubic(b, a) == pytest.approx(258 / 60)


# -- through the real engine -------------------------------------------------------------------
L4 = """
name: degenerate
design:
  array: L4(2^3)
  factors:
    - name: learning_rate
      levels: [1.0e-6, 10]
    - name: optimizer
      levels: [adam, sgd]
    - name: filters
      levels: [4, 6]
data:
  source: sample
  patch_size: 32
  max_side: 96
model:
  depth: 5
  activation: tanh
training:
  epochs: 2
  steps_per_epoch: 2
  batch_size: 2
tracking:
  uri: {mlruns}
"""


def test_tiny_learning_rate_is_flagged_no_learning_and_a_huge_one_diverged(tmp_path, monkeypatch):
    """Learning rate 1e-6 leaves the output exactly bicubic (its val PSNR equals the parent's
    bicubic baseline to the last digit): flagged ``no_learning``; learning rate 10 finishes with
    a collapsed PSNR and a loss that exploded: flagged ``diverged``. The flags are MLflow tags
    of the children, columns of ``array_results``, a column of ``status`` and keys of its JSON,
    and are recomputed for a run recorded without the tag."""
    from mlflow.tracking import MlflowClient

    from doe_sr.workflow.session import array_results, open_study

    monkeypatch.chdir(tmp_path)
    study = tmp_path / "degenerate.yaml"
    study.write_text(L4.format(mlruns=tmp_path / "mlruns"))
    out = doe_sr("run", str(study), "--no-report", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("degenerate")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("doe_sr.role") == "parent")
    bicubic = parent.data.metrics["bicubic_val_psnr"]
    children = {int(r.data.tags["doe_sr.run"]): r for r in runs if r.data.tags.get("doe_sr.role") == "array_run"}
    assert sorted(children) == [1, 2, 3, 4] and {r.info.status for r in children.values()} == {"FINISHED"}
    for n, r in children.items():
        tags, m, p = r.data.tags, r.data.metrics, r.data.params
        assert m["train_steps"] == 4 and m["train_loss_start"] > 0
        if p["learning_rate"] == "1e-06":  # runs 1 and 2
            assert m["val_change_from_bicubic"] == 0.0
            assert m["val_psnr"] == pytest.approx(bicubic, abs=1e-9)  # independent: the output is bicubic
            assert tags[FLAG_TAG] == "no_learning", tags
            assert f"{p['optimizer']} at learning rate 1e-6" in tags[FLAG_CAUSE_TAG]
        else:
            assert m["val_psnr"] < bicubic - COLLAPSE_DB and m["train_loss_end"] > 10 * m["train_loss_start"]
            assert tags[FLAG_TAG] == "diverged", tags
            assert f"{p['optimizer']} at learning rate 10 diverged" in tags[FLAG_CAUSE_TAG]
    assert {n for n, r in children.items() if r.data.tags[FLAG_TAG] == "no_learning"} == {1, 2}

    # status: a column in the table, two keys per run in the JSON
    out = doe_sr("status", str(study), "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    states = {s["run"]: s for s in json.loads(out.stdout)}
    assert {n: s["flag"] for n, s in states.items()} == {1: "no_learning", 2: "no_learning", 3: "diverged",
                                                         4: "diverged"}
    assert all(s["flag_cause"] == children[n].data.tags[FLAG_CAUSE_TAG] for n, s in states.items())
    out = doe_sr("status", str(study), cwd=tmp_path, env={"COLUMNS": "250"})
    assert out.returncode == 0 and "no learning" in out.stdout and "diverged" in out.stdout, out.stdout

    # the report's data; a run recorded before flags existed is classified from its record
    client.delete_tag(children[1].info.run_id, FLAG_TAG)
    client.delete_tag(children[1].info.run_id, FLAG_CAUSE_TAG)
    results = array_results(open_study(study))
    assert dict(zip(results["run"], results["flag"])) == {1: "no_learning", 2: "no_learning", 3: "diverged",
                                                          4: "diverged"}
    assert results.loc[results["run"] == 1, "flag_cause"].item() == children[1].data.tags[FLAG_CAUSE_TAG]
    assert flag_summary(results) == ("2 of 4 runs did not learn (output equals bicubic): runs 1, 2; "
                                     "2 of 4 runs diverged: runs 3, 4.")
