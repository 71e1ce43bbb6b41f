"""CLI commands about data and the environment: ``doe-sr data download div2k`` and ``doe-sr doctor``.

A plugin of :mod:`doe_sr.cli` (``register(add, add_study_options)``); heavy imports stay
inside the commands so ``doe-sr --help`` answers instantly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from doe_sr.cli.argtypes import base_url, new_or_existing_folder, one_line_errors
from doe_sr.core.errors import UserError

SNIPPET = """\
Use it in a study (e.g. studies/srnet_l9.yaml):

data:
  source: {dest}
  scale: 4
  protocol: split       # the seed's: all {n} images, split 8:1:1; or div2k: official 800 train / 100 valid
  split: [8, 1, 1]
  cache: disk           # decoded pairs memory-mapped from $DOE_SR_CACHE/pairs (about 16 GB for DIV2K x4)

or keep `source: ${{DIV2K}}` and run: export DIV2K={dest}
"""


def cmd_download(args: argparse.Namespace) -> int:
    from doe_sr.sr.div2k import discover, download_div2k

    if args.dataset != "div2k":  # argparse's choices make this unreachable; kept for direct calls
        raise UserError(f"unknown data set {args.dataset!r}; the one available is div2k")
    dest = Path(args.dest).expanduser()
    parts = ["train_hr", "valid_hr"] if not args.valid_only else ["valid_hr"]
    download_div2k(dest, parts=parts, lr=args.lr, base_url=args.base_url, progress=not args.quiet)
    layout = discover(dest)
    if layout is None:
        raise UserError(f"{dest} has no DIV2K_train_HR/ or DIV2K_valid_HR/ after the download; "
                        "remove the folder and run the command again")
    n = len(layout.train_hr) + len(layout.valid_hr)
    print(f"DIV2K in {dest.resolve()}: {len(layout.train_hr)} train + {len(layout.valid_hr)} valid HR images, "
          f"official x4 LR for {len(layout.lr)}")
    print(SNIPPET.format(dest=dest.resolve(), n=n))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from doe_sr.workflow.doctor import diagnose

    study = None
    if args.study:
        from doe_sr.study.schema import load_study

        study = load_study(args.study)
    report = diagnose(study)
    if args.format == "json":
        print(json.dumps(report, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    for section, values in report.items():
        table = Table(title=section, show_header=False, title_justify="left")
        table.add_column("key", style="bold")
        table.add_column("value")
        for key, value in values.items():
            if isinstance(value, list):
                value = "; ".join(", ".join(f"{k} {v}" for k, v in item.items()) for item in value) or "none"
            table.add_row(key, str(value))
        console.print(table)
    return 0


def register(add, add_study_options) -> None:
    sp = add("data", lambda args: args.data_func(args), "Get data sets: `doe-sr data download div2k`.",
             "doe-sr data download div2k --dest ~/data/DIV2K --lr")
    sub = sp.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    dl = sub.add_parser("download", help="download and unpack a data set, verifying size and SHA-256",
                        description="Download DIV2K's official archives (HR train and valid; with --lr also the "
                                    "official bicubic x4 LR), check size and SHA-256, resume a partial download, "
                                    "unpack, and print the study snippet that uses them.",
                        epilog="example:\n  doe-sr data download div2k --dest ~/data/DIV2K --lr",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    one_line_errors(dl)
    dl.add_argument("dataset", choices=("div2k",))
    dl.add_argument("--dest", default="data/DIV2K", type=new_or_existing_folder,
                    help="folder to create or complete (default: data/DIV2K)")
    dl.add_argument("--lr", action="store_true", help="also the official bicubic x4 LR images (0.3 GB)")
    dl.add_argument("--valid-only", action="store_true", help="only the 100 validation images (0.45 GB)")
    dl.add_argument("--base-url", type=base_url, help="a mirror with the same file names (default: the official ETH Zurich site)")
    dl.add_argument("--quiet", action="store_true", help="no progress bars")
    dl.set_defaults(data_func=cmd_download)

    sp = add("doctor", cmd_doctor, "Print the environment a study would run in: devices, versions, precision, "
                                   "MLflow store, Optuna storage, data, ESRGAN weights.",
             "doe-sr doctor studies/srnet_l9.yaml")
    sp.add_argument("study", nargs="?", help="a study file (default: report the defaults)")
    sp.add_argument("--format", choices=("table", "json"), default="table")
