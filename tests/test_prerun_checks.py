"""Bad input found before the first run (issue 9, item 8): a patch that no training image
can hold is refused with one line and nothing trained, and a corrected study reuses its
store as long as none of its runs finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doe_sr.core.errors import UserError
from doe_sr.engine.study_engine import Engine
from doe_sr.study.schema import load_study
from conftest import doe_sr



def _edit(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


def test_patch_larger_than_max_side_is_refused_before_training_and_the_fix_reuses_the_store(tiny_study: Path):
    from mlflow.tracking import MlflowClient

    work = tiny_study.parent
    _edit(tiny_study, "patch_size: 32", "patch_size: 128")  # max_side: 96 crops every image to 96x96
    out = doe_sr("run", str(tiny_study), "--no-report", cwd=work)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "data.patch_size 128" in lines[0] and "max_side 96" in lines[0], lines[0]
    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    assert exp is None or not client.search_runs([exp.experiment_id]), "nothing may be trained or recorded"

    # The corrected file is the same study, not "another design": its queue is replaced.
    _edit(tiny_study, "patch_size: 128", "patch_size: 32")
    out = doe_sr("status", str(tiny_study), "--format", "json", cwd=work)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    states = json.loads(out.stdout)
    assert len(states) == 9 and {s["state"] for s in states} == {"queued"}


def test_a_study_none_of_whose_runs_finished_takes_its_corrected_settings(tiny_study: Path):
    from optuna.trial import TrialState

    first = Engine(load_study(tiny_study), tiny_study)
    old_parent = first.ensure_parent()
    ost = first.queue.optuna_study
    for _ in range(9):  # every run failed (as with batch_size: 100000000000 before it was bounded)
        ost.tell(ost.ask(), state=TrialState.FAIL)

    _edit(tiny_study, "epochs: 2", "epochs: 3")
    fixed = Engine(load_study(tiny_study), tiny_study)
    trials = fixed.queue.optuna_study.get_trials(deepcopy=False)
    assert len(trials) == 9 and {t.state for t in trials} == {TrialState.WAITING}
    assert fixed.queue.optuna_study.user_attrs["fingerprint"] == fixed.study.fingerprint()
    parent = fixed.ensure_parent()  # its params describe the corrected settings
    assert parent != old_parent
    assert fixed.tracker.run(parent).params["training.epochs"] == "3"
    assert fixed.tracker.run(old_parent).tags["doe_sr.role"] == "superseded_parent"

    # Once a run finished, a change is another study again.
    ost = fixed.queue.optuna_study
    ost.tell(ost.ask(), 21.5)
    _edit(tiny_study, "epochs: 3", "epochs: 4")
    with pytest.raises(UserError, match="another design or settings and 1 finished run"):
        Engine(load_study(tiny_study), tiny_study).queue.optuna_study
