"""Two workers sharing a study through PostgreSQL, the storage for many machines.

CI starts a server with ``.ci/postgres.sh`` and exports ``DOE_SR_TEST_POSTGRES``. Without
the variable the test tries that script's default URL and is skipped, with the reason,
only when no server answers there; with the variable set, an unreachable server fails.
"""

from __future__ import annotations

import os
import uuid

import pytest

from test_workers import check_two_workers

DEFAULT_URL = "postgresql+psycopg2://doe_sr:doe_sr@127.0.0.1:5432/doe_sr_test"


@pytest.fixture
def postgres_url() -> str:
    import sqlalchemy

    url = os.environ.get("DOE_SR_TEST_POSTGRES")
    try:
        engine = sqlalchemy.create_engine(url or DEFAULT_URL, connect_args={"connect_timeout": 5})
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:
        if url:
            pytest.fail(f"DOE_SR_TEST_POSTGRES={url} is not reachable: {exc}")
        pytest.skip(f"no PostgreSQL server at {DEFAULT_URL} ({type(exc).__name__}); "
                    "run .ci/postgres.sh and export DOE_SR_TEST_POSTGRES to run this test")
    return url or DEFAULT_URL


def test_two_workers_over_postgresql(tiny_study, tmp_path, postgres_url):
    import optuna

    name = f"tiny_pg_{uuid.uuid4().hex[:8]}"  # the database outlives the test: never resume an old study
    tiny_study.write_text(tiny_study.read_text().replace("name: tiny", f"name: {name}"))
    try:
        check_two_workers(tmp_path, tiny_study, name, postgres_url,
                          f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", pairs=9)
        check_refine_over(tmp_path, tiny_study, name, postgres_url)
    finally:
        for study in (name, f"{name}/refine"):
            try:
                optuna.delete_study(study_name=study, storage=postgres_url)
            except KeyError:
                pass


def check_refine_over(folder, study_path, name: str, storage: str) -> None:
    """``doe-sr refine --workers 2`` on the same PostgreSQL storage: the array's 9 runs as the warm
    start, each of the 4 slots settled once, one MLflow child per slot (issue 13)."""
    import json

    import optuna

    from conftest import doe_sr
    from doe_sr.workflow.session import open_study

    study_path.write_text(study_path.read_text() + "refine:\n  trials: 4\n  space:\n"
                          "    learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    out = doe_sr("refine", str(study_path), "--storage", storage, "--workers", "2", "--no-report", "--format", "json",
                 cwd=folder)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert json.loads(out.stdout)["warm_start"] == {"added": 9, "left_out": 0}
    trials = optuna.load_study(study_name=f"{name}/refine", storage=storage).get_trials()
    new = [t for t in trials if not t.user_attrs.get("warm_start")]
    assert len(trials) - len(new) == 9
    settled = [t for t in new if t.state.name in ("COMPLETE", "PRUNED")]
    assert sorted(int(t.user_attrs["run"]) for t in settled) == [1, 2, 3, 4] and len(new) == 4
    children = open_study(study_path, storage=storage).tracker.runs(name, role="refine")
    assert sorted(c.run_id for c in children) == sorted(t.user_attrs["mlflow_run_id"] for t in settled)
