"""Judge confirmation runs at the predicted optimum, and the record of that verdict.

Taguchi's loop closes with a confirmation experiment (Ross, *Taguchi Techniques for
Quality Engineering*, 2nd ed., ch. 15; Phadke, ch. 5): train the predicted optimum a few
more times and check that the observed mean falls inside the additive model's
confirmation interval. Outside means the main-effect model missed something (an
interaction, a curved effect), so the "optimum" is not trusted.

Why dataclasses with renderers: ``doe-sr confirm`` prints the record as text or JSON,
the report folds it into ``summary.md`` as Markdown, and the study's parent run carries
it as tags; before, each of them read the same dict by its keys. ``to_dict`` is the JSON
of ``doe-sr confirm --format json`` and of ``confirmation.json``, unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from doe_sr.analysis.formatting import interval as _interval
from doe_sr.analysis.formatting import number
from doe_sr.analysis.prediction import half_width
from doe_sr.core.errors import UserError
from doe_sr.core.objectives import sn_ratio

if TYPE_CHECKING:
    from doe_sr.analysis.taguchi import Analysis

__all__ = ["Confirmation", "ConfirmationRun", "Verdict", "judge_confirmation"]


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: a missing number is null."""
    return None if value is None or not math.isfinite(value) else float(value)


def _pair(low: float, high: float) -> list[float | None]:
    return [_finite(low), _finite(high)]


@dataclass(frozen=True)
class Verdict:
    """Observed against predicted, on the mean and on S/N; ``inside`` is None without an interval."""

    r: int
    observed_mean: float | None
    predicted_mean: float | None
    interval: list[float | None] | None
    inside: bool | None
    observed_sn: float | None
    predicted_sn: float | None
    sn_interval: list[float | None] | None
    sn_inside: bool | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "r": self.r,
            "observed_mean": self.observed_mean,
            "predicted_mean": self.predicted_mean,
            "interval": None if self.interval is None else list(self.interval),
            "inside": self.inside,
            "observed_sn": self.observed_sn,
            "predicted_sn": self.predicted_sn,
            "sn_interval": None if self.sn_interval is None else list(self.sn_interval),
            "sn_inside": self.sn_inside,
            "message": self.message,
        }

    @property
    def word(self) -> str:
        """``confirmed``, ``not confirmed`` or ``no interval``: the verdict in two words."""
        if self.inside is None:
            return "no interval"
        return "confirmed" if self.inside else "not confirmed"


def judge_confirmation(analysis: Analysis, observed: Sequence[float]) -> Verdict:
    """Do confirmation runs at the optimum agree with the additive prediction?

    The mean of the r observed responses is compared with Ross's confirmation
    interval ``mean_pred +- sqrt(F(0.05; 1, dof_e) * MS_e * (1/n_eff + 1/r))``; their
    S/N (when it can be computed: r >= 2 for nominal) with the same interval on the
    S/N scale, where a set of confirmation runs is one S/N observation (r = 1).
    Inside the interval: the additive model (no strong interactions) is confirmed.
    """
    y = np.asarray(observed, dtype=float).ravel()
    if y.size == 0 or not np.all(np.isfinite(y)):
        raise UserError("confirmation responses must be a non-empty list of finite numbers")
    p = analysis.predicted
    half = half_width(p.error_dof, p.error_ms, p.n_eff, r=y.size)
    mean = float(y.mean())
    interval = None if half is None else [p.mean - half, p.mean + half]
    inside = None if interval is None else bool(interval[0] <= mean <= interval[1])

    observed_sn = sn_interval = sn_inside = None
    if analysis.objective != "nominal" or y.size >= 2:
        try:
            observed_sn = sn_ratio(y, analysis.objective)
        except UserError:
            observed_sn = None
    sn_half = half_width(p.sn_error_dof, p.sn_error_ms, p.n_eff_sn, r=1)
    if sn_half is not None:
        sn_interval = [p.sn - sn_half, p.sn + sn_half]
        if observed_sn is not None:
            sn_inside = bool(sn_interval[0] <= observed_sn <= sn_interval[1])

    if inside is None:
        message = "no error estimate, so no confirmation interval: pool factors or replicate runs"
    elif inside:
        message = f"confirmed: observed mean {mean:.6g} lies in [{interval[0]:.6g}, {interval[1]:.6g}]"
    else:
        message = (
            f"not confirmed: observed mean {mean:.6g} lies outside [{interval[0]:.6g}, "
            f"{interval[1]:.6g}]; interactions or an unmodelled effect are likely"
        )
    return Verdict(
        r=int(y.size),
        observed_mean=_finite(mean),
        predicted_mean=_finite(p.mean),
        interval=None if interval is None else _pair(*interval),
        inside=inside,
        observed_sn=_finite(observed_sn),
        predicted_sn=_finite(p.sn),
        sn_interval=None if sn_interval is None else _pair(*sn_interval),
        sn_inside=sn_inside,
        message=message,
    )


