"""Argument types that refuse bad command-line values while parsing, in one line.

Why at parse time: ``evaluate`` and ``upscale`` import TensorFlow (seconds) before their
command runs, and ``data download`` may start a multi-gigabyte download; a zero scale,
an output "folder" that is a file or a URL without a host should be refused at once.
The checks here only look: nothing is created (a folder's writability is probed with a
temporary folder that is removed again).

`one_line_errors` makes a sub-parser report such refusals (and missing arguments) as one
line with exit code 2, like every other bad input, instead of argparse's usage block.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["base_url", "existing_folder", "new_or_existing_folder", "one_line_errors", "positive_int"]


def positive_int(text: str) -> int:
    """A whole number >= 1 (a scale, a tile size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be a positive whole number (e.g. 4)")
    return value


def existing_folder(text: str) -> str:
    """A folder that exists (the images to read)."""
    path = Path(text).expanduser()
    if path.is_dir():
        return text
    if path.exists():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder; give the folder that holds the images")
    raise argparse.ArgumentTypeError(f"folder {text} does not exist")


def new_or_existing_folder(text: str) -> str:
    """A folder we can write into: an existing folder, or one that can be created.

    The nearest existing ancestor must be a folder in which a folder can really be made
    (``os.access`` says yes to root even on ``/proc``, so we try, and remove the try).
    """
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder; give a folder path")
    anchor = path if path.exists() else next((p for p in path.absolute().parents if p.exists()), Path("/"))
    if not anchor.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {text}: {anchor} is a file, not a folder")
    try:
        Path(tempfile.mkdtemp(prefix=".doe-sr-probe-", dir=anchor)).rmdir()
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"cannot write in {anchor} ({exc.strerror or exc}); choose a writable folder") from None
    return text


def base_url(text: str) -> str:
    """An http(s) URL with a host (or a file: URL of a local mirror)."""
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.hostname:
        return text
    if parts.scheme == "file" and parts.path:
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not an http(s):// URL with a host (nor a file:// mirror)")


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` report a bad argument as one line on stderr with exit code 2."""

    def error(message: str):  # noqa: ANN202 - never returns
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]
    return parser
