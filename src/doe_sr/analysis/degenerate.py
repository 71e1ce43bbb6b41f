"""Degenerate runs: a network that did not learn, diverged, or ended worse than bicubic.

Why: an orthogonal array analyses whatever its runs return. When several runs end at
exactly bicubic's PSNR because their optimizer never moved the weights, the "effects"
between them are noise, and a reader who is not told so takes them for findings. Each
run is therefore classified from what it logged, and the flag carries the likely cause
in words, built from the run's own numbers (never canned).

Pure: plain mappings in (a run's metrics and params, the study's bicubic baseline),
a :class:`Flag` or ``None`` out. The engine stores the flag as MLflow tags on the child
run (:func:`flag_tags`, tags ``doe_sr.flag`` and ``doe_sr.flag_cause``); runs recorded
before this module existed are classified from their record when read back.

What a run logs for this (see :mod:`doe_sr.sr.train`):

* ``val_change_from_bicubic``: mean absolute difference, in 8-bit grey levels, between
  the network's output and its bicubic input on the validation images. A residual
  SR-NET starts as the identity on that input, so 0 means the output *is* bicubic.
* ``train_steps``, ``train_loss_start``, ``train_loss_end``: optimizer steps taken and
  the mean training loss over the first and last 10% of them.
* ``val_psnr``, compared with the parent run's ``bicubic_val_psnr``.

Thresholds (module constants, so a reader can check them):

* :data:`NO_CHANGE_GREY` = 0.1 grey level. Outputs are rounded to 8 bits, so a
  network whose weights barely moved reproduces bicubic exactly (0.0); a mean change
  below 0.1 means at most 10% of the pixel values differ from bicubic by one grey level,
  worth a few thousandths of a dB at most (measured on the tiny test study: Adam at
  1e-4 after 4 steps changed 0.05 grey level and 0.003 dB), while the runs that learned
  anything moved their output by one to several grey levels. Runs logged before the measure existed fall back
  on :data:`SAME_PSNR_DB`: a val PSNR within 0.001 dB of bicubic's (identical outputs
  give identical PSNR; a network that moved almost never lands within 0.001 dB).
* :data:`DIVERGE_FACTOR` = 2: the loss over the last 10% of steps is at least twice
  that over the first 10% *and* val PSNR ended below bicubic's (the network got worse
  than where it started). Requiring both keeps a noisy loss on random patches of a very
  short run from being called divergence. :data:`COLLAPSE_DB` = 10 dB below bicubic
  (mean errors of tens of grey levels: the output no longer looks like the image) is
  divergence whatever the loss says. A NaN/inf loss stops training and fails the run
  (:class:`doe_sr.sr.train.RunDiverged`, recorded with its reason), so such runs are
  failed runs, not flagged ones.
* :data:`BELOW_BICUBIC_DB` = 0.05 dB: a val PSNR lower than bicubic's by more than this
  is flagged ``below_bicubic``. Smaller gaps are within the spread of a network that has
  barely moved, and calling them a loss would be reading noise.

The checks run in that order of precedence: ``no_learning``, ``diverged``, ``below_bicubic``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas only for the report's table
    import pandas as pd

#: MLflow tags of a child run: the flag's kind (``none`` for a healthy run, so "checked,
#: nothing found" differs from "never checked") and its cause in words
FLAG_TAG = "doe_sr.flag"
FLAG_CAUSE_TAG = "doe_sr.flag_cause"
NONE = "none"

NO_LEARNING, DIVERGED, BELOW_BICUBIC = "no_learning", "diverged", "below_bicubic"
#: short labels for tables (``doe-sr status``)
LABELS = {NO_LEARNING: "no learning", DIVERGED: "diverged", BELOW_BICUBIC: "below bicubic"}

NO_CHANGE_GREY = 0.1
SAME_PSNR_DB = 0.001
DIVERGE_FACTOR = 2.0
COLLAPSE_DB = 10.0
BELOW_BICUBIC_DB = 0.05

# Keras' defaults, as doe_sr.sr.train.make_optimizer builds them (only the learning rate is set)
_ADADELTA_RHO, _ADADELTA_EPS = 0.95, 1e-7
_ADAGRAD_INITIAL = 0.1


@dataclass(frozen=True)
class Flag:
    """Why a run is suspect: ``kind`` (``no_learning``, ``diverged``, ``below_bicubic``) and
    ``cause``, one sentence built from the run's logged numbers."""

    kind: str
    cause: str

    @property
    def label(self) -> str:
        return LABELS.get(self.kind, self.kind)


def _num(mapping: Mapping[str, object], key: str) -> float | None:
    """A finite float from ``mapping[key]`` (a metric, a param string, a table cell), else None."""
    value = mapping.get(key)
    if value is None or value == "":
        return None
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _lr_text(lr: float) -> str:
    """1e-4 rather than 0.0001 (as a study writes small learning rates), 0.01 as is."""
    if lr >= 1e-3 or lr == 0:
        return f"{lr:g}"
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _setting(params: Mapping[str, object]) -> tuple[str, float | None, str]:
    """(optimizer, learning rate, "adam at learning rate 1e-4") from a run's params."""
    opt = str(params.get("training.optimizer") or params.get("optimizer") or "").strip()
    lr = _num(params, "training.learning_rate")
    if lr is None:
        lr = _num(params, "learning_rate")
    text = " ".join(p for p in (opt, f"at learning rate {_lr_text(lr)}" if lr is not None else "") if p)
    return opt, lr, text or "this setting"


