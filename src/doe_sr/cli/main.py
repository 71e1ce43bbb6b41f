"""The ``doe-sr`` command: parse, call the modules, print.

Thin on purpose: every decision lives in the modules; this file turns arguments into
calls, results into tables (rich) or JSON, and errors into one line with an exit code
(2 for bad input, 1 for a failed run or evaluation, 130 for Ctrl-C).

Heavy imports (TensorFlow, MLflow, Optuna) happen inside the commands that need them,
so ``doe-sr design`` and ``doe-sr --help`` answer instantly.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from doe_sr.cli.quiet import import_tensorflow, quiet_libraries
from doe_sr.core.errors import DoeSrError, UserError

#: Modules that add sub-commands: each has ``register(add, add_study_options)``, where
#: ``add(name, func, help, example)`` returns an argparse sub-parser.
PLUGINS = ("doe_sr.cli.models", "doe_sr.cli.engine", "doe_sr.cli.data", "doe_sr.cli.analysis", "doe_sr.cli.validate",
           "doe_sr.cli.refine")

EXAMPLES = """examples:
  doe-sr design studies/quickstart.yaml              # the runs of the array
  doe-sr run studies/quickstart.yaml                 # train what is not done yet, then report
  doe-sr status studies/quickstart.yaml              # runs by state, with failure reasons
  doe-sr analyze studies/quickstart.yaml --format json
  doe-sr report studies/quickstart.yaml              # figures and tables in reports/quickstart/
  doe-sr refine studies/quickstart.yaml --trials 20 # Bayesian refinement after the array (Optuna)
  doe-sr ui                                          # browse the runs in the MLflow UI
"""


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


# -- commands -------------------------------------------------------------------------
def cmd_design(args: argparse.Namespace) -> int:
    from doe_sr.study.schema import load_study

    study = load_study(args.study)  # before pyDOE3 and pandas (a second): a bad file answers at once
    from doe_sr.study.design import design_json, run_table

    if args.format == "json":
        print(json.dumps(design_json(study), indent=2))
        return 0
    table = run_table(study)
    if args.format == "csv":
        table[["run", *study.factor_names]].to_csv(sys.stdout, index=False)
        return 0
    _console().print(_design_table(study, table))
    return 0


def _design_table(study, table):
    """The runs as a rich table: each level with its 1-based code, as Taguchi's tables print it."""
    from rich.table import Table
    from rich.text import Text

    # Text, not markup strings: a level or label such as "[/]" is the user's text, not rich markup.
    t = Table(title=Text(f"{study.name}: {study.design.array}, {len(table)} runs x "
                         f"{study.design.replicates} replicate(s)"))
    t.add_column("run", justify="right")
    for f in study.design.factors:
        t.add_column(Text(f.display))
    for _, row in table.iterrows():
        t.add_row(str(row["run"]), *(Text(f"{row[f]} ({row[f + '__code'] + 1})") for f in study.factor_names))
    return t


def _engine(args: argparse.Namespace):
    from doe_sr.workflow.session import open_study

    return open_study(args.study, storage=getattr(args, "storage", None),
                      tracking_uri=getattr(args, "tracking_uri", None))


