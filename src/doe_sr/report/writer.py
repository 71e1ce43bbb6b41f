"""Write ``reports/<study>/``: figures and tables ready for a paper, and ``summary.md``.

Every table is written three ways: CSV (for re-analysis), Markdown (for the README of a
repository or a lab notebook) and LaTeX with booktabs rules (for the paper). Figures
come from :mod:`doe_sr.report.plots` as PDF, SVG and 300-dpi PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from doe_sr.analysis.formatting import number
from doe_sr.core.folders import make_output_folder
from doe_sr.core.objectives import BEST_RUN_METRICS, RESPONSE_METRICS, baseline_metric
from doe_sr.study.schema import Study

if TYPE_CHECKING:
    from doe_sr.analysis.confirmation import Confirmation

REPORTS = Path("reports")


def make_folder(folder: Path, what: str = "reports folder") -> Path:
    """Create ``folder`` (and its parents), or say in one line why it cannot exist."""
    return make_output_folder(folder, what, holds="a folder (--out DIR)",
                              fix="give a folder you can write to (--out DIR)")


def _keep_index(df: pd.DataFrame, index: bool) -> bool:
    """A default 0..n-1 index carries no information: leave it out of paper tables."""
    return index and not isinstance(df.index, pd.RangeIndex)


def _cell(v: object, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` decimals (empty when missing), the rest as written."""
    if isinstance(v, (float, np.floating)):
        return number(float(v), f".{digits}f", missing="")
    return "" if v is None else str(v)


