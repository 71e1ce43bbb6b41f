"""``doe-sr analyze`` and ``doe-sr confirm``: the Taguchi analysis on the command line.

``analyze`` reads either a study's finished array runs from MLflow or a results table
produced elsewhere (``--results FILE.csv``), and prints :class:`doe_sr.analysis.taguchi.Analysis`
as text or as the JSON contract of ARCHITECTURE.md. ``confirm`` closes Taguchi's loop
(Ross, *Taguchi Techniques for Quality Engineering*, 2nd ed., ch. 15; Phadke, ch. 5):
train the predicted optimum a few more times and check that the observed mean falls
inside the additive model's confirmation interval. Outside means the main-effect model
missed something (an interaction, a curved effect), so the "optimum" is not trusted.

Levels are text throughout: a CSV is read with every cell as a string, so "0.001" or
"Adam" come back exactly as written, never as 0.001000 or a reformatted float.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from doe_sr.core.errors import RunFailed, UserError
from doe_sr.workflow.session import array_results, design_frame

#: Cells of the response column read as a lost run (NaN) rather than as bad input.
MISSING = frozenset({"", "nan", "NaN", "NA", "N/A", "null", "None"})

#: Parent-run tags and metrics that record a confirmation verdict in MLflow.
VERDICT_TAG = "doe_sr.confirmation.verdict"
OPTIMUM_TAG = "doe_sr.confirmation.optimum"
POOLED_TAG = "doe_sr.confirmation.pooled"
RUNS_TAG = "doe_sr.confirmation.run_ids"

#: The run number of a confirmation run. 0 is never a row of an orthogonal array
#: (rows are numbered from 1), so a confirmation run cannot be mistaken for an array run
#: even when the optimum coincides with one of the array's rows.
CONFIRMATION_RUN = 0


# -- shared helpers -------------------------------------------------------------------
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


def read_results_csv(path: Path, factors: list[str], response: str):
    """A results table produced elsewhere: factor cells as written, response as numbers.

    Empty or NA-like response cells are lost runs (NaN: the analyzer refuses them
    unless ``--impute worst``); any other non-number is an error naming its line.
    """
    import pandas as pd

    if not path.is_file():
        raise UserError(f"--results: file {path} not found; give the path of a CSV file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:  # empty file, binary junk, broken quoting
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--results: cannot read {path} as CSV ({first}); save it as comma-separated text") from None
    header = _header(path)
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise UserError(f"--results: column {twice[0]!r} appears twice in the header of {path}; "
                        "name each column once")
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in [*factors, response] if c not in df.columns]
    if missing:
        raise UserError(f"--results: column(s) {', '.join(missing)} not in {path}; "
                        f"its columns are {', '.join(df.columns)}")
    if df.empty:
        raise UserError(f"--results: {path} has a header but no rows")
    for f in factors:
        df[f] = df[f].str.strip()
        blank = df.index[df[f] == ""].tolist()
        if blank:
            raise UserError(f"--results: factor column {f!r} is empty on line(s) "
                            f"{', '.join(str(i + 2) for i in blank)} of {path}; every run needs a level")
    text = df[response].str.strip()
    values = pd.to_numeric(text.where(~text.isin(MISSING)), errors="coerce")
    bad = df.index[values.isna() & ~text.isin(MISSING)].tolist()
    if bad:
        raise UserError(f"--results: response column {response!r} is not numeric: {text[bad[0]]!r} on line "
                        f"{bad[0] + 2} of {path}; fix the cell or leave it empty for a lost run")
    df[response] = values.astype(float)
    return df


def _header(path: Path) -> list[str]:
    """The column names as written: pandas renames a repeated 'y' to 'y.1', which would
    silently analyze one of two columns of the same name."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            row = next(csv.reader(fh, skipinitialspace=True), [])
    except csv.Error as exc:
        raise UserError(f"--results: cannot read {path} as CSV ({exc}); save it as comma-separated text") from None
    return [c.strip() for c in row]


