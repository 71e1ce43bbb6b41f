"""Several processes opening a new Optuna store at once all get it: a reader that creates
the schema a moment before the engine (a test poller, optuna-dashboard) must not make
``doe-sr run`` fail with ``UNIQUE constraint failed: alembic_version``."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from doe_sr.study.schema import parse_study

STUDY = {
    "name": "race",
    "design": {"array": "L4(2^3)", "factors": [{"name": "learning_rate", "levels": [0.01, 0.001]}]},
}


def _open(url: str, start, results) -> None:
    from doe_sr.engine.queue import open_storage

    start.wait(timeout=120)
    try:
        open_storage(url, parse_study(STUDY)).get_all_studies()
        results.put("ok")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_creating_one_store_at_once_all_open_it(tmp_path: Path):
    ctx = mp.get_context("spawn")
    for attempt in range(3):  # three fresh files: each race is a new chance to collide
        url = f"sqlite:///{tmp_path / f'optuna-{attempt}.db'}"
        start, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(url, start, results)) for _ in range(6)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(timeout=120)
        assert outcomes == ["ok"] * 6, outcomes