def to_markdown(df: pd.DataFrame, *, index: bool = True, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table (no dependency on ``tabulate``)."""
    frame = df.reset_index() if _keep_index(df, index) else df
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, digits) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return text


def to_latex(df: pd.DataFrame, *, caption: str, label: str, index: bool = True, digits: int = 3) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    frame = df.reset_index() if _keep_index(df, index) else df
    cols = "l" + "r" * (len(frame.columns) - 1)
    out = ["\\begin{table}[t]", "\\centering", f"\\caption{{{_latex_escape(caption)}}}",
           f"\\label{{{label}}}", f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
           " & ".join(_latex_escape(str(c)) for c in frame.columns) + " \\\\", "\\midrule"]
    for row in frame.itertuples(index=False):
        out.append(" & ".join(_latex_escape(_cell(v, digits)) for v in row) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(out) + "\n"


def write_table(df: pd.DataFrame, folder: Path, name: str, *, caption: str, index: bool = True) -> list[Path]:
    """``name``.csv, .md and .tex in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.csv", folder / f"{name}.md", folder / f"{name}.tex"]
    df.to_csv(paths[0], index=_keep_index(df, index))
    paths[1].write_text(to_markdown(df, index=index))
    paths[2].write_text(to_latex(df, caption=caption, label=f"tab:{name}", index=index))
    return paths


@dataclass
class StudyReport:
    folder: Path
    files: list[Path]
    best: dict[str, object]


def runs_table(study: Study, results: pd.DataFrame) -> pd.DataFrame:
    """One row per finished child run: run, replicate, factor levels and the main metrics."""
    cols = ["run", "replicate", *study.factor_names]
    metrics = [m for m in RESPONSE_METRICS if m in results]
    return results[cols + metrics].sort_values(["run", "replicate"]).reset_index(drop=True)


def best_run(study: Study, results: pd.DataFrame) -> pd.Series:
    """The array run with the best mean response over its replicates."""
    metric = study.response.metric
    means = results.groupby("run")[metric].mean()
    if study.response.objective == "smaller":
        run = int(means.idxmin())
    elif study.response.objective == "nominal":
        run = int(results.groupby("run")[metric].std().fillna(np.inf).idxmin())
    else:
        run = int(means.idxmax())
    rows = results[results["run"] == run]
    return rows.loc[rows[metric].idxmax() if study.response.objective != "smaller" else rows[metric].idxmin()]


def write_confirmation(folder: Path, confirmation: Confirmation) -> list[Path]:
    """``confirmation.json`` (the verdict of ``doe-sr confirm``, for tools) and
    ``confirmation.md``; ``write_report`` folds the JSON into summary.md."""
    import json

    make_folder(folder)
    paths = [folder / "confirmation.json", folder / "confirmation.md"]
    paths[0].write_text(json.dumps(confirmation.to_dict(), indent=2))
    paths[1].write_text("# Confirmation run\n\n" + confirmation.to_markdown())
    return paths


def write_report(study: Study, results: pd.DataFrame, *, baseline: dict[str, float],
                 folder: Path | None = None, pool=None, impute: str | None = None,
                 design: pd.DataFrame | None = None) -> StudyReport:
    """Analyse the finished runs and write figures, tables and summary.md."""
    from doe_sr.report import plots
    from doe_sr.analysis.taguchi import analyze

    folder = make_folder(folder or REPORTS / study.name)
    factors = study.factor_names
    levels = {f.name: f.level_labels for f in study.design.factors}
    labels = {f.name: f.display for f in study.design.factors}
    metric = study.response.metric
    analysis = analyze(results, factors, metric, study.response.objective, levels=levels, pool=pool,
                       design=design, impute=impute)
    files: list[Path] = []
    files += plots.main_effects(analysis, folder / "main_effects", labels=labels)
    files += plots.contributions(analysis, folder / "anova_contribution")
    if len(factors) >= 2:
        files += plots.interactions(results, factors, metric, folder / "interactions", levels=levels)
    captions = {
        "sn_response": f"Response table of S/N ratios (dB) of {metric}, {study.response.objective}-the-better",
        "mean_response": f"Response table of means of {metric}",
        "anova": f"ANOVA of the S/N ratios of {metric}",
        "anova_raw": f"ANOVA of the raw {metric} values",
        "optimum": "Optimal levels and additive-model prediction",
    }
    for name, table in analysis.tables().items():
        files += write_table(table, folder, name, caption=captions.get(name, name))
    runs = runs_table(study, results)
    files += write_table(runs, folder, "runs", caption=f"Runs of the {study.design.array} array", index=False)

    best = best_run(study, results)
    best_info = {"run": int(best["run"]), "replicate": int(best["replicate"]), "run_id": best.get("run_id", ""),
                 **{f: best[f] for f in factors},
                 **{m: float(best[m]) for m in BEST_RUN_METRICS if m in best}}
    comparison = pd.DataFrame(
        [
            {"method": f"SR-NET (run {best_info['run']})", "val PSNR-Y (dB)": best_info.get("val_psnr"),
             "test PSNR-Y (dB)": best_info.get("test_psnr"), "test SSIM-Y": best_info.get("test_ssim")},
            {"method": "bicubic", "val PSNR-Y (dB)": baseline.get(baseline_metric("val_psnr")),
             "test PSNR-Y (dB)": baseline.get(baseline_metric("test_psnr")),
             "test SSIM-Y": baseline.get(baseline_metric("test_ssim"))},
        ]
    )
    files += write_table(comparison, folder, "best_vs_bicubic",
                         caption="Best array run vs bicubic on the study's test images (Y channel, border shaved)",
                         index=False)
    summary = folder / "summary.md"
    text = _summary_md(study, analysis, runs, comparison, best_info)
    confirmation = folder / "confirmation.json"
    if confirmation.is_file():  # written by `doe-sr confirm`
        import json

        from doe_sr.analysis.confirmation import Confirmation

        record = Confirmation.from_dict(json.loads(confirmation.read_text()))
        text += "\n## Confirmation run\n\n" + record.to_markdown(analysis.optimum)
    summary.write_text(text)
    files.append(summary)
    return StudyReport(folder=folder, files=files, best=best_info)


def _summary_md(study: Study, analysis, runs: pd.DataFrame, comparison: pd.DataFrame, best: dict) -> str:
    metric = study.response.metric
    factors = ", ".join(f"{f.display} ({', '.join(f.level_labels)})" for f in study.design.factors)
    parts = [
        f"# Study `{study.name}`\n",
        f"{study.description.strip()}\n" if study.description else "",
        f"- Array: {study.design.array}, {len(runs)} finished runs "
        f"({study.design.replicates} replicate(s) per row)",
        f"- Factors: {factors}",
        f"- Response: {metric}, {study.response.objective}-the-better S/N ratio",
        f"- Data: {study.data.source}, x{study.data.scale}, split {':'.join(map(str, study.data.split))} "
        f"by image; PSNR/SSIM on the Y channel (ITU-R BT.601) with {study.data.scale} border pixels shaved\n",
        "## Best run vs bicubic (test images)\n",
        to_markdown(comparison, index=False),
        "## Response table: S/N ratios (dB)\n",
        to_markdown(analysis.tables()["sn_response"]),
        "## Response table: means\n",
        to_markdown(analysis.tables()["mean_response"]),
        "## ANOVA (S/N)\n",
        to_markdown(analysis.tables()["anova"]),
        "## Optimum\n",
        to_markdown(analysis.tables()["optimum"]),
    ]
    if analysis.notes or analysis.warnings:
        parts.append("## Notes\n")
        parts += [f"- {n}" for n in [*analysis.warnings, *analysis.notes]]
        parts.append("")
    parts += ["## Runs\n", to_markdown(runs, index=False),
              "Figures: `main_effects.pdf` (means and S/N), `interactions.pdf`, `anova_contribution.pdf` "
              "(also .svg and 300-dpi .png).\n"]
    return "\n".join(parts)
