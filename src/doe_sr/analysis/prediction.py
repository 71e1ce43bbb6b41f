"""The additive-model prediction at the optimum, with Ross's confidence intervals.

Why a dataclass: the prediction is read by the terminal text, the optimum table of the
report, the confirmation verdict and ``doe-sr confirm``'s check for an interval; as a
dict of 14 keys each reader spelled the keys again. ``Prediction.to_dict`` is the
``predicted`` object of ``doe-sr analyze --format json`` (ARCHITECTURE.md), unchanged.

Ross, *Taguchi Techniques for Quality Engineering* (2nd ed., ch. 6 and 10): the
prediction is ``grand + sum(level mean - grand)`` over the unpooled factors; its
interval ``+- sqrt(F(0.05; 1, dof_e) * MS_e / n_eff)`` with ``n_eff = N / (1 + dof of
the factors used)``, and ``+- sqrt(F * MS_e * (1/n_eff + 1/r))`` for the mean of r
confirmation runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from doe_sr.analysis import anova as _anova

__all__ = ["ALPHA", "Prediction", "half_width", "predict"]

#: The intervals are 95 % ones.
ALPHA = 0.05


@dataclass(frozen=True)
class Prediction:
    """The additive model's S/N and mean at the S/N optimum, and their 95 % intervals
    (None without an error estimate)."""

    sn: float
    mean: float
    ci95: tuple[float, float] | None
    confirmation_ci95: tuple[float, float] | None
    confirmation_r: int
    sn_ci95: tuple[float, float] | None
    n_eff: float
    n_eff_sn: float
    factors_used: tuple[str, ...]
    error_dof: int
    error_ms: float
    sn_error_dof: int
    sn_error_ms: float
    alpha: float = ALPHA

    @property
    def has_interval(self) -> bool:
        """Whether a confirmation can be judged at all (on the mean or on S/N)."""
        return self.confirmation_ci95 is not None or self.sn_ci95 is not None

    def to_dict(self) -> dict[str, Any]:
        """The ``predicted`` object of the JSON contract (intervals as lists)."""
        def pair(value):
            return None if value is None else list(value)

        return {
            "sn": self.sn,
            "mean": self.mean,
            "ci95": pair(self.ci95),
            "confirmation_ci95": pair(self.confirmation_ci95),
            "confirmation_r": self.confirmation_r,
            "sn_ci95": pair(self.sn_ci95),
            "n_eff": self.n_eff,
            "n_eff_sn": self.n_eff_sn,
            "factors_used": list(self.factors_used),
            "error_dof": self.error_dof,
            "error_ms": self.error_ms,
            "sn_error_dof": self.sn_error_dof,
            "sn_error_ms": self.sn_error_ms,
            "alpha": self.alpha,
        }


def half_width(error_dof: int | None, error_ms: float | None, n_eff: float, r: float | None) -> float | None:
    """Ross's interval half-width; None without an error estimate."""
    if error_dof is None or error_dof <= 0 or error_ms is None or not math.isfinite(error_ms):
        return None
    from scipy import stats

    f = float(stats.f.ppf(1 - ALPHA, 1, error_dof))
    inv = 1.0 / n_eff + (1.0 / r if r else 0.0)
    return math.sqrt(f * error_ms * inv)


def _around(centre: float, half: float | None) -> tuple[float, float] | None:
    return None if half is None else (centre - half, centre + half)


def predict(
    used: list[str],
    optimum: dict[str, str],
    levels: dict[str, list[str]],
    sn_levels: dict[str, dict[str, float]],
    mean_levels: dict[str, dict[str, float]],
    grand_sn: float,
    grand_mean: float,
    raw_sn: _anova.RawAnova,
    raw_obs: _anova.RawAnova,
    pooled: list[str],
    *,
    n_runs: int,
    n_obs: int,
    r: int,
    notes: list[str],
) -> Prediction:
    """Additive-model prediction at the S/N optimum and Ross's intervals; the error of
    each scale is that of its ANOVA with the ``pooled`` terms folded in."""
    sn = grand_sn + sum(sn_levels[f][optimum[f]] - grand_sn for f in used)
    mean = grand_mean + sum(mean_levels[f][optimum[f]] - grand_mean for f in used)
    dof_used = sum(len(levels[f]) - 1 for f in used)
    n_eff = n_obs / (1 + dof_used)
    n_eff_sn = n_runs / (1 + dof_used)
    err_dof, err_ms = _anova.error_of(raw_obs, pooled)
    sn_err_dof, sn_err_ms = _anova.error_of(raw_sn, pooled)
    half = half_width(err_dof, err_ms, n_eff, r=None)
    half_conf = half_width(err_dof, err_ms, n_eff, r=r)
    sn_half = half_width(sn_err_dof, sn_err_ms, n_eff_sn, r=None)
    if half is None:
        notes.append(
            "no error estimate for the raw responses (no replicates and a saturated "
            "array), so the confidence intervals of the mean are not available; pool factors"
        )
    return Prediction(
        sn=sn,
        mean=mean,
        ci95=_around(mean, half),
        confirmation_ci95=_around(mean, half_conf),
        confirmation_r=r,
        sn_ci95=_around(sn, sn_half),
        n_eff=n_eff,
        n_eff_sn=n_eff_sn,
        factors_used=tuple(used),
        error_dof=err_dof,
        error_ms=err_ms,
        sn_error_dof=sn_err_dof,
        sn_error_ms=sn_err_ms,
    )
