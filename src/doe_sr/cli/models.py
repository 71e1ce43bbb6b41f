"""``doe-sr evaluate | compare | upscale``: models on benchmarks, on a study's test split, on photos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from doe_sr.cli.argtypes import existing_folder, new_or_existing_folder, one_line_errors, positive_int


def _print_eval(result: dict, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{result['model']} x{result['scale']}")
    for col in ("image", "PSNR-Y (dB)", "SSIM-Y", "PSNR-RGB (dB)", "seconds"):
        t.add_column(col, justify="right" if col != "image" else "left")
    for r in [*result["images"], {"name": "mean", **result["mean"]}]:
        t.add_row(r["name"], f"{r['psnr_y']:.2f}", f"{r['ssim_y']:.4f}", f"{r['psnr_rgb']:.2f}", f"{r['seconds']:.2f}")
    Console(highlight=False).print(t)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from doe_sr.sr.compare import evaluate_folder
    from doe_sr.workflow.compare import make_upscaler

    upscaler = make_upscaler(args.model, scale=args.scale, tracking_uri=args.tracking_uri, weights=args.weights,
                             tile=args.tile)
    result = evaluate_folder(upscaler, Path(args.hr), scale=args.scale, lr_dir=Path(args.lr) if args.lr else None)
    _print_eval(result, args.format)
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    from doe_sr.sr.compare import upscale_files
    from doe_sr.workflow.compare import make_upscaler

    upscaler = make_upscaler(args.model, scale=args.scale, tracking_uri=args.tracking_uri, weights=args.weights,
                             tile=args.tile)
    for path in upscale_files(upscaler, [Path(p) for p in args.images], Path(args.output)):
        print(path)
    return 0


def _print_paired(paired) -> None:
    """The paired tests of PSNR-Y (the headline metric; SSIM-Y is in paired_tests.md)."""
    rows = [t for t in paired if t.metric == "psnr_y"]
    if not rows:
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from doe_sr.analysis.formatting import number
    from doe_sr.analysis.paired import SIGNIFICANCE_RULE

    t = Table(title="Paired differences of PSNR-Y (dB), a − b, on the same test images", caption=SIGNIFICANCE_RULE)
    for col in ("comparison (a − b)", "n", "mean", "bootstrap 95% CI", "t p", "Wilcoxon p", "significant"):
        t.add_column(col, justify="left" if col.startswith("comparison") else "right")
    for p in rows:
        sig = {True: "[bold]yes[/bold]", False: "no", None: f"not testable (n={p.n})"}[p.significant]
        t.add_row(escape(p.label), str(p.n), f"{p.mean_diff:+.3f}", escape(f"[{p.ci95[0]:+.3f}, {p.ci95[1]:+.3f}]"),
                  number(p.t_p, ".3g"), number(p.wilcoxon_p, ".3g"), sig)
    Console(highlight=False).print(t)


def cmd_compare(args: argparse.Namespace) -> int:
    from doe_sr.cli.main import _engine
    from doe_sr.workflow.compare import compare_study

    comparison = compare_study(_engine(args), esrgan_weights=args.esrgan_weights, tile=args.tile, out=args.out)
    if args.format == "json":
        print(json.dumps(comparison.to_dict(), indent=2))
        return 0
    for r in comparison.results:
        _print_eval(r, "table")
    _print_paired(comparison.paired)
    for n in comparison.notes:
        print(f"note: {n}")
    print(f"comparison: {comparison.folder}/comparison_mean.md")
    if comparison.paired:
        print(f"paired tests: {comparison.folder}/paired_tests.md")
    return 0


def register(add, add_study_options) -> None:
    def model_options(sp):
        sp.add_argument("--model", required=True,
                        help="bicubic | esrgan | realesrgan | an MLflow run id of an array run | a .keras file")
        sp.add_argument("--weights", help="with --model esrgan: a .pth file (either key naming) or 'auto' "
                                          "(download the official file into the cache)")
        one_line_errors(sp)
        sp.add_argument("--scale", type=positive_int, default=4)
        sp.add_argument("--tile", type=positive_int, default=128, help="LR tile size for large images (memory bound)")
        sp.add_argument("--tracking-uri", default="mlruns", help="MLflow store holding the run id (default mlruns)")

    sp = add("evaluate", cmd_evaluate, "PSNR/SSIM of a model on a benchmark folder, by the SR literature's protocol.",
             "doe-sr evaluate --model bicubic --hr ../shared/data/benchmarks/Set5/HR --scale 4 --format json")
    model_options(sp)
    sp.add_argument("--hr", required=True, type=existing_folder, help="folder of HR images")
    sp.add_argument("--lr", type=existing_folder, help="folder of given LR images (default: MATLAB bicubic from HR)")
    sp.add_argument("--format", choices=("table", "json"), default="table")

    sp = add("compare", cmd_compare, "Best SR-NET vs Real-ESRGAN/ESRGAN vs bicubic on the study's test split.",
             "doe-sr compare studies/quickstart.yaml")
    sp.add_argument("study")
    add_study_options(sp)
    sp.add_argument("--esrgan-weights", help="also evaluate the original ESRGAN: a .pth file or 'auto'")
    sp.add_argument("--tile", type=positive_int, default=128)
    sp.add_argument("--out", help="reports folder (default: reports)")
    sp.add_argument("--format", choices=("table", "json"), default="table")

    sp = add("upscale", cmd_upscale, "Super-resolve photos (any size; PNG/JPEG in, PNG out).",
             "doe-sr upscale photo.jpg --model realesrgan -o out/")
    sp.add_argument("images", nargs="+")
    model_options(sp)
    sp.add_argument("-o", "--output", required=True, type=new_or_existing_folder, help="output folder")
