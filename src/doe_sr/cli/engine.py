"""``doe-sr run``, ``doe-sr worker`` and ``doe-sr status``: parse, call :mod:`doe_sr.workflow.run`, print.

``run`` prepares the queue (see :meth:`doe_sr.engine.study_engine.Engine.prepare`),
starts ``--workers N`` local ``doe-sr worker`` processes (:mod:`doe_sr.engine.workers`)
and shows their progress; ``worker`` is the same process started by hand on another
machine against a shared storage. SIGTERM (a batch scheduler's preemption) is treated
like Ctrl-C. A ``run`` started in the background inherits SIGINT ignored (POSIX does
that to ``cmd &``) and keeps it so: stop it with SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

from doe_sr.cli.argtypes import positive_int
from doe_sr.cli.main import _console, _engine, _report


def _sigterm_as_interrupt() -> None:
    def _raise(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


def cmd_run(args: argparse.Namespace) -> int:
    from doe_sr.cli.views import print_progress
    from doe_sr.workflow.run import local_workers, run_study

    _sigterm_as_interrupt()
    engine = _engine(args)
    gpus = local_workers(args.workers, force=args.force_workers)
    if args.out and not args.no_report:  # a folder that cannot exist is found now, not after training
        from doe_sr.report.writer import make_folder

        make_folder(Path(args.out))
    console = _console()
    progress = run_study(engine, workers=args.workers, gpus=gpus, retry_failed=args.retry_failed,
                         accept_new_data=args.accept_new_data, console=console)
    print_progress(engine, progress)
    left = progress.total - progress.done
    if left:
        console.print(f"[yellow]{left} run(s) not done[/]: `doe-sr status {args.study}` lists why; "
                      f"`doe-sr run {args.study}` resumes (add --retry-failed to re-run failed ones)")
    rc = 0
    if progress.done and not args.no_report:
        with engine.lock:  # two sessions ending together must not write one report at once
            rc = _report(engine, args, quiet_if_incomplete=True)
    if args.confirm and left == 0 and rc == 0:
        rc = _confirm_after_run(engine, args)
    return 0 if left == 0 and rc == 0 else 1


def _confirm_after_run(engine, args: argparse.Namespace) -> int:
    """``run --confirm R``: the predicted optimum trained R times right after the array,
    its verdict folded into the same report (what ``doe-sr confirm`` does on its own)."""
    from doe_sr.cli.analysis import parse_pool
    from doe_sr.workflow.confirm import confirm_optimum

    console = _console()
    confirmation = confirm_optimum(
        engine, replicates=args.confirm, pool=parse_pool(args.pool) if args.pool else "auto",
        report=not args.no_report, out=args.out, say=console.print,
        warn=_console(stderr=True).print)
    if confirmation is None:
        return 1
    console.print(confirmation.to_text())
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    _sigterm_as_interrupt()
    from doe_sr.workflow.run import work

    engine = _engine(args)
    console = _console()
    if not args.storage and not engine.study.execution.storage:
        console.print(f"note: no --storage given; joining the local SQLite storage {engine.storage_url} "
                      "(machines that share a study need a PostgreSQL URL)")
    work(engine, console=console)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from doe_sr.cli.views import status_table
    from doe_sr.workflow.run import study_status

    engine = _engine(args)
    progress = study_status(engine)
    if args.format == "json":
        print(json.dumps([s.to_dict() for s in progress.ordered()], indent=2))
        return 0
    _console().print(status_table(engine, progress))
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
    sp.add_argument("--confirm", type=positive_int, nargs="?", const=3, default=0, metavar="R",
                    help="after the array, train the predicted optimum R times (default 3) and put the "
                         "confirmation verdict in the same report")
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
