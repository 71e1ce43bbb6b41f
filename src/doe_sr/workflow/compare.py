"""Compare a study's best SR-NET with ESRGAN, Real-ESRGAN and bicubic on its test split.

Why a workflow: the comparison joins four parts that must not know each other: the
study's finished runs (tracking), the best run by the study's objective (report), the
networks and the evaluation protocol (sr), and the tables and figures (report). The CLI
(``doe-sr compare``, ``evaluate``, ``upscale``) only parses, calls and prints; a notebook
calls the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - importing sr.compare loads numpy and the image readers
    from doe_sr.analysis.paired import PairedTest
    from doe_sr.sr.compare import Upscaler

__all__ = ["Comparison", "compare_study", "make_upscaler", "write_comparison", "write_paired"]


def make_upscaler(spec: str, *, scale: int = 4, tracking_uri: str = "mlruns", weights: str | None = None,
                  tile: int = 128) -> Upscaler:
    """An upscaler by name (`doe_sr.sr.compare.make_upscaler`), MLflow run ids read from ``tracking_uri``."""
    from doe_sr.sr.compare import make_upscaler as build
    from doe_sr.tracking.models import run_model

    return build(spec, scale=scale, weights=weights, tile=tile,
                 run_model=lambda run_id: run_model(run_id, tracking_uri))


@dataclass
class Comparison:
    """What ``doe-sr compare`` found: one evaluation per model, and why some were left out."""

    study: str
    results: list[dict]
    notes: list[str] = field(default_factory=list)
    folder: Path = Path(".")
    files: list[Path] = field(default_factory=list)
    paired: list[PairedTest] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON of ``doe-sr compare --format json``: ``study``, ``split``, ``results``,
        ``notes``, and (added with the paired tests) ``paired`` (one `PairedTest.to_dict`
        per comparison and metric) and ``paired_rule`` (how ``significant`` is decided)."""
        from doe_sr.analysis.paired import SIGNIFICANCE_RULE

        return {"study": self.study, "split": "test", "results": self.results, "notes": self.notes,
                "paired": [t.to_dict() for t in self.paired], "paired_rule": SIGNIFICANCE_RULE}


def compare_study(engine, *, esrgan_weights: str | None = None, tile: int = 128,
                  out: str | Path | None = None) -> Comparison:
    """Evaluate the best array run's SR-NET, Real-ESRGAN, ESRGAN (with ``esrgan_weights``) and
    bicubic on the test split; write tables and figures to ``out``/<study> (default
    reports/<study>), rebuild its ``index.html``, and log the means, tables, figures and
    the page to the study's parent run."""
    from doe_sr.report.writer import REPORTS, best_run
    from doe_sr.sr.compare import evaluate_pairs, load_trained, model_label
    from doe_sr.workflow.session import array_results

    study = engine.study
    best = best_run(study, array_results(engine))
    scale = study.data.scale
    params = engine.tracker.run(str(best["run_id"])).params
    upscalers, notes = [load_trained(engine.tracker.model_file(str(best["run_id"])), scale=scale, params=params,
                                     name=f"{model_label(params)} (run {int(best['run'])})")], []
    if scale == 4:
        upscalers.append(make_upscaler("realesrgan", tile=tile))
        if esrgan_weights:
            upscalers.append(make_upscaler("esrgan", weights=esrgan_weights, tile=tile))
        else:
            notes.append("ESRGAN (original weights) skipped: pass --esrgan-weights PATH|auto")
    else:
        notes.append(f"ESRGAN-family models are x4 only; the study is x{scale}")
    upscalers.append(make_upscaler("bicubic", scale=scale))
    pairs = engine.splits().test
    results = [evaluate_pairs(u, pairs, scale=scale) for u in upscalers]
    folder = Path(out) / study.name if out else REPORTS / study.name
    files = write_comparison(results, pairs, upscalers, folder, scale=scale)
    from doe_sr.analysis.paired import compare_models

    paired = compare_models(results, network=upscalers[0].name, baseline="bicubic")
    files += write_paired(paired, folder)
    _log_to_parent(engine, results, files, paired)
    from doe_sr.workflow.publish import publish_comparison

    files.append(publish_comparison(engine, engine.ensure_parent(), folder, files))
    return Comparison(study=study.name, results=results, notes=notes, folder=folder, files=files, paired=paired)


def _model_key(model: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in model.lower()).strip("_")


