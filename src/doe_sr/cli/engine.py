"""``doe-sr run``, ``doe-sr worker`` and ``doe-sr status``: the run engine's commands.

``run`` prepares the queue (see :meth:`Engine.prepare`), starts ``--workers N`` local
``doe-sr worker`` processes and shows their progress; ``worker`` is the same process
started by hand on another machine against a shared storage. Why separate processes
rather than threads: TensorFlow keeps one runtime per process (devices, memory), so a
worker per process is what pins a worker to a GPU, and a crash or ``kill -9`` of one
worker leaves the others, and the study, intact.

Workers run in their own session, so a Ctrl-C at the terminal reaches ``run`` only,
which then hands exactly one SIGINT to each worker: each marks its current run KILLED
and its trial interrupted before leaving (a second signal during that bookkeeping is
ignored). SIGTERM (a batch scheduler's preemption) is treated like Ctrl-C. If ``run``
itself is killed outright, its workers carry on until the queue is empty. A ``run``
started in the background inherits SIGINT ignored (POSIX does that to ``cmd &``) and
keeps it so: stop it with SIGTERM.

A second ``doe-sr run`` of a study that is already running joins it: its workers take
what is still queued (the queue hands each pair to one worker only), it says so in one
line, and both sessions end when the queue is empty. Why join rather than refuse: that is
what a second ``doe-sr worker`` does, it is what a researcher who starts the study again
on a free GPU wants, and "already running" cannot be told reliably from a session that
has only just started. Each session's worker logs carry its start time and pid, so two
sessions never write the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from doe_sr.cli.main import _console, _engine, _print_progress, _report


def _sigterm_as_interrupt() -> None:
    def _raise(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


def _tracking_for_workers(engine) -> str:
    uri = engine.tracking_uri
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def max_workers(gpus: list[str], cpus: int) -> int:
    """The most local workers that can do useful work at once: one per core, or four per GPU.

    Why a cap: each worker is a TensorFlow process of its own (about half a GB of memory
    before it trains), so ``--workers 1000`` on a laptop only thrashes it; past one per
    core (or a few per GPU, sharing its memory) more workers finish nothing sooner.
    """
    return max(2, cpus, 4 * len(gpus))


def check_workers(workers: int, gpus: list[str], cpus: int, force: bool) -> None:
    """Refuse a ``--workers`` below 1, or above :func:`max_workers` unless ``force``d."""
    from doe_sr.core.errors import UserError

    if workers < 1:
        raise UserError(f"--workers {workers}: give at least 1")
    cap = max_workers(gpus, cpus)
    if workers > cap and not force:
        where = f"{len(gpus)} GPU(s) and {cpus} CPU core(s)" if gpus else f"{cpus} CPU core(s) and no GPU"
        raise UserError(f"--workers {workers}: this machine has {where}, so at most {cap} workers make sense; "
                        f"give --workers {cap} or fewer, or add --force-workers to start {workers} anyway")


def _session_logs(engine) -> tuple[Path, str]:
    """The worker log folder and this session's prefix (start time and pid: unique per ``run``)."""
    from doe_sr.engine.execute import local_folder

    logs = local_folder(engine.study) / "logs" / engine.study.name
    logs.mkdir(parents=True, exist_ok=True)
    return logs, f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def launch_workers(engine, workers: int, console, gpus: list[str] | None = None) -> object:
    """Start ``workers`` local worker processes, show progress until they exit, return the progress."""
    from doe_sr.engine.execute import visible_gpus, worker_env
    from doe_sr.engine.progress import Monitor

    gpus = visible_gpus() if gpus is None else gpus
    cpus = _cpus()
    logs, session = _session_logs(engine)
    cmd = [sys.executable, "-m", "doe_sr.cli", "worker", str(Path(engine.study_path).resolve()),
           "--storage", engine.storage_url, "--tracking-uri", _tracking_for_workers(engine)]
    where = (f"GPU {', '.join(gpus)}" if gpus else f"{cpus} CPU cores")
    console.print(f"{workers} worker(s) on {where}; logs in {logs}/{session}-worker-*.log")
    procs: list[tuple[subprocess.Popen, Path]] = []
    for i in range(workers):
        log_path = logs / f"{session}-worker-{i}.log"
        with open(log_path, "a") as log:
            env = {**os.environ, **worker_env(i, workers, gpus, cpus)}
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env=env, start_new_session=True), log_path))
    title = f"{engine.study.name}"
    with Monitor(console, workers=workers, title=title, logs=[path for _, path in procs]) as monitor:
        try:
            while any(p.poll() is None for p, _ in procs):
                monitor.update(engine.progress())
                time.sleep(1.0)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            for p, _ in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p, _ in procs:
                try:
                    p.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    p.kill()
            raise
        monitor.update(engine.progress())
    for i, (p, log_path) in enumerate(procs):
        if p.returncode != 0:
            how = f"signal {-p.returncode}" if p.returncode < 0 else f"exit code {p.returncode}"
            console.print(f"[yellow]worker {i} (pid {p.pid}) stopped with {how}[/]; last lines of {log_path}:\n"
                          f"{_tail(log_path)}")
    return engine.refresh()