@dataclass(frozen=True)
class ConfirmationRun:
    """One finished confirmation run: its MLflow id, replicate (seed offset) and response."""

    run_id: str
    replicate: int
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "replicate": self.replicate, "value": self.value}


@dataclass(frozen=True)
class Confirmation:
    """What ``doe-sr confirm`` found: which optimum, which runs, and the verdict."""

    study: str
    response: str
    objective: str
    optimum: dict[str, str]
    array_row: int | None  # the array row with the optimum's levels, if any
    run: int  # the run number of confirmation runs (never an array row)
    pooled: list[str]
    runs: list[ConfirmationRun]
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``doe-sr confirm --format json`` and ``confirmation.json``."""
        return {
            "study": self.study, "response": self.response, "objective": self.objective,
            "optimum": dict(self.optimum), "array_row": self.array_row, "run": self.run,
            "pooled": list(self.pooled), "runs": [r.to_dict() for r in self.runs],
            **self.verdict.to_dict(),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Confirmation:
        """A record read back from ``confirmation.json``."""
        verdict_keys = Verdict.__dataclass_fields__
        return cls(
            study=record["study"], response=record["response"], objective=record["objective"],
            optimum=dict(record["optimum"]), array_row=record.get("array_row"), run=record["run"],
            pooled=list(record["pooled"]),
            runs=[ConfirmationRun(d["run_id"], d["replicate"], d["value"]) for d in record["runs"]],
            verdict=Verdict(**{k: record[k] for k in verdict_keys}),
        )

    def to_text(self) -> str:
        """The verdict for the terminal (``doe-sr confirm``)."""
        v = self.verdict

        def side(inside):
            return "" if inside is None else (" -> inside" if inside else " -> OUTSIDE")

        values = ", ".join(f"{d.value:.6g}" for d in self.runs)
        return "\n".join([
            f"confirmation runs (r = {v.r}): {self.response} = {values}",
            f"mean: observed {number(v.observed_mean)}, predicted {number(v.predicted_mean)}, "
            f"95% confirmation interval {_interval(v.interval)}{side(v.inside)}",
            f"S/N:  observed {number(v.observed_sn)} dB, predicted {number(v.predicted_sn)} dB, "
            f"95% interval {_interval(v.sn_interval)}{side(v.sn_inside)}",
            f"verdict: {v.message}",
        ])

    def to_markdown(self, current_optimum: Mapping[str, str] | None = None) -> str:
        """The verdict as Markdown (``confirmation.md``, ``summary.md``); ``current_optimum``
        is the current analysis's, to flag a verdict that belongs to an earlier optimum
        (the runs changed since)."""
        v = self.verdict

        def fixed(value):
            return number(value, ".4f", missing="")

        levels = ", ".join(f"{f}={lvl}" for f, lvl in self.optimum.items())
        where = f"row {self.array_row} of the array" if self.array_row else "not a row of the array"
        values = ", ".join(f"{d.value:.4g}" for d in self.runs)
        lines = [
            f"- Predicted optimum (best S/N level of each factor): {levels} ({where}); "
            f"pooled for the prediction: {', '.join(self.pooled) or 'none'}",
            f"- {v.r} confirmation run(s), {self.response} = {values}",
            f"- Mean: observed {fixed(v.observed_mean)}, predicted {fixed(v.predicted_mean)}, "
            f"95% confirmation interval {_interval(v.interval, '.4g')}",
            f"- S/N: observed {fixed(v.observed_sn)} dB, predicted {fixed(v.predicted_sn)} dB, "
            f"95% interval {_interval(v.sn_interval, '.4g')}",
            f"- Verdict: {v.message}",
        ]
        if current_optimum is not None and dict(current_optimum) != dict(self.optimum):
            lines.append("- **Stale**: the current analysis predicts another optimum ("
                         + ", ".join(f"{f}={lvl}" for f, lvl in current_optimum.items())
                         + "); run `doe-sr confirm` again")
        return "\n".join(lines) + "\n"