def _steps_text(metrics: Mapping[str, object]) -> str:
    steps = _num(metrics, "train_steps")
    return f" over {int(steps)} steps" if steps else ""


def _loss_move(metrics: Mapping[str, object], loss_history: Sequence[float] | None) -> tuple[float, float] | None:
    """(loss at the start, loss at the end): the step windows when logged, else the first and
    last per-epoch loss (runs recorded before the windows existed; one epoch says nothing)."""
    start, end = _num(metrics, "train_loss_start"), _num(metrics, "train_loss_end")
    if start is not None and end is not None:
        return start, end
    history = [float(x) for x in (loss_history or [])]
    if len(history) >= 2:
        return history[0], history[-1]
    return None


def _no_step_hint(opt: str, lr: float | None, steps: float | None) -> str:
    """Why this optimizer at this learning rate barely moves the weights (facts about Keras' defaults)."""
    if lr is None:
        return ""
    if opt in ("adam", "adamw", "nadam") and steps:
        return (f": {opt} at learning rate {_lr_text(lr)} moves each weight by at most about the learning rate "
                f"per step, {lr * steps:.1e} in all over {int(steps)} steps, too little to change the output")
    if opt == "adadelta":
        first = lr * math.sqrt(_ADADELTA_EPS / (1 - _ADADELTA_RHO))
        return (f": adadelta at learning rate {_lr_text(lr)} takes almost no step (Keras' Adadelta starts with "
                f"steps of about learning rate x sqrt(epsilon/(1-rho)) = {first:.1e} per weight)")
    if opt == "adagrad":
        return (f": adagrad at learning rate {_lr_text(lr)} takes almost no step (Keras' Adagrad divides each "
                f"step by the root of the squared gradients accumulated from {_ADAGRAD_INITIAL:g}, so small "
                "gradients give steps of a few times learning rate x gradient, shrinking as training goes on)")
    if opt == "sgd":
        return (f": sgd at learning rate {_lr_text(lr)} takes almost no step (its step is learning rate x "
                "gradient, with no per-weight scaling)")
    return f": {opt or 'the optimizer'} at learning rate {_lr_text(lr)} did not move the weights enough"


def classify(metrics: Mapping[str, object], params: Mapping[str, object], baseline: Mapping[str, object], *,
             loss_history: Sequence[float] | None = None) -> Flag | None:
    """The flag of one finished run, or None when it is healthy.

    ``metrics``: the run's logged metrics (final values); ``params``: its params
    (``training.optimizer``/``training.learning_rate``, or the factor columns
    ``optimizer``/``learning_rate``), used only for the cause; ``baseline``: the study's
    parent metrics, of which ``bicubic_val_psnr`` counts; ``loss_history``: the per-epoch
    loss, only consulted when the run did not log its step windows.
    """
    psnr, bicubic = _num(metrics, "val_psnr"), _num(baseline, "bicubic_val_psnr")
    opt, lr, setting = _setting(params)
    steps = _steps_text(metrics)
    move = _loss_move(metrics, loss_history)
    loss_text = ""
    if move is not None:
        start, end = move
        rel = abs(end - start) / abs(start) if start else math.inf
        moved = "less than 0.1%" if rel < 0.001 else f"{rel:.1%}"
        loss_text = (f"the loss moved by {moved}{steps} ({start:.4g} to {end:.4g})" if rel < 0.1
                     else f"the loss went from {start:.4g} to {end:.4g}{steps}")

    # 1. no learning: the output is the bicubic input
    change = _num(metrics, "val_change_from_bicubic")
    same = (change < NO_CHANGE_GREY if change is not None
            else psnr is not None and bicubic is not None and abs(psnr - bicubic) < SAME_PSNR_DB)
    if same:
        what = (f"the output equals bicubic (mean change {change:.3f} grey levels on the validation images)"
                if change is not None else f"val PSNR {psnr:.3f} dB equals bicubic's {bicubic:.3f} dB")
        if move is not None and loss_text.startswith("the loss went"):
            # the network is still its bicubic input, so the loss changed with the patches drawn
            loss_text = f"its loss changed only with the patches drawn ({move[0]:.4g} to {move[1]:.4g}{steps})"
        cause = f"{what}; {loss_text}" if loss_text else f"{what}{steps}"
        return Flag(NO_LEARNING, cause + _no_step_hint(opt, lr, _num(metrics, "train_steps")))

    if psnr is None or bicubic is None:
        return None
    gap = bicubic - psnr
    # 2. diverged: the loss grew and the network ended worse than its start, or PSNR collapsed
    if move is not None:
        start, end = move
        grew = start > 0 and end >= DIVERGE_FACTOR * start
    else:
        grew = False
    if gap >= COLLAPSE_DB or (grew and gap > BELOW_BICUBIC_DB):
        parts = [f"val PSNR fell to {psnr:.1f} dB, {gap:.1f} dB below bicubic's {bicubic:.1f} dB"]
        if move is not None:
            parts.insert(0, f"the loss went from {move[0]:.4g} to {move[1]:.4g}{steps}")
        return Flag(DIVERGED, " and ".join(parts) + f": {setting} diverged; lower the learning rate")
    # 3. below bicubic
    if gap > BELOW_BICUBIC_DB:
        cause = f"val PSNR {psnr:.2f} dB is {gap:.2f} dB below bicubic's {bicubic:.2f} dB"
        if loss_text:
            cause += f"; {loss_text}"
        return Flag(BELOW_BICUBIC, cause + f": {setting} made the bicubic input worse")
    return None