def plots_folder(value: str) -> Path:
    """``--plots DIR``, created before the analysis runs, so a folder that cannot exist
    (``/proc/x``, a path through a file) is one line, not a traceback after the work."""
    folder = Path(value).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--plots: {folder} is a file, not a folder; give a folder for the figures")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--plots: cannot create the folder {folder} ({exc.strerror or exc}); "
                        "give a folder you can write to") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"--plots: the folder {folder} is not writable; give a folder you can write to")
    return folder


def _engine(args: argparse.Namespace):
    from doe_sr.workflow.session import open_study

    return open_study(args.study, storage=getattr(args, "storage", None),
                      tracking_uri=getattr(args, "tracking_uri", None))


def study_analysis(engine, *, response: str | None = None, objective: str | None = None, pool=None,
                   impute: str | None = None, interactions=()):
    """Analyze a study's array runs with its levels in study order."""
    from doe_sr.analysis.taguchi import analyze

    study = engine.study
    results = array_results(engine)
    analysis = analyze(results, study.factor_names, response or study.response.metric,
                       objective or study.response.objective,
                       levels={f.name: f.level_labels for f in study.design.factors},
                       pool=pool, design=design_frame(engine), impute=impute, interactions=interactions)
    return analysis, results


def write_figures(analysis, results, folder: Path, labels: dict[str, str] | None = None) -> list[Path]:
    """Main effects (means and S/N), interaction matrix and % contribution, each as PDF,
    SVG and 300-dpi PNG (see :mod:`doe_sr.report.plots`)."""
    from doe_sr.report import plots

    folder.mkdir(parents=True, exist_ok=True)
    files = plots.main_effects(analysis, folder / "main_effects", labels=labels)
    files += plots.contributions(analysis, folder / "anova_contribution")
    if len(analysis.factors) >= 2:
        files += plots.interactions(results, analysis.factors, analysis.response, folder / "interactions",
                                    levels=analysis.levels)
    return files


def _warn(lines: list[str]) -> None:
    for line in lines:
        print(f"doe-sr: warning: {line}", file=sys.stderr)


# -- analyze --------------------------------------------------------------------------
def cmd_analyze(args: argparse.Namespace) -> int:
    from doe_sr.analysis.taguchi import analyze

    pool = parse_pool(args.pool)
    interactions = parse_interactions(args.interactions)
    plots = plots_folder(args.plots) if args.plots else None
    labels = None
    if args.results:
        if args.study:
            raise UserError("give either a study file or --results FILE.csv, not both")
        if not args.factors or not args.response or not args.objective:
            raise UserError("--results needs --factors a,b,c, --response NAME and "
                            "--objective larger|smaller|nominal")
        factors = [f.strip() for f in args.factors.split(",") if f.strip()]
        results = read_results_csv(Path(args.results), factors, args.response)
        analysis = analyze(results, factors, args.response, args.objective, pool=pool, impute=args.impute,
                           interactions=interactions)
    else:
        if not args.study:
            raise UserError("give a study file, or --results FILE.csv --factors ... --response ... --objective ...")
        if args.factors:
            raise UserError("--factors is for --results tables; a study names its own factors")
        engine = _engine(args)
        analysis, results = study_analysis(engine, response=args.response, objective=args.objective,
                                           pool=pool, impute=args.impute, interactions=interactions)
        labels = {f.name: f.display for f in engine.study.design.factors}
    figures = write_figures(analysis, results, plots, labels) if plots else []
    if args.format == "json":
        out = analysis.to_dict()
        if figures:
            out["figures"] = [str(p) for p in figures]
        _warn(analysis.warnings)  # stdout stays pure JSON; people still see the warnings
        print(json.dumps(out, indent=2))
    else:
        print(analysis.to_text())
        if figures:
            print(f"\nFigures ({len(figures)} files) in {args.plots}: "
                  + ", ".join(sorted({p.stem for p in figures})) + " (.pdf, .svg, .png)")
    return 0


