"""How the numbers of an analysis are printed: one number, one interval.

Why one module: the terminal text of ``doe-sr analyze`` and ``doe-sr confirm``, and the
Markdown of the report, each had their own copy of these two helpers, which had
drifted in what they print for a missing value. Here, below the report and the CLI,
every caller passes its own format spec and its own word for "missing" explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["interval", "number"]


def number(value: object, spec: str = ".6g", missing: str = "n/a") -> str:
    """``value`` formatted with ``spec``; ``missing`` for None, NaN and infinity (a lost
    run, an undefined F, an interval without an error estimate)."""
    if value is None:
        return missing
    try:
        if not math.isfinite(value):  # type: ignore[arg-type]
            return missing
    except TypeError:
        return str(value)
    return format(value, spec)


def interval(pair: Sequence[float] | None, spec: str = ".6g") -> str:
    """``[low, high]`` with ``spec``, or ``n/a`` when there is no interval."""
    return "n/a" if pair is None else f"[{pair[0]:{spec}}, {pair[1]:{spec}}]"
