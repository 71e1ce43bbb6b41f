"""``doe-sr analyze``, ``doe-sr predict`` and ``doe-sr confirm``: parse, call :mod:`doe_sr.workflow.analyze` and
:mod:`doe_sr.workflow.predict` and :mod:`doe_sr.workflow.confirm`, print.

``analyze`` reads either a study's finished array runs from MLflow or a results table
produced elsewhere (``--results FILE.csv``), and prints :class:`doe_sr.analysis.taguchi.Analysis`
as text or as the JSON contract of ARCHITECTURE.md. ``confirm`` trains the predicted
optimum a few more times and prints the verdict of
:class:`doe_sr.analysis.confirmation.Confirmation` (the steps are in the workflow).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from doe_sr.cli.main import _engine
from doe_sr.core.errors import UserError
from doe_sr.core.folders import make_output_folder
from doe_sr.core.objectives import OBJECTIVES


# -- arguments ------------------------------------------------------------------------
def parse_pool(value: str | None) -> list[str] | str | None:
    """``--pool``: ``auto`` (Taguchi's pooling-up rule), ``none``, or ``a,b``."""
    if value is None or value.strip().lower() == "none":
        return None
    if value.strip() == "auto":
        return "auto"
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise UserError("--pool: give 'auto', 'none' or comma-separated factor names")
    return names


def parse_interactions(value: str | None) -> list[tuple[str, str]]:
    """``--interactions a:b,c:d`` (``a*b`` and ``a×b`` are accepted too)."""
    if not value:
        return []
    pairs = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        parts = item.replace("×", ":").replace("*", ":").split(":")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise UserError(f"--interactions: {item!r} is not a pair like 'learning_rate:optimizer'")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def plots_folder(value: str) -> Path:
    """``--plots DIR``, created before the analysis runs, so a folder that cannot exist
    (``/proc/x``, a path through a file) is one line, not a traceback after the work."""
    return make_output_folder(Path(value).expanduser(), "--plots", holds="a folder for the figures", writable=True)


def _source_args(args: argparse.Namespace) -> list[str] | None:
    """The factor columns of ``--results``, or None for a study; refuses mixed or missing sources."""
    if args.results:
        if args.study:
            raise UserError("give either a study file or --results FILE.csv, not both")
        if not args.factors or not args.response or not args.objective:
            raise UserError("--results needs --factors a,b,c, --response NAME and "
                            f"--objective {'|'.join(OBJECTIVES)}")
        return [f.strip() for f in args.factors.split(",") if f.strip()]
    if not args.study:
        raise UserError("give a study file, or --results FILE.csv --factors ... --response ... --objective ...")
    if args.factors:
        raise UserError("--factors is for --results tables; a study names its own factors")
    return None


def _warn(lines: list[str]) -> None:
    for line in lines:
        print(f"doe-sr: warning: {line}", file=sys.stderr)


# -- analyze --------------------------------------------------------------------------
def cmd_analyze(args: argparse.Namespace) -> int:
    from doe_sr.workflow.analyze import analyze_csv, analyze_study

    options = dict(pool=parse_pool(args.pool), interactions=parse_interactions(args.interactions))
    options["plots"] = plots_folder(args.plots) if args.plots else None
    factors = _source_args(args)
    if factors is not None:
        done = analyze_csv(Path(args.results), factors, args.response, args.objective, impute=args.impute,
                           **options)
    else:
        done = analyze_study(_engine(args), response=args.response, objective=args.objective,
                             impute=args.impute, **options)
    _warn(done.warnings)  # the parent run could not be updated: stderr, the output stays the same
    if args.format == "json":
        _warn(done.analysis.warnings)  # stdout stays pure JSON; people still see the warnings
        print(json.dumps(done.to_dict(), indent=2))
    else:
        print(done.analysis.to_text())
        if done.figures:
            print(f"\nFigures ({len(done.figures)} files) in {args.plots}: "
                  + ", ".join(sorted({p.stem for p in done.figures})) + " (.pdf, .svg, .png)")
    return 0


# -- predict --------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    from doe_sr.workflow.predict import parse_levels, predict_csv, predict_study

    levels = parse_levels(args.levels)
    factors = _source_args(args)
    if factors is not None:
        prediction = predict_csv(Path(args.results), factors, args.response, args.objective, levels,
                                 pool=parse_pool(args.pool), impute=args.impute)
    else:
        prediction = predict_study(_engine(args), levels, response=args.response, objective=args.objective,
                                   pool=parse_pool(args.pool), impute=args.impute)
    print(json.dumps(prediction.to_dict(), indent=2) if args.format == "json" else prediction.to_text())
    return 0


# -- confirm --------------------------------------------------------------------------
def cmd_confirm(args: argparse.Namespace) -> int:
    from doe_sr.workflow.confirm import confirm_optimum

    if args.replicates < 1:
        raise UserError("--replicates must be at least 1")
    console = sys.stderr if args.format == "json" else sys.stdout
    confirmation = confirm_optimum(
        _engine(args), replicates=args.replicates, pool=parse_pool(args.pool), impute=args.impute,
        verbose=0 if args.format == "json" else ("auto" if sys.stdout.isatty() else 2),
        report=not args.no_report, out=args.out,
        say=lambda line: print(line, file=console), warn=lambda line: print(line, file=sys.stderr))
    if confirmation is None:
        return 1
    print(json.dumps(confirmation.to_dict(), indent=2) if args.format == "json" else confirmation.to_text())
    return 0


# -- registration ---------------------------------------------------------------------
def register(add, add_study_options) -> None:
    sp = add("analyze", cmd_analyze, "Taguchi analysis: S/N ratios, response tables, ANOVA, optimum, prediction.",
             "doe-sr analyze --results seed.csv --factors lr,optimizer,activation,filters --response loss "
             "--objective smaller --pool auto")
    sp.add_argument("study", nargs="?", help="study file whose finished runs are read from MLflow")
    add_study_options(sp)
    sp.add_argument("--results", help="analyze a CSV produced elsewhere instead of a study's MLflow runs "
                                      "(one row per run and replicate; an optional 'run' column)")
    sp.add_argument("--factors", help="with --results: comma-separated factor columns")
    sp.add_argument("--response", help="response column/metric (default: the study's response.metric)")
    sp.add_argument("--objective", choices=OBJECTIVES,
                    help="larger/smaller/nominal-the-better (required with --results)")
    sp.add_argument("--pool", help="factors to pool into the error, comma-separated, 'auto' (Taguchi's "
                                   "pooling-up rule) or 'none' (default)")
    sp.add_argument("--interactions", help="two-factor interactions to put in the ANOVA, e.g. a:b,c:d")
    sp.add_argument("--impute", choices=("worst",), help="replace lost runs by the worst response (warned)")
    sp.add_argument("--plots", metavar="DIR", help="also write main-effects (with 95%% intervals when an error "
                                                   "estimate exists), interaction, contribution, Pareto and "
                                                   "residual figures (PDF, SVG, PNG) to DIR")
    sp.add_argument("--format", choices=("table", "json"), default="table")

    sp = add("predict", cmd_predict,
             "Predict the S/N and the mean of any combination of levels, with 95% intervals.",
             "doe-sr predict studies/quickstart.yaml --levels learning_rate=0.001,optimizer=adam,"
             "activation=elu,filters=64 --format json")
    sp.add_argument("study", nargs="?", help="study file whose finished runs are read from MLflow")
    add_study_options(sp)
    sp.add_argument("--levels", required=True, help="factor=level for every factor, comma-separated")
    sp.add_argument("--results", help="predict from a CSV produced elsewhere (as analyze --results)")
    sp.add_argument("--factors", help="with --results: comma-separated factor columns")
    sp.add_argument("--response", help="response column/metric (default: the study's response.metric)")
    sp.add_argument("--objective", choices=OBJECTIVES, help="required with --results")
    sp.add_argument("--pool", help="factors to pool into the error, 'auto' or 'none' (default)")
    sp.add_argument("--impute", choices=("worst",), help="replace lost runs by the worst response (warned)")
    sp.add_argument("--format", choices=("table", "json"), default="table")

    sp = add("confirm", cmd_confirm,
             "Train the predicted optimum R times and check it falls inside the confirmation interval.",
             "doe-sr confirm studies/quickstart.yaml --replicates 3")
    sp.add_argument("study")
    add_study_options(sp)
    sp.add_argument("--replicates", type=int, default=3, metavar="R",
                    help="confirmation runs wanted (finished ones at the same optimum are reused; default 3)")
    sp.add_argument("--pool", default="auto",
                    help="pooling for the prediction: 'auto' (default: Taguchi's rule, which a saturated "
                         "L9 needs for any interval), 'none', or comma-separated factors")
    sp.add_argument("--impute", choices=("worst",), help="replace lost array runs by the worst response")
    sp.add_argument("--no-report", action="store_true", help="do not update reports/<study>/")
    sp.add_argument("--out", help="reports folder (default: reports)")
    sp.add_argument("--format", choices=("table", "json"), default="table")