# -- confirm --------------------------------------------------------------------------
def optimum_run(study, optimum: dict[str, str]):
    """The :class:`design.Run` of the predicted optimum (run number ``CONFIRMATION_RUN``).

    Codes are the level indices in the study file, so it trains exactly like an array
    run with those levels, whether or not the combination is a row of the array.
    """
    from doe_sr.study.design import Run

    codes = {f: study.factor(f).level_labels.index(optimum[f]) for f in study.factor_names}
    values = {f: study.factor(f).levels[codes[f]] for f in study.factor_names}
    return Run(run=CONFIRMATION_RUN, factors=values, codes=codes)


def finished_confirmations(engine, optimum: dict[str, str], metric: str) -> list[dict[str, Any]]:
    """Finished confirmation runs of this study at this optimum, oldest first."""
    from doe_sr.tracking.store import REPLICATE

    out = []
    for r in engine.tracker.child_runs(engine.study.name, role="confirmation"):
        if r.info.status != "FINISHED" or metric not in r.data.metrics:
            continue
        if any(r.data.params.get(f) != level for f, level in optimum.items()):
            continue  # confirmed an earlier optimum (the array results changed since)
        out.append({"run_id": r.info.run_id, "replicate": int(r.data.tags.get(REPLICATE, 0)),
                    "value": float(r.data.metrics[metric])})
    return out


def _array_row_of(engine, run) -> int | None:
    for r in engine.runs.values():
        if r.codes == run.codes:
            return r.run
    return None


def cmd_confirm(args: argparse.Namespace) -> int:
    from doe_sr.analysis.taguchi import judge_confirmation

    if args.replicates < 1:
        raise UserError("--replicates must be at least 1")
    engine = _engine(args)
    study = engine.study
    metric = study.response.metric
    pool = parse_pool(args.pool)
    analysis, _ = study_analysis(engine, pool=pool, impute=args.impute)
    p = analysis.predicted
    if p.get("confirmation_ci95") is None and p.get("sn_ci95") is None:
        raise UserError(
            f"study {study.name!r} has no error estimate (a saturated {study.design.array} without "
            "replicates or pooling), so no confirmation interval exists; use --pool auto or pool named factors")
    run = optimum_run(study, analysis.optimum)
    in_array = _array_row_of(engine, run)
    done = finished_confirmations(engine, analysis.optimum, metric)
    console = sys.stderr if args.format == "json" else sys.stdout
    where = f"row {in_array} of the array" if in_array else f"not a row of the {study.design.array} array"
    print(f"{study.name}: confirming the predicted optimum "
          + ", ".join(f"{f}={lvl}" for f, lvl in analysis.optimum.items())
          + f" ({where}; levels by S/N" + (f", pooled: {', '.join(analysis.pooled)}" if analysis.pooled else "")
          + ")", file=console)
    if done:
        print(f"reusing {min(len(done), args.replicates)} finished confirmation run(s)", file=console)
    done = done[:args.replicates]
    failed = None
    for k in range(len(done), args.replicates):
        # Fresh seeds, after the array's replicates: a confirmation must be a new
        # experiment, not a re-run of seed 0 (which would repeat an array run exactly
        # when the optimum is a row of the array).
        replicate = study.design.replicates + k
        try:
            value = engine.execute(run, replicate, role="confirmation", run_name=f"confirmation rep {k + 1}",
                                   verbose=0 if args.format == "json" else ("auto" if sys.stdout.isatty() else 2))
        except RunFailed as exc:
            failed = str(exc)
            print(f"doe-sr: confirmation rep {k + 1} failed: {exc}", file=sys.stderr)
            break
        done = finished_confirmations(engine, analysis.optimum, metric)[:args.replicates]
        print(f"confirmation rep {k + 1}: {metric} = {value:.6g}", file=console)
    if failed is not None or not done:
        return 1
    verdict = judge_confirmation(analysis, [d["value"] for d in done])
    record = {
        "study": study.name, "response": metric, "objective": analysis.objective,
        "optimum": analysis.optimum, "array_row": in_array, "run": CONFIRMATION_RUN,
        "pooled": analysis.pooled, "runs": done, **verdict,
    }
    _log_verdict(engine, record)
    if not args.no_report:
        _update_report(engine, record, args)
    if args.format == "json":
        print(json.dumps(record, indent=2))
    else:
        print(_verdict_text(record))
    return 0