def _report(engine, args, *, quiet_if_incomplete: bool = False) -> int:
    """Write the study's report (:func:`doe_sr.workflow.report.write_study_report`) and print
    its best run against bicubic. ``quiet_if_incomplete`` (the end of ``doe-sr run``): a
    report the runs cannot support yet is one line and exit 1, not an error."""
    from doe_sr.cli.analysis import parse_pool
    from doe_sr.core.objectives import baseline_metric
    from doe_sr.workflow.report import write_study_report
    from doe_sr.workflow.session import array_results

    results = array_results(engine)  # no finished runs: an error even at the end of `run`
    try:
        done = write_study_report(engine, results=results, pool=parse_pool(getattr(args, "pool", None)),
                                  impute=getattr(args, "impute", None), out=getattr(args, "out", None))
    except UserError as exc:
        if quiet_if_incomplete:
            _console(stderr=True).print(f"report not written: {exc}")
            return 1
        raise
    best, baseline, nan = done.best, done.baseline, float("nan")
    console = _console()
    console.print(f"best run: {best['run']} ({', '.join(f'{f}={best[f]}' for f in engine.study.factor_names)}) "
                  f"val PSNR {best.get('val_psnr', nan):.3f} dB, test PSNR {best.get('test_psnr', nan):.3f} dB; "
                  f"bicubic val {baseline.get(baseline_metric('val_psnr'), nan):.3f} dB, "
                  f"test {baseline.get(baseline_metric('test_psnr'), nan):.3f} dB")
    console.print(f"report: {done.report.folder}/summary.md ({len(done.report.files)} files)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    return _report(_engine(args), args)


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the store in the MLflow UI and print (and open) the study's runs view; see
    :mod:`doe_sr.workflow.ui`."""
    from doe_sr.cli.process_group import run_group
    from doe_sr.workflow.ui import open_when_serving, plan_ui

    plan = plan_ui(args.study, tracking_uri=args.tracking_uri, host=args.host, port=args.port)
    if plan.command is None:
        print(f"study {plan.study} records to the MLflow server at {plan.url}; its runs: {plan.link}", flush=True)
    else:
        print(f"MLflow UI on {plan.url} over {plan.backend_uri} (Ctrl-C to stop)", flush=True)
        if plan.study:
            print(f"runs of study {plan.study}: {plan.link}", flush=True)
    if not args.no_browser:
        open_when_serving(plan)
    return 0 if plan.command is None else run_group(plan.command)


# -- parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from doe_sr import __version__

    p = argparse.ArgumentParser(
        prog="doe-sr", description="Taguchi orthogonal-array studies of Keras super-resolution networks.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"doe-sr {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, func, help: str, example: str):
        sp = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=func)
        return sp

    def add_study_options(sp):
        sp.add_argument("--storage", help="Optuna storage URL (default: the study's execution.storage, "
                                          "or sqlite:///mlruns/optuna.db)")
        sp.add_argument("--tracking-uri", help="MLflow tracking URI or folder (default: the study's tracking.uri)")

    sp = add("design", cmd_design, "Print the runs of a study's orthogonal array.",
             "doe-sr design studies/srnet_l9.yaml --format json")
    sp.add_argument("study")
    sp.add_argument("--format", choices=("table", "csv", "json"), default="table")

    sp = add("report", cmd_report, "Write figures and tables of a study to reports/<study>/.",
             "doe-sr report studies/quickstart.yaml --pool auto")
    sp.add_argument("study")
    add_study_options(sp)
    sp.add_argument("--pool", help="factors to pool, comma-separated, or 'auto'")
    sp.add_argument("--impute", choices=("worst",))
    sp.add_argument("--out", help="reports folder (default: reports)")

    for module in PLUGINS:
        importlib.import_module(module).register(add, add_study_options)

    sp = add("ui", cmd_ui, "Browse the runs in the MLflow UI (127.0.0.1); with a study, open its runs.",
             "doe-sr ui studies/quickstart.yaml")
    sp.add_argument("study", nargs="?", help="a study file: serve its store and link to its runs")
    sp.add_argument("--tracking-uri", help="MLflow store folder or URI (default: the study's tracking.uri, "
                                           "else mlruns)")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=5000)
    sp.add_argument("--no-browser", action="store_true",
                    help="print the link only (also when DOE_SR_NO_BROWSER is set, or there is no display)")
    return p


#: commands that never touch TensorFlow (they answer without its start-up cost)
LIGHT_COMMANDS = {"design", "run", "status", "analyze", "predict", "validate", "refine", "report", "ui", "data"}


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    from doe_sr.core.imports import before_user_imports

    before_user_imports(import_tensorflow)  # a user's network file imports Keras: quietly
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command not in LIGHT_COMMANDS:
            import_tensorflow()
        return int(args.func(args) or 0)
    except DoeSrError as exc:
        print(f"doe-sr: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("doe-sr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
