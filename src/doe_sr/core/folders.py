"""Create an output folder, or say in one line why it cannot exist.

Why one function: ``-o /proc/x``, ``--out /etc/passwd`` or a path through a file is the
user's to fix, not a traceback after minutes of work; the reports, the figures, the
upscaled images and the DIV2K download all refuse such a folder the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from doe_sr.core.errors import UserError

__all__ = ["make_output_folder"]


def make_output_folder(path: Path | str, what: str, *, holds: str = "a folder",
                       fix: str = "give a folder you can write to", writable: bool = False) -> Path:
    """Create ``path`` (and its parents) and return it, or raise a one-line `UserError`.

    ``what`` names the folder in the message: an option (``"-o"``, ``"--plots"``) is
    written ``-o: /x is a file ...`` / ``-o: cannot create the folder /x ...``; a noun
    (``"reports folder"``) is written ``reports folder /x is a file ...`` /
    ``cannot create the reports folder /x ...``. ``holds`` completes "give ..." when the
    path is a file; ``fix`` is the advice when it cannot be created. ``writable`` also
    refuses an existing folder the user cannot write to (``os.access``), for callers that
    write only after a long computation.
    """
    path = Path(path)
    option = what.startswith("-")
    name = f"{what}:" if option else what
    if path.exists() and not path.is_dir():
        raise UserError(f"{name} {path} is a file, not a folder; give {holds}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = f"{what}: cannot create the folder" if option else f"cannot create the {what}"
        raise UserError(f"{where} {path} ({exc.strerror or exc}); {fix}") from None
    if writable and not os.access(path, os.W_OK):
        where = f"{what}: the folder" if option else f"the {what}"
        raise UserError(f"{where} {path} is not writable; {fix}")
    return path