def _verdict_word(record: dict[str, Any]) -> str:
    if record["inside"] is None:
        return "no interval"
    return "confirmed" if record["inside"] else "not confirmed"


def _log_verdict(engine, record: dict[str, Any]) -> None:
    """Tags and metrics on the study's parent run, so the MLflow UI shows the verdict."""
    parent = engine.tracker.find_parent(engine.study.name)
    if parent is None:
        return
    engine.tracker.set_tags(parent, {
        VERDICT_TAG: _verdict_word(record),
        OPTIMUM_TAG: ", ".join(f"{f}={lvl}" for f, lvl in record["optimum"].items()),
        POOLED_TAG: ", ".join(record["pooled"]) or "none",
        RUNS_TAG: ", ".join(d["run_id"] for d in record["runs"]),
    })
    interval = record["interval"] or [None, None]
    sn_interval = record["sn_interval"] or [None, None]
    engine.tracker.log_metrics(parent, {
        "confirmation_r": record["r"],
        "confirmation_observed_mean": record["observed_mean"],
        "confirmation_predicted_mean": record["predicted_mean"],
        "confirmation_ci_low": interval[0], "confirmation_ci_high": interval[1],
        "confirmation_inside": None if record["inside"] is None else float(record["inside"]),
        "confirmation_observed_sn": record["observed_sn"],
        "confirmation_predicted_sn": record["predicted_sn"],
        "confirmation_sn_ci_low": sn_interval[0], "confirmation_sn_ci_high": sn_interval[1],
        "confirmation_sn_inside": None if record["sn_inside"] is None else float(record["sn_inside"]),
    })


def _update_report(engine, record: dict[str, Any], args: argparse.Namespace) -> None:
    """Write confirmation.json/.md beside the study's report and refresh summary.md."""
    from doe_sr.report.writer import REPORTS, write_confirmation, write_report

    folder = (Path(args.out) if args.out else REPORTS) / engine.study.name
    write_confirmation(folder, record)
    parent = engine.tracker.find_parent(engine.study.name)
    baseline = engine.tracker.client.get_run(parent).data.metrics if parent else {}
    write_report(engine.study, array_results(engine), baseline=baseline, folder=folder,
                 pool=parse_pool(args.pool), impute=args.impute, design=design_frame(engine))


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.6g}"


def _verdict_text(record: dict[str, Any]) -> str:
    def interval(pair):
        return "n/a" if pair is None else f"[{pair[0]:.6g}, {pair[1]:.6g}]"

    def side(inside):
        return "" if inside is None else (" -> inside" if inside else " -> OUTSIDE")

    values = ", ".join(f"{d['value']:.6g}" for d in record["runs"])
    return "\n".join([
        f"confirmation runs (r = {record['r']}): {record['response']} = {values}",
        f"mean: observed {_fmt(record['observed_mean'])}, predicted {_fmt(record['predicted_mean'])}, "
        f"95% confirmation interval {interval(record['interval'])}{side(record['inside'])}",
        f"S/N:  observed {_fmt(record['observed_sn'])} dB, predicted {_fmt(record['predicted_sn'])} dB, "
        f"95% interval {interval(record['sn_interval'])}{side(record['sn_inside'])}",
        f"verdict: {record['message']}",
    ])


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
    sp.add_argument("--objective", choices=("larger", "smaller", "nominal"),
                    help="larger/smaller/nominal-the-better (required with --results)")
    sp.add_argument("--pool", help="factors to pool into the error, comma-separated, 'auto' (Taguchi's "
                                   "pooling-up rule) or 'none' (default)")
    sp.add_argument("--interactions", help="two-factor interactions to put in the ANOVA, e.g. a:b,c:d")
    sp.add_argument("--impute", choices=("worst",), help="replace lost runs by the worst response (warned)")
    sp.add_argument("--plots", metavar="DIR", help="also write main-effects, interaction and contribution "
                                                   "figures (PDF, SVG, PNG) to DIR")
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
