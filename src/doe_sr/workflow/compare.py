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
    from doe_sr.sr.compare import Upscaler

__all__ = ["Comparison", "compare_study", "make_upscaler", "write_comparison"]


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

    def to_dict(self) -> dict:
        """The JSON of ``doe-sr compare --format json``."""
        return {"study": self.study, "split": "test", "results": self.results, "notes": self.notes}


def compare_study(engine, *, esrgan_weights: str | None = None, tile: int = 128,
                  out: str | Path | None = None) -> Comparison:
    """Evaluate the best array run's SR-NET, Real-ESRGAN, ESRGAN (with ``esrgan_weights``) and
    bicubic on the test split; write tables and figures to ``out``/<study> (default
    reports/<study>), rebuild its ``index.html``, and log the means, tables, figures and
    the page to the study's parent run."""
    from doe_sr.report.writer import REPORTS, best_run
    from doe_sr.sr.compare import evaluate_pairs, load_srnet
    from doe_sr.workflow.session import array_results

    study = engine.study
    best = best_run(study, array_results(engine))
    scale = study.data.scale
    upscalers, notes = [load_srnet(engine.tracker.model_file(str(best["run_id"])), scale=scale,
                                   name=f"SR-NET (run {int(best['run'])})")], []
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
    _log_to_parent(engine, results, files)
    from doe_sr.workflow.publish import publish_comparison

    files.append(publish_comparison(engine, engine.ensure_parent(), folder, files))
    return Comparison(study=study.name, results=results, notes=notes, folder=folder, files=files)


def _log_to_parent(engine, results: list[dict], files: list[Path]) -> None:
    """Each model's mean PSNR-Y/SSIM-Y/seconds as ``compare_<model>_*`` metrics of the parent
    run, and the tables and the chart as its ``comparison/`` artifacts."""
    parent = engine.ensure_parent()
    for r in results:
        key = "".join(ch if ch.isalnum() else "_" for ch in r["model"].lower()).strip("_")
        engine.tracker.log_metrics(parent, {f"compare_{key}_psnr_y": r["mean"]["psnr_y"],
                                            f"compare_{key}_ssim_y": r["mean"]["ssim_y"],
                                            f"compare_{key}_seconds": r["mean"]["seconds"]})
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
