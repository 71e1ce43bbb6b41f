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

__all__ = ["ALPHA", "LevelPrediction", "Prediction", "half_width", "predict", "predict_at"]

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


# --- prediction at any levels (Minitab's "Predict Taguchi Results") ------------------


@dataclass(frozen=True)
class LevelPrediction:
    """The additive model's S/N and mean at chosen levels, with 95 % intervals (Ross's,
    as for the optimum; None without an error estimate on that scale)."""

    levels: dict[str, str]
    factors_used: tuple[str, ...]
    sn: float
    sn_ci95: tuple[float, float] | None
    mean: float
    ci95: tuple[float, float] | None
    error_dof: int
    sn_error_dof: int
    n_eff: float
    n_eff_sn: float
    notes: tuple[str, ...] = ()
    alpha: float = ALPHA

    def to_dict(self) -> dict[str, Any]:
        """``doe-sr predict --format json``: ``sn`` and ``mean`` as ``{"value", "ci95"}``."""
        def pair(value):
            return None if value is None else [float(value[0]), float(value[1])]

        def clean(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "levels": dict(self.levels),
            "factors_used": list(self.factors_used),
            "sn": {"value": clean(self.sn), "ci95": pair(self.sn_ci95)},
            "mean": {"value": clean(self.mean), "ci95": pair(self.ci95)},
            "error_dof": self.error_dof,
            "sn_error_dof": self.sn_error_dof,
            "n_eff": self.n_eff,
            "n_eff_sn": self.n_eff_sn,
            "alpha": self.alpha,
            "notes": list(self.notes),
        }

    def to_text(self) -> str:
        def fmt(x: float) -> str:
            return f"{x:.4f}" if math.isfinite(x) else "-"

        def ci(value) -> str:
            return "-" if value is None else f"[{fmt(value[0])}, {fmt(value[1])}]"

        lines = [
            "Prediction at " + ", ".join(f"{f}={lvl}" for f, lvl in self.levels.items()),
            f"  S/N  {fmt(self.sn)} dB   95% CI {ci(self.sn_ci95)}   (error dof {self.sn_error_dof})",
            f"  mean {fmt(self.mean)}   95% CI {ci(self.ci95)}   (error dof {self.error_dof})",
            f"  factors used: {', '.join(self.factors_used)}",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _match_level(value: str, known: list[str]) -> str | None:
    """``value`` as one of ``known`` (text first, then numerically: "1e-3" is "0.001")."""
    value = value.strip()
    if value in known:
        return value
    try:
        number = float(value)
    except ValueError:
        return None
    hits = []
    for k in known:
        try:
            if math.isclose(float(k), number, rel_tol=1e-12, abs_tol=0.0):
                hits.append(k)
        except ValueError:
            continue
    return hits[0] if len(hits) == 1 else None


def predict_at(analysis, levels: dict[str, str]) -> LevelPrediction:
    """The additive model at ``levels`` (``{factor: level}``, every factor named).

    Why every factor must be named: filling the gaps with the optimum (or anything
    else) would predict a combination the user did not ask for; the error names the
    missing factors and the optimum levels to copy. A level of a pooled factor is
    accepted and ignored (its effect is part of the error), which a note says.
    Unknown factors or levels raise a one-line ``UserError`` listing the valid ones.

    Same model and intervals as the optimum's :class:`Prediction` (``grand + sum(level
    mean - grand)`` over the unpooled factors; Ross's half-width), so ``predict_at(a,
    a.optimum)`` reproduces ``a.predicted``.
    """
    from doe_sr.core.errors import UserError

    factors = list(analysis.factors)
    unknown = [f for f in levels if f not in factors]
    if unknown:
        raise UserError(f"--levels: unknown factor(s) {', '.join(unknown)}; the factors are {', '.join(factors)}")
    chosen: dict[str, str] = {}
    for f in (f for f in factors if f in levels):
        match = _match_level(str(levels[f]), list(analysis.levels[f]))
        if match is None:
            raise UserError(f"--levels: {levels[f]!r} is not a level of {f}; its levels are "
                            f"{', '.join(analysis.levels[f])}")
        chosen[f] = match
    missing = [f for f in factors if f not in levels]
    if missing:
        example = ",".join(f"{f}={analysis.optimum[f]}" for f in missing)
        raise UserError(f"--levels: give a level for every factor; missing {', '.join(missing)} "
                        f"(e.g. the optimum: {example})")
    pooled = set(analysis.pooled)
    used = [f for f in factors if f not in pooled]
    sn_levels, mean_levels = analysis.level_values("sn"), analysis.level_values("mean")
    sn = analysis.grand_sn + sum(sn_levels[f][chosen[f]] - analysis.grand_sn for f in used)
    mean = analysis.grand_mean + sum(mean_levels[f][chosen[f]] - analysis.grand_mean for f in used)
    p = analysis.predicted
    dof_used = sum(len(analysis.levels[f]) - 1 for f in used)
    n_obs, n_runs = int(analysis.runs["n"].sum()), len(analysis.runs)
    n_eff, n_eff_sn = n_obs / (1 + dof_used), n_runs / (1 + dof_used)
    half = half_width(p.error_dof, p.error_ms, n_eff, r=None)
    sn_half = half_width(p.sn_error_dof, p.sn_error_ms, n_eff_sn, r=None)
    notes = []
    if pooled:
        notes.append(f"pooled factor(s) {', '.join(sorted(pooled))} are not in the model: their levels do not "
                     "change the prediction")
    if half is None and sn_half is None:
        notes.append("no error estimate, so no interval: add `replicates: 2` to the study or use --pool auto")
    return LevelPrediction(
        levels=chosen, factors_used=tuple(used), sn=float(sn), sn_ci95=_around(sn, sn_half),
        mean=float(mean), ci95=_around(mean, half), error_dof=p.error_dof, sn_error_dof=p.sn_error_dof,
        n_eff=n_eff, n_eff_sn=n_eff_sn, notes=tuple(notes))
