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
    finally:
        try:
            optuna.delete_study(study_name=name, storage=postgres_url)
        except KeyError:
            pass
