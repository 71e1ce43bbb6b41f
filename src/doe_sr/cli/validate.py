"""``doe-sr validate``: parse, call :func:`doe_sr.workflow.validate.validate_study`, print.

Exit codes as ``run``: 0 done, 1 a run of the validation set failed or was left undone
(running the command again resumes), 2 bad input, 130 Ctrl-C or SIGTERM. ``--worker``
is the process ``--workers N`` starts (one more worker of the set, in this process);
started by hand on another machine against a shared storage it joins the set there.
"""

from __future__ import annotations

import argparse
import json

from doe_sr.cli.argtypes import positive_int
from doe_sr.cli.main import _console


def cmd_validate(args: argparse.Namespace) -> int:
    from doe_sr.cli.engine import _sigterm_as_interrupt
    import doe_sr.workflow.validate as wf

    _sigterm_as_interrupt()
    options = {"storage": args.storage, "tracking_uri": args.tracking_uri, "replicates": args.replicates}
    if args.worker:  # trains: TensorFlow quiet and loaded now (a no-op unless `validate` is a light command)
        from doe_sr.cli.quiet import import_tensorflow

        import_tensorflow()
        wf.work_validation(args.study, against=args.against, console=_console(), **options)
        return 0
    quiet = args.format == "json"
    outcome = wf.validate_study(args.study, against=args.against, workers=args.workers,
                                force_workers=args.force_workers, retry_failed=args.retry_failed,
                                report=not args.no_report, out=args.out, console=_console(stderr=quiet), **options)
    for warning in outcome.warnings:
        _console(stderr=True).print(f"[yellow]warning:[/] {warning}")
    if args.format == "json":
        print(json.dumps(outcome.to_dict(), indent=2))
    elif outcome.result is not None:
        _console().print(outcome.result.to_text() + (f"\nreport: {outcome.folder}" if outcome.folder else ""))
    else:
        _console().print(f"[yellow]{outcome.progress.total - outcome.progress.done} validation run(s) not done[/]; "
                         f"`doe-sr validate {args.study} --against {args.against}` resumes (--retry-failed re-runs failed)")
    return 0 if outcome.result is not None else 1


def register(add, add_study_options) -> None:
    sp = add("validate", cmd_validate,
             "Check the study's array against the full factorial or a larger array, trained at the study's settings.",
             "doe-sr validate studies/quickstart.yaml --against full --workers 2")
    sp.add_argument("study")
    add_study_options(sp)
    sp.add_argument("--against", default="full",
                    help="full (every combination of the levels, default) or a larger orthogonal array (L27, L81, ...)")
    sp.add_argument("--workers", type=positive_int, default=1, help="local worker processes (default 1)")
    sp.add_argument("--force-workers", action="store_true",
                    help="start more --workers than the machine's cores and GPUs suggest")
    sp.add_argument("--replicates", type=positive_int, default=None,
                    help="replicates of each combination (default: the study's)")
    sp.add_argument("--retry-failed", action="store_true", help="also re-run validation runs that failed")
    sp.add_argument("--no-report", action="store_true", help="do not write reports/<study>/validation_<set>/")
    sp.add_argument("--out", help="reports folder (default: reports)")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
