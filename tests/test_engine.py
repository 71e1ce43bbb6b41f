"""The run engine's bookkeeping, without training: taking queued trials, duplicates,
ETA, worker placement. Fast (no TensorFlow)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from doe_sr.engine.queue import Progress, RunState, State
from doe_sr.engine.study_engine import Engine
from doe_sr.engine.workers import visible_gpus, worker_env
from doe_sr.study.schema import load_study

TAKER = """
import sys
from pathlib import Path
from doe_sr.engine.study_engine import Engine
from doe_sr.study.schema import load_study
engine = Engine(load_study(sys.argv[1]), Path(sys.argv[1]), storage=sys.argv[2])
taken = []
while (t := engine.queue.take()) is not None:
    taken.append(t.number)
print(" ".join(map(str, taken)))
"""


def _engine(study_path: Path, tmp_path: Path) -> Engine:
    return Engine(load_study(study_path), study_path, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def test_four_processes_never_take_the_same_sqlite_trial(tiny_study, tmp_path):
    """SQLite has no row locks: without BEGIN IMMEDIATE, four processes racing for 300
    queued trials took about one in seven twice. Every trial must go to exactly one."""
    engine = _engine(tiny_study, tmp_path)
    engine.queue.optuna_study  # enqueues the 9 runs
    for i in range(51):
        engine.queue.enqueue(i % 9 + 1, 0)
    url = engine.storage_url
    procs = [subprocess.Popen([sys.executable, "-c", TAKER, str(tiny_study), url], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=900)[0] for p in procs]  # a bound for a loaded machine (took 300+ s at load 15)
    assert all(p.returncode == 0 for p in procs)
    taken = [int(n) for out in outs for n in out.split()]
    assert len(taken) == len(set(taken)), f"{len(taken) - len(set(taken))} trials taken twice"
    assert sorted(taken) == list(range(60))


def test_a_pair_enqueued_twice_runs_under_its_lowest_live_trial(tiny_study, tmp_path):
    from optuna.trial import TrialState

    engine = _engine(tiny_study, tmp_path)
    ost = engine.queue.optuna_study
    engine.queue.enqueue(1, 0)  # trial 9: a copy of trial 0
    first = engine.queue.take()
    assert (first.number, first.run) == (0, 1)
    others = [engine.queue.take() for _ in range(8)]
    copy = engine.queue.take()
    assert (copy.number, copy.run, copy.replicate) == (9, 1, 0)
    # both copies running: the higher-numbered one steps aside, the lower one does not
    assert engine.queue.duplicate_of(copy) == 0
    assert engine.queue.duplicate_of(first) is None
    engine.executor.run_taken(copy, verbose=0)  # closes the copy without training
    closed = ost.get_trials(deepcopy=False)[9]
    assert closed.state == TrialState.PRUNED and closed.user_attrs["duplicate_of"] == 0
    ost.tell(0, 20.0)
    states = {(s.run, s.replicate): s.state for s in engine.progress().states}
    assert states[(1, 0)] == "done"
    assert sorted(states.values()) == ["done"] + ["running"] * 8
    assert len(others) == 8


def test_taking_never_creates_a_trial_when_the_queue_is_empty(tiny_study, tmp_path):
    engine = _engine(tiny_study, tmp_path)
    numbers = [engine.queue.take().number for _ in range(9)]
    assert numbers == list(range(9))
    assert engine.queue.take() is None
    assert len(engine.queue.optuna_study.get_trials(deepcopy=False)) == 9


def test_eta_is_the_mean_duration_of_done_runs_times_the_work_left():
    now = datetime(2025, 1, 1, 12, 0, 0)
    states = [RunState(1, 0, "done", seconds=100.0), RunState(2, 0, "done", seconds=50.0),  # mean 75 s
              RunState(3, 0, "running", started=(now - timedelta(seconds=30)).isoformat()),  # 45 s left
              RunState(4, 0, "running", started=(now - timedelta(seconds=200)).isoformat()),  # overdue: 0
              RunState(5, 0, "queued"), RunState(6, 0, "interrupted"), RunState(7, 0, "pending"),
              RunState(8, 0, "failed", reason="diverged")]
    p = Progress(states)
    assert p.todo == 3
    assert p.eta(1, now) == pytest.approx(45 + 3 * 75)
    assert p.eta(2, now) == pytest.approx((45 + 3 * 75) / 2)
    assert Progress([RunState(1, 0, "queued")]).eta(1, now) is None


def test_workers_get_their_own_gpu_or_a_share_of_the_cores():
    two_gpus = [worker_env(i, 2, ["0", "1"], 16) for i in range(2)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in two_gpus] == ["0", "1"]
    assert all("TF_FORCE_GPU_ALLOW_GROWTH" not in e for e in two_gpus)
    shared = [worker_env(i, 3, ["0", "1"], 16) for i in range(3)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in shared] == ["0", "1", "0"]
    assert all(e["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for e in shared)
    cpu = [worker_env(i, 4, [], 16) for i in range(4)]
    assert all(e["TF_NUM_INTRAOP_THREADS"] == "4" and "CUDA_VISIBLE_DEVICES" not in e for e in cpu)
    assert worker_env(0, 4, [], 2)["TF_NUM_INTRAOP_THREADS"] == "1"
    assert "TF_NUM_INTRAOP_THREADS" not in worker_env(0, 1, [], 8)


def test_visible_gpus_honours_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []


def test_monitor_shows_each_workers_latest_log_line(tmp_path):
    """The live panel carries Keras's latest epoch line of every local worker."""
    from rich.console import Console

    from doe_sr.engine.progress import Monitor, last_line

    log = tmp_path / "worker-0.log"
    log.write_text("Epoch 1/3\n160/160 - 38s - 237ms/step - loss: 0.0233\nEpoch 2/3\n\n")
    assert last_line(log) == "Epoch 2/3"
    assert last_line(tmp_path / "missing.log") == ""
    console = Console(record=True, width=100, force_terminal=True)
    with Monitor(console, workers=1, title="tiny", logs=[log]) as monitor:
        monitor.update(Progress([RunState(1, 0, "running"), RunState(2, 0, "queued")]))
    assert "worker 0: Epoch 2/3" in console.export_text()


