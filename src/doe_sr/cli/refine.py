"""``doe-sr refine``: parse, call :func:`doe_sr.workflow.refine.refine_study`, print.

Exit codes as ``run``: 0 every trial settled (complete or pruned), 1 a trial failed or
was left undone (running the command again resumes), 2 bad input (no ``refine:``
section, a bad range, an unfinished array), 130 Ctrl-C or SIGTERM. ``--worker`` is the
process ``--workers N`` starts (one more worker of the refinement, in this process);
started by hand on another machine against a shared storage it joins the refinement there.
"""

from __future__ import annotations

import argparse
import json

from doe_sr.cli.argtypes import positive_int
from doe_sr.cli.main import _console


def cmd_refine(args: argparse.Namespace) -> int:
    from doe_sr.cli.engine import _sigterm_as_interrupt
    import doe_sr.workflow.refine as wf

    _sigterm_as_interrupt()
    options = {"storage": args.storage, "tracking_uri": args.tracking_uri, "trials": args.trials}
    if args.worker:  # trains: TensorFlow quiet and loaded now
        from doe_sr.cli.quiet import import_tensorflow

        import_tensorflow()
        wf.work_refine(args.study, console=_console(), **options)
        return 0
    quiet = args.format == "json"
    outcome = wf.refine_study(args.study, workers=args.workers, force_workers=args.force_workers,
                              retry_failed=args.retry_failed, report=not args.no_report, out=args.out,
                              confirm=args.confirm or 0, verbose=0 if quiet else "auto",
                              console=_console(stderr=quiet), **options)
    for warning in outcome.warnings:
        _console(stderr=True).print(f"[yellow]warning:[/] {warning}")
    if args.format == "json":
        print(json.dumps(outcome.to_dict(), indent=2, default=str))
        return 0 if outcome.complete else 1
    if not outcome.complete:
        left = outcome.progress.total - outcome.progress.settled
        _console().print(f"[yellow]{left} refinement trial(s) not settled[/]; `doe-sr refine {args.study}` resumes "
                         "(--retry-failed re-runs failed ones)")
        return 1
    from doe_sr.workflow.refine_report import verdict

    lines = [verdict(outcome)]
    if outcome.comparison is not None:
        from doe_sr.report.writer import to_markdown

        lines += ["", to_markdown(outcome.comparison, index=False, digits=4)]
    lines += [f"- {n}" for n in outcome.notes]
    if outcome.folder:
        lines.append(f"report: {outcome.folder}")
    _console().print("\n".join(lines), markup=False, highlight=False)
    return 0


def register(add, add_study_options) -> None:
    sp = add("refine", cmd_refine,
             "Refine the array's optimum with Bayesian optimisation (Optuna), warm-started from the array's runs.",
             "doe-sr refine studies/quickstart.yaml --trials 20")
    sp.add_argument("study")
    add_study_options(sp)
    sp.add_argument("--trials", type=positive_int, default=None,
                    help="the trial budget (default: refine.trials of the study); raising it extends the refinement")
    sp.add_argument("--workers", type=positive_int, default=1, help="local worker processes (default 1)")
    sp.add_argument("--force-workers", action="store_true",
                    help="start more --workers than the machine's cores and GPUs suggest")
    sp.add_argument("--confirm", type=positive_int, nargs="?", const=3, default=None, metavar="R",
                    help="also train the refined best R times (default 3) with fresh seeds, those `doe-sr confirm` "
                         "gives the Taguchi optimum")
    sp.add_argument("--retry-failed", action="store_true", help="also re-run trials that failed")
    sp.add_argument("--no-report", action="store_true", help="do not write reports/<study>/refine/")
    sp.add_argument("--out", help="reports folder (default: reports)")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