def paired_metrics(paired: list[PairedTest]) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) of the paired tests for the parent run.

    Metrics ``paired_<a>_vs_<b>_<metric>_mean_diff|ci95_low|ci95_high|p_t|p_wilcoxon|n``
    and ``..._significant`` (1 or 0; absent when not testable), a p-value only where its
    test is defined; tags ``doe_sr.paired.<a>_vs_<b>.<metric>`` with the verdict
    ("yes: a better", "no: no significant difference", "not testable with 2 images").
    """
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for t in paired:
        key = f"{_model_key(t.a)}_vs_{_model_key(t.b)}"
        stem = f"paired_{key}_{t.metric}"
        metrics.update({f"{stem}_mean_diff": t.mean_diff, f"{stem}_ci95_low": t.ci95[0],
                        f"{stem}_ci95_high": t.ci95[1], f"{stem}_n": float(t.n)})
        if t.t_p is not None:
            metrics[f"{stem}_p_t"] = t.t_p
        if t.wilcoxon_p is not None:
            metrics[f"{stem}_p_wilcoxon"] = t.wilcoxon_p
        if t.significant is not None:
            metrics[f"{stem}_significant"] = float(t.significant)
        prefix = {True: "yes: ", False: "no: ", None: ""}[t.significant]
        tags[f"doe_sr.paired.{key}.{t.metric}"] = prefix + t.verdict
    return metrics, tags


def _log_to_parent(engine, results: list[dict], files: list[Path], paired: list[PairedTest] = ()) -> None:
    """Each model's mean PSNR-Y/SSIM-Y/seconds as ``compare_<model>_*`` metrics of the parent
    run, the paired tests as ``paired_*`` metrics and ``doe_sr.paired.*`` tags
    (`paired_metrics`), and the tables and the chart as its ``comparison/`` artifacts."""
    parent = engine.ensure_parent()
    for r in results:
        key = _model_key(r["model"])
        engine.tracker.log_metrics(parent, {f"compare_{key}_psnr_y": r["mean"]["psnr_y"],
                                            f"compare_{key}_ssim_y": r["mean"]["ssim_y"],
                                            f"compare_{key}_seconds": r["mean"]["seconds"]})
    if paired:
        metrics, tags = paired_metrics(list(paired))
        engine.tracker.log_metrics(parent, metrics)
        engine.tracker.set_tags(parent, tags)
    for path in files:
        if path.suffix in (".csv", ".md", ".pdf"):
            engine.tracker.log_artifact(parent, path, "comparison")


def write_comparison(results: list[dict], pairs, upscalers, folder: Path, *, scale: int) -> list[Path]:
    """Tables (per image and mean), the bar chart and a crop of the first test image per model."""
    import numpy as np

    from doe_sr.report import plots
    from doe_sr.report.writer import write_table
    from doe_sr.sr.compare import comparison_tables
    from doe_sr.sr.metrics import to_uint8

    long, mean = comparison_tables(results)
    files = write_table(long, folder, "comparison_per_image", caption="Per-image PSNR-Y/SSIM-Y on the test split",
                        index=False)
    files += write_table(mean, folder, "comparison_mean",
                         caption=f"Mean PSNR-Y/SSIM-Y (x{scale}, {scale}-pixel border shaved) and time per image",
                         index=False)
    files += plots.comparison_bars(mean, folder / "comparison")
    pair = pairs[0]
    h, w = pair.hr.shape[:2]
    size = min(96, h, w)
    top, left = (h - size) // 2, (w - size) // 2
    crops = {}
    for u in upscalers:
        sr = to_uint8(u(pair.lr.astype(np.float32) / 255.0))
        crops[u.name] = sr[top:top + size, left:left + size]
    files += plots.comparison_crops(pair.hr[top:top + size, left:left + size], crops, folder / "comparison_crops",
                                    title=pair.name)
    return files


def _shown(tests):
    """The tests table as the Markdown and LaTeX show it: p-values to 3 significant digits
    (a fixed 3 decimals would print 2e-6 as 0.000), differences to 4 decimals, a
    significant comparison in bold (Markdown only)."""
    from doe_sr.analysis.formatting import number

    shown = tests.copy()
    for col in ("t p", "Wilcoxon p"):
        shown[col] = [number(v, ".3g", missing="n/a") for v in shown[col]]
    for col in ("mean diff", "CI95 low", "CI95 high"):
        shown[col] = [number(v, ".4f", missing="n/a") for v in shown[col]]
    return shown


def write_paired(paired: list[PairedTest], folder: Path) -> list[Path]:
    """``paired_tests.*`` (one row per comparison and metric) and ``per_image_differences.*``
    (one row per comparison, metric and image) as CSV, Markdown and LaTeX, and the figure
    ``paired_differences.*`` of the PSNR-Y differences.

    The CSV keeps full-precision numbers for re-analysis. In the Markdown of the tests a
    significant comparison is in bold, and the rule and the notes follow the table, so
    the page says why a pair is "not testable".
    """
    from doe_sr.analysis.paired import SIGNIFICANCE_RULE, differences_table, paired_tests_table
    from doe_sr.report.paired_plots import paired_differences
    from doe_sr.report.writer import to_latex, to_markdown, write_table

    if not paired:
        return []
    tests = paired_tests_table(paired)
    caption = ("Paired tests of the per-image differences on the test split (a − b): paired t, Wilcoxon "
               "signed-rank, percentile bootstrap 95% interval of the mean difference")
    files = write_table(tests, folder, "paired_tests", index=False, caption=caption)
    shown = _shown(tests)
    files[2].write_text(to_latex(shown, caption=caption, label="tab:paired_tests", index=False))
    bold = shown["significant"] == "yes"
    for col in ("comparison (a − b)", "significant"):
        shown[col] = [f"**{v}**" if b else v for v, b in zip(shown[col], bold)]
    where: dict[str, list[str]] = {}
    for t in paired:
        for note in t.notes:
            where.setdefault(note, []).append(f"{t.label}, {t.metric}")
    notes = [f"- {'all comparisons' if len(w) == len(paired) else '; '.join(w)}: {note}" for note, w in where.items()]
    md = to_markdown(shown, index=False) + f"\nBold: significant. Rule: {SIGNIFICANCE_RULE}.\n"
    if notes:
        md += "\nNotes:\n\n" + "\n".join(notes) + "\n"
    files[1].write_text(md)
    differences = differences_table(paired)
    files += write_table(differences, folder, "per_image_differences", index=False,
                         caption="Per-image differences on the test split (a − b)")
    files[-2].write_text(to_markdown(differences, index=False, digits=4))  # SSIM differences are ~1e-3
    psnr = [t for t in paired if t.metric == "psnr_y"]
    if psnr:
        files += paired_differences(psnr, folder / "paired_differences")
    return files