def cmd_run(args: argparse.Namespace) -> int:
    from doe_sr.engine.execute import visible_gpus

    _sigterm_as_interrupt()
    engine = _engine(args)
    engine.accept_new_data = args.accept_new_data
    gpus = visible_gpus()
    check_workers(args.workers, gpus, _cpus(), args.force_workers)
    if args.out and not args.no_report:  # a folder that cannot exist is found now, not after training
        from doe_sr.report.writer import make_folder

        make_folder(Path(args.out))
    console = _console()
    progress = engine.prepare(retry_failed=args.retry_failed)
    if progress.done == progress.total:
        console.print(f"[bold]{engine.study.name}[/]: all {progress.total} runs are already done; nothing to train.")
    else:
        console.print(f"[bold]{engine.study.name}[/]: {engine.study.design.array}, "
                      f"{progress.total - progress.done} of {progress.total} runs to do; "
                      f"storage {engine.storage_url}, tracking {engine.tracker.uri}")
        running = [s for s in progress.states if s.state == "running"]
        if running:
            console.print(f"{len(running)} run(s) already running (workers "
                          f"{', '.join(sorted({s.worker for s in running if s.worker}))}); joining them")
        start = time.perf_counter()
        progress = launch_workers(engine, args.workers, console, gpus)
        console.print(f"finished in {time.perf_counter() - start:.0f} s")
    _print_progress(engine, progress)
    left = progress.total - progress.done
    if left:
        console.print(f"[yellow]{left} run(s) not done[/]: `doe-sr status {args.study}` lists why; "
                      f"`doe-sr run {args.study}` resumes (add --retry-failed to re-run failed ones)")
    rc = 0
    if progress.done and not args.no_report:
        with engine.lock:  # two sessions ending together must not write one report at once
            rc = _report(engine, args, quiet_if_incomplete=True)
    return 0 if left == 0 and rc == 0 else 1


def cmd_worker(args: argparse.Namespace) -> int:
    _sigterm_as_interrupt()
    from doe_sr.engine.execute import worker_id
    from doe_sr.engine.progress import summary

    engine = _engine(args)
    console = _console()
    if not args.storage and not engine.study.execution.storage:
        console.print(f"note: no --storage given; joining the local SQLite storage {engine.storage_url} "
                      "(machines that share a study need a PostgreSQL URL)")
    console.print(f"worker {worker_id()} joins {engine.study.name!r}: storage {engine.storage_url}, "
                  f"tracking {engine.tracking_uri}")
    start = time.monotonic()
    progress = engine.run(verbose="auto" if sys.stdout.isatty() else 2,
                          on_change=lambda p: console.print(summary(p, 1, time.monotonic() - start)))
    console.print(f"worker {worker_id()}: no queued run left; {summary(progress, 1, time.monotonic() - start)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from doe_sr.engine.progress import STATES, summary

    engine = _engine(args)
    progress = engine.refresh()
    ordered = sorted(progress.states, key=lambda s: (STATES.index(s.state), s.run, s.replicate))
    if args.format == "json":
        print(json.dumps([s.__dict__ for s in ordered], indent=2))
        return 0
    from rich.table import Table

    console = _console()
    t = Table(title=f"{engine.study.name}: " + summary(progress, 1, 0).split(";")[0])
    for col in ("state", "run", "rep", *[f.display for f in engine.study.design.factors],
                engine.study.response.metric, "time", "worker", "reason"):
        t.add_column(col)
    from doe_sr.engine.progress import COLORS, duration

    for s in ordered:
        run = engine.runs[s.run]
        t.add_row(f"[{COLORS[s.state]}]{s.state}[/]", str(s.run), str(s.replicate),
                  *[str(run.factors[f]) for f in engine.study.factor_names],
                  "" if s.value is None else f"{s.value:.3f}", duration(s.seconds) if s.seconds else "",
                  s.worker if s.state == "running" else "", s.reason)
    console.print(t)
    return 0


def register(add, add_study_options) -> None:
    sp = add("run", cmd_run, "Train every run of the study that is not done yet, then write the report.",
             "doe-sr run studies/quickstart.yaml --workers 2")
    sp.add_argument("study")
    add_study_options(sp)
    sp.add_argument("--workers", type=int, default=1,
                    help="local worker processes (default 1); each gets its own GPU when several are visible; "
                         "at most one per CPU core or four per GPU")
    sp.add_argument("--force-workers", action="store_true",
                    help="start more --workers than the machine's cores and GPUs suggest")
    sp.add_argument("--retry-failed", action="store_true", help="also re-run runs that failed (diverged, OOM)")
    sp.add_argument("--accept-new-data", action="store_true",
                    help="go on although the images differ from those the finished runs used")
    sp.add_argument("--no-report", action="store_true", help="do not write reports/<study>/ at the end")
    sp.add_argument("--out", help="reports folder (default: reports)")
    sp.set_defaults(pool=None, impute=None)

    sp = add("worker", cmd_worker, "Join a study as one more worker (on this or another machine) until its queue is empty.",
             "doe-sr worker studies/quickstart.yaml --storage postgresql+psycopg2://doe:pw@db-host/doe "
             "--tracking-uri http://mlflow-host:5000")
    sp.add_argument("study")
    add_study_options(sp)

    sp = add("status", cmd_status, "List a study's runs by state, with failure reasons.",
             "doe-sr status studies/quickstart.yaml")
    sp.add_argument("study")
    add_study_options(sp)
    sp.add_argument("--format", choices=("table", "json"), default="table")