def test_a_worker_is_gone_only_when_its_local_process_is_dead():
    import os
    import socket

    from doe_sr.engine.queue import worker_gone

    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: the pid no longer exists
    assert worker_gone(f"{host}:{dead.pid}")
    assert not worker_gone(f"{host}:{os.getpid()}")
    assert not worker_gone(f"another-host-{host}:{dead.pid}")  # cannot be checked from here: the heartbeat decides
    assert not worker_gone("")


def test_workers_are_capped_at_the_machine_unless_forced():
    from doe_sr.engine.workers import check_workers, max_workers
    from doe_sr.core.errors import UserError

    assert (max_workers([], 2), max_workers([], 16), max_workers(["0", "1"], 2)) == (2, 16, 8)
    with pytest.raises(UserError, match="--workers 1000: .* at most 2 workers .*--force-workers"):
        check_workers(1000, [], 2, force=False)
    check_workers(1000, [], 2, force=True)
    check_workers(2, [], 2, force=False)
    with pytest.raises(UserError, match="at least 1"):
        check_workers(0, [], 2, force=True)


def test_a_stale_trials_copy_carries_only_the_pairs_identity(tiny_study, tmp_path):
    """The queued copy of a dead worker's trial must not look like that worker's (see queue._retry_stale)."""
    from optuna.trial import TrialState

    engine = _engine(tiny_study, tmp_path)
    taken = engine.queue.take()
    taken.set_user_attr("mlflow_run_id", "abc")
    engine.queue.retry_stale(taken)
    copy = engine.queue.optuna_study.get_trials(deepcopy=False)[-1]
    assert copy.state == TrialState.WAITING
    assert copy.user_attrs == {"run": taken.run, "replicate": taken.replicate}


def test_one_state_enum_reads_and_writes_as_the_plain_word():
    """``doe-sr status --format json`` and the tables spell states as before the enum existed."""
    import json

    assert [str(s) for s in State] == ["done", "pruned", "running", "queued", "failed", "interrupted", "pending"]
    assert json.dumps(State.DONE) == '"done"' and f"{State.FAILED}" == "failed" and State.QUEUED == "queued"
    row = RunState(3, 1, State.RUNNING, worker="host:1").to_dict()
    assert list(row) == ["run", "replicate", "state", "value", "reason", "mlflow_run_id", "seconds", "started",
                         "worker", "flag", "flag_cause"]  # the degenerate-run flag joined the contract (issue 12)
    assert type(row["state"]) is str and json.dumps(row["state"]) == '"running"'
    ordered = Progress([RunState(2, 0, State.PENDING), RunState(1, 0, "done"), RunState(1, 1, State.FAILED)]).ordered()
    assert [(s.run, s.replicate) for s in ordered] == [(1, 0), (1, 1), (2, 0)]


def test_parent_outcome_follows_the_exit_code():
    """The parent run ends as ``doe-sr run`` exits: all done FINISHED (0), runs left FAILED (1),
    Ctrl-C or SIGTERM KILLED (130)."""
    from doe_sr.engine.study_engine import parent_outcome

    def progress(*states):
        return Progress([RunState(run=i + 1, replicate=0, state=s) for i, s in enumerate(states)])

    assert parent_outcome(progress(State.DONE, State.DONE), interrupted=False) == ("FINISHED", None)
    status, reason = parent_outcome(progress(State.DONE, State.FAILED), interrupted=False)
    assert status == "FAILED" and "1 of 2 runs not done (1 failed)" in reason
    status, reason = parent_outcome(progress(State.DONE, State.DONE), interrupted=True)
    assert status == "KILLED" and "2 of 2 runs done" in reason


def test_ctrl_c_inside_a_c_call_reads_as_an_interruption():
    """Ctrl-C landing inside NumPy/TensorFlow C code surfaces as a SystemError caused by the
    KeyboardInterrupt (seen in CI); the executor must record an interruption, not a failure."""
    from doe_sr.engine.executor import _interrupt_in

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise SystemError("<built-in method __array__> returned a result with an exception set") from interrupt
    except SystemError as exc:
        wrapped = exc
    assert _interrupt_in(wrapped)
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("during handling")  # implicit context, no explicit cause
    except RuntimeError as exc:
        assert _interrupt_in(exc)
    assert not _interrupt_in(ValueError("a real failure"))
