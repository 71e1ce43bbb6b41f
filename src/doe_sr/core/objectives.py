"""Objectives, S/N ratios and metric names: the vocabulary every layer shares.

Why a leaf module: the study file validates an objective and a response metric, the
analysis turns responses into S/N ratios, the report and the CLI print them, and the
engine logs the metrics. Spelled once here, a new objective or metric is one edit, and
no layer imports another just to learn a name (the analysis used to import ``sn_ratio``
back from the module that imported it). Standard library and numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from doe_sr.core.errors import UserError

__all__ = ["BASELINE_METRICS", "BEST_RUN_METRICS", "OBJECTIVES", "OBJECTIVE_TEXT", "RESPONSE_METRICS",
           "baseline_metric", "check_objective", "sn_ratio"]

#: Taguchi's three quality characteristics: larger-the-better, smaller-the-better, nominal-the-best.
OBJECTIVES = ("larger", "smaller", "nominal")

#: How each objective is printed, with its S/N formula (the header of ``doe-sr analyze``).
OBJECTIVE_TEXT = {
    "larger": "larger-the-better, S/N = -10 log10(mean(1/y^2))",
    "smaller": "smaller-the-better, S/N = -10 log10(mean(y^2))",
    "nominal": "nominal-the-best, S/N = 10 log10(mean^2 / s^2)",
}

#: Metrics every array run logs that a study may optimise (``response.metric``), and the
#: columns of a report's run table, in this order. Quality first, then cost: the network's
#: parameter count, its inference seconds per megapixel of output (test images) and its
#: peak training memory, so a study can weigh quality against cost (``objective: smaller``).
RESPONSE_METRICS = ("val_psnr", "val_ssim", "test_psnr", "test_ssim", "train_seconds", "params",
                    "inference_seconds_per_mp", "train_memory_mb")

#: The metrics of the best run that the report's summary and ``doe-sr report`` show.
BEST_RUN_METRICS = ("val_psnr", "test_psnr", "test_ssim")

#: The bicubic baseline the parent run of a study logs, one per split and image metric.
BASELINE_METRICS = ("bicubic_val_psnr", "bicubic_val_ssim", "bicubic_test_psnr", "bicubic_test_ssim")


def baseline_metric(metric: str) -> str:
    """The parent run's bicubic counterpart of a run metric (``test_psnr`` -> ``bicubic_test_psnr``)."""
    return f"bicubic_{metric}"


def check_objective(objective: str) -> str:
    """``objective`` if it is one of :data:`OBJECTIVES`; otherwise a one-line UserError."""
    if objective not in OBJECTIVES:
        raise UserError(f"objective '{objective}' is not one of {list(OBJECTIVES)}; pick one")
    return objective


def sn_ratio(values: Sequence[float], objective: str) -> float:
    """Taguchi's signal-to-noise ratio (dB) of one run's replicate responses.

    * ``"larger"`` (larger-the-better): ``-10 log10(mean(1 / y_i^2))``; y must be > 0.
    * ``"smaller"`` (smaller-the-better): ``-10 log10(mean(y_i^2))``.
    * ``"nominal"`` (nominal-the-best, type I): ``10 log10(ybar^2 / s^2)`` with the
      sample variance ``s^2`` (n - 1 divisor), so it needs at least 2 replicates.

    References: Ross, *Taguchi Techniques for Quality Engineering*, 2nd ed., ch. 9;
    Phadke, *Quality Engineering Using Robust Design*, ch. 5; Minitab's "Analyze
    Taguchi Design". Larger S/N is better for all three.
    """
    y = np.asarray(values, dtype=float).ravel()
    check_objective(objective)
    if y.size == 0:
        raise UserError("no responses given for the S/N ratio; each run needs at least one")
    if not np.all(np.isfinite(y)):
        raise UserError(f"responses {y.tolist()} are not all finite; remove or impute lost values")
    if objective == "larger":
        if np.any(y <= 0):
            raise UserError(
                f"larger-the-better S/N needs positive responses, got {y.tolist()}; "
                "treat a zero/negative result as a lost run (NaN) and use --impute worst"
            )
        return float(-10.0 * np.log10(np.mean(1.0 / y**2)))
    if objective == "smaller":
        mean_square = float(np.mean(y**2))
        if mean_square == 0.0:
            raise UserError("smaller-the-better S/N is infinite for all-zero responses")
        return float(-10.0 * np.log10(mean_square))
    if y.size < 2:
        raise UserError(
            "nominal-the-best S/N needs at least 2 replicates per run (it uses their "
            "variance); rerun the study with replicates >= 2 or pick larger/smaller"
        )
    variance = float(np.var(y, ddof=1))
    mean = float(np.mean(y))
    if variance == 0.0 or mean == 0.0:
        raise UserError(
            f"nominal-the-best S/N is infinite for replicates {y.tolist()} "
            "(zero variance or zero mean); use larger/smaller instead"
        )
    return float(10.0 * np.log10(mean**2 / variance))
