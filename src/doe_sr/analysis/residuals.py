"""Residuals of the additive main-effects model on the raw responses, for Minitab's
"four in one" residual plots (normal probability, versus fits, versus order, histogram).

Why: the F tests and intervals assume errors that are normal, of constant variance
and independent of run order; the residual plots are how a reader checks that. The
model is ``y ~ C(f1) + C(f2) + ...`` over the unpooled factors (the same main effects
the prediction uses), least squares on every observation; ``fitted`` equals the
additive prediction of the run for a balanced array. Standardized residuals are
Minitab's (internally studentized): ``e_i / sqrt(MSE (1 - h_ii))``, NaN where
``h_ii = 1``, without residual dof, or when the fit is exact (residuals that are
least-squares round-off are set to zero rather than standardized into noise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from doe_sr.analysis import anova as _anova

__all__ = ["residual_table"]


def residual_table(obs: pd.DataFrame, factors: Sequence[str], levels: Mapping[str, Sequence[str]]
                   ) -> tuple[pd.DataFrame, int]:
    """``(table, residual dof)``; table columns ``order`` (1-based, observation order:
    run, then replicate), ``run``, ``observed``, ``fitted``, ``residual``, ``standardized``."""
    y = obs["y"].to_numpy(dtype=float)
    blocks = []
    for f in factors:
        codes = obs[f].map({lvl: i for i, lvl in enumerate(levels[f])}).to_numpy()
        blocks.append(_anova.dummies(codes, len(levels[f])))
    x = np.column_stack([np.ones(len(y)), *blocks])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    fitted = x @ coef
    resid = y - fitted
    rank = int(np.linalg.matrix_rank(x))
    dof = len(y) - rank
    resid_ss = float(resid @ resid)
    if dof > 0 and resid_ss > 1e-20 * float(y @ y):  # below: round-off of an exact fit (see anova)
        mse = resid_ss / dof
        leverage = np.einsum("ij,ji->i", x, np.linalg.pinv(x))
        with np.errstate(divide="ignore", invalid="ignore"):
            std = resid / np.sqrt(mse * (1.0 - leverage))
        std[~np.isfinite(std) | (leverage > 1 - 1e-10)] = math.nan
    else:
        resid = np.zeros_like(y)  # saturated or exact: the fit is exact, the rest is round-off
        std = np.full_like(y, math.nan)
    table = pd.DataFrame({"order": np.arange(1, len(y) + 1), "run": obs["run"].to_numpy(),
                          "observed": y, "fitted": fitted, "residual": resid, "standardized": std})
    return table, dof