def flag_tags(metrics: Mapping[str, object], params: Mapping[str, object],
              baseline: Mapping[str, object]) -> dict[str, str]:
    """The MLflow tags recording a finished run's flag: ``doe_sr.flag`` (its kind, or ``none``)
    and, when flagged, ``doe_sr.flag_cause``."""
    flag = classify(metrics, params, baseline)
    return {FLAG_TAG: NONE} if flag is None else {FLAG_TAG: flag.kind, FLAG_CAUSE_TAG: flag.cause}


def recorded_flag(tags: Mapping[str, str], metrics: Mapping[str, object], params: Mapping[str, object],
                  baseline: Mapping[str, object], *, loss_history: Sequence[float] | None = None) -> Flag | None:
    """A run's flag as recorded in its tags when it has one, else classified from its record
    (runs that finished before flags were recorded)."""
    kind = tags.get(FLAG_TAG)
    if kind is not None:
        return None if kind in (NONE, "") else Flag(kind, tags.get(FLAG_CAUSE_TAG, ""))
    return classify(metrics, params, baseline, loss_history=loss_history)


def _factor_columns(results: "pd.DataFrame") -> list[str]:
    """The factor columns of a results table: the non-numeric ones that are not bookkeeping."""
    import pandas as pd

    skip = {"run", "replicate", "run_id", "flag", "flag_cause"}
    return [c for c in results.columns if c not in skip and not pd.api.types.is_numeric_dtype(results[c])]


def flagged_runs_table(results: "pd.DataFrame", factors: Sequence[str] | None = None) -> "pd.DataFrame":
    """The flagged runs of a results table (:func:`doe_sr.workflow.session.array_results`):
    run, replicate, levels ("learning_rate=0.01, optimizer=adam"), val_psnr, flag, cause.

    ``factors`` default: the table's non-numeric columns other than run_id and the flag's.
    """
    import pandas as pd

    columns = ["run", "replicate", "levels", "val_psnr", "flag", "cause"]
    if "flag" not in results or not len(results):
        return pd.DataFrame(columns=columns)
    factors = list(factors) if factors is not None else _factor_columns(results)
    flagged = results[results["flag"].fillna("").astype(str) != ""]
    rows = [{"run": int(r["run"]), "replicate": int(r.get("replicate", 0)),
             "levels": ", ".join(f"{f}={r[f]}" for f in factors if f in r),
             "val_psnr": float(r["val_psnr"]) if "val_psnr" in r else math.nan,
             "flag": str(r["flag"]), "cause": str(r.get("flag_cause", ""))} for _, r in flagged.iterrows()]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["run", "replicate"]).reset_index(drop=True)


_SUMMARY = {NO_LEARNING: "did not learn (output equals bicubic)", DIVERGED: "diverged",
            BELOW_BICUBIC: "ended below bicubic"}


def flag_summary(results: "pd.DataFrame") -> str:
    """One line for the report: "5 of 9 runs did not learn (output equals bicubic): runs 1, 4,
    6, 7, 9." per kind, or that no run was flagged. Replicates are named as ``run 3 rep 1``
    when the study has several."""
    n = len(results)
    if not n:
        return "No finished run to check."
    flags = results["flag"].fillna("").astype(str) if "flag" in results else None
    if flags is None or not (flags != "").any():
        return f"No run was flagged: all {n} finished runs moved away from bicubic without diverging or " \
               "ending below it."
    several = "replicate" in results and results["replicate"].nunique() > 1
    parts = []
    for kind in (NO_LEARNING, DIVERGED, BELOW_BICUBIC, *sorted(set(flags) - set(_SUMMARY) - {""})):
        rows = results[flags == kind]
        if not len(rows):
            continue
        names = [f"{int(r['run'])} rep {int(r['replicate'])}" if several else str(int(r["run"]))
                 for _, r in rows.sort_values([c for c in ("run", "replicate") if c in rows]).iterrows()]
        verb = _SUMMARY.get(kind, f"were flagged {kind}")
        runs = "run" if len(names) == 1 else "runs"
        parts.append(f"{len(names)} of {n} runs {verb}: {runs} {', '.join(names)}")
    return "; ".join(parts) + "."
