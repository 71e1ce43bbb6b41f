"""Orthogonal arrays and the run table.

Why pyDOE3: it ships Taguchi's standard orthogonal arrays (L4 ... L81); pyDOE2, still
widely cited, has none. This module assigns the study's factors to array columns and
turns coded levels into actual values. It is pure numpy/pandas so it tests in
milliseconds and stays free of TensorFlow and MLflow.

The run table has one row per array run: ``run`` (1-based), the coded level of each
factor (``<factor>__code``, 0-based, the array row as printed in textbooks minus one)
and the actual level value under the factor's name.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyDOE3 import get_orthogonal_array, list_orthogonal_arrays

from doe_sr.core.errors import UserError
from doe_sr.study.schema import Study


@dataclass(frozen=True)
class Run:
    """One array run, as the engine executes it."""

    run: int
    factors: dict[str, object]  # factor name -> actual level value
    codes: dict[str, int]  # factor name -> 0-based level index

    @property
    def row(self) -> str:
        """The array row as textbooks print it (1-based levels), e.g. '1-2-2-2'."""
        return "-".join(str(c + 1) for c in self.codes.values())

    def label(self, replicate: int | None = None, prefix: str = "r") -> str:
        """The run's name in the MLflow UI: its number and levels, e.g. ``r08 lr=0.0001 adam tanh f128``.

        Why: the runs table shows names first, and "run 08" made a researcher open each
        run to see what it tried. Each level is written as in the study file, as short
        as stays unambiguous: ``lr=`` for the learning rate, ``f`` + the count for
        filters, the optimizer, activation and loss bare (their levels are words that
        name themselves), ``name=value`` for any other factor. ``replicate`` (0-based,
        as the ``doe_sr.replicate`` tag and ``doe-sr status`` count it) adds ``rep N``;
        the engine passes it only when the study has several replicates. ``prefix`` tells
        a validation run (``v37 lr=0.001 adam elu f64``) from an array run.
        """
        parts = [f"{prefix}{self.run:02d}", *(_level_label(name, value) for name, value in self.factors.items())]
        if replicate is not None:
            parts.append(f"rep {replicate}")
        return " ".join(parts)


#: how a level reads in a run's name: a compact prefix for the factors read most, nothing
#: before a word that names itself (``adam``, ``tanh``, ``mae``); others are ``name=value``
_PREFIX = {"learning_rate": "lr=", "filters": "f", "optimizer": "", "activation": "", "loss": ""}


def _level_label(name: str, value: object) -> str:
    """One level in a run's name (see :meth:`Run.label`)."""
    return f"{_PREFIX[name]}{value}" if name in _PREFIX else f"{name}={value}"


def resolve_array_name(name: str) -> str:
    """Accept a catalogue name ('L9(3^4)') or its short form ('L9') when unambiguous."""
    catalogue = list_orthogonal_arrays()
    if name in catalogue:
        return name
    compact = name.replace(" ", "")
    for full in catalogue:
        if full.replace(" ", "") == compact:
            return full
    short = [full for full in catalogue if full.split("(")[0] == name]
    if len(short) == 1:
        return short[0]
    hint = f"one of {', '.join(short)}" if short else f"one of {', '.join(catalogue)}"
    raise UserError(f"design.array: unknown orthogonal array {name!r}; use {hint}")


def orthogonal_array(name: str) -> np.ndarray:
    """The array as an (N runs x k columns) int matrix of 0-based levels."""
    return np.asarray(get_orthogonal_array(resolve_array_name(name)), dtype=int)


def _column_levels(array: np.ndarray) -> list[int]:
    return [len(np.unique(array[:, j])) for j in range(array.shape[1])]


def assign_columns(study: Study, array: np.ndarray) -> list[int]:
    """0-based array column of each factor.

    Explicit ``design.columns`` win; otherwise each factor takes the first unused column
    with as many levels as it has (for pure arrays: columns in order), which is how
    Taguchi's tables are read for main-effect studies.
    """
    levels = _column_levels(array)
    factors = study.design.factors
    name = study.design.array
    if study.design.columns is not None:
        cols = [c - 1 for c in study.design.columns]
        for f, c in zip(factors, cols):
            if not 0 <= c < len(levels):
                raise UserError(f"design.columns: column {c + 1} does not exist in {name} (it has {len(levels)})")
            if levels[c] != len(f.levels):
                raise UserError(
                    f"design.factors.{f.name}: {len(f.levels)} levels do not fit column {c + 1} of {name}, "
                    f"which has {levels[c]}; give the factor {levels[c]} levels or choose another column")
        if len(set(cols)) != len(cols):
            raise UserError("design.columns: two factors share one column; give each factor its own column")
        return cols
    used: set[int] = set()
    cols = []
    for f in factors:
        free = [j for j in range(len(levels)) if j not in used and levels[j] == len(f.levels)]
        if not free:
            available = sorted({lv for j, lv in enumerate(levels) if j not in used})
            if len(cols) >= len(levels):
                fix = f"{name} has {len(levels)} columns for {len(factors)} factors; choose a larger array"
            else:
                fix = (f"no free column of {name} has {len(f.levels)} levels (free columns have "
                       f"{', '.join(map(str, available))}); change the levels or the array")
            raise UserError(f"design.factors.{f.name}: {fix}")
        used.add(free[0])
        cols.append(free[0])
    return cols


def build_runs(study: Study) -> list[Run]:
    """The runs of the study's array, in array order."""
    array = orthogonal_array(study.design.array)
    cols = assign_columns(study, array)
    runs = []
    for i, row in enumerate(array):
        codes = {f.name: int(row[c]) for f, c in zip(study.design.factors, cols)}
        values = {f.name: f.levels[codes[f.name]] for f in study.design.factors}
        runs.append(Run(run=i + 1, factors=values, codes=codes))
    return runs


#: ``doe-sr validate --against full``: every combination of the study's levels.
FULL = "full"


def full_factorial(study: Study) -> list[Run]:
    """Every combination of the study's levels, numbered from 1 with the last factor varying fastest.

    Why this order: it is the standard order of a full factorial table, so ``v01`` is
    all factors at their first level and the numbering is the same in every session.
    """
    factors = study.design.factors
    runs = []
    for i, codes in enumerate(itertools.product(*(range(len(f.levels)) for f in factors))):
        code = {f.name: int(c) for f, c in zip(factors, codes)}
        runs.append(Run(run=i + 1, factors={f.name: f.levels[code[f.name]] for f in factors}, codes=code))
    return runs


def _model_rank(codes: np.ndarray) -> int:
    """Rank of the model with every column's main effect and every two-column interaction
    (treatment-coded dummies): how much of the factors' behaviour ``codes`` can tell apart."""
    mains = [np.stack([codes[:, j] == lv for lv in np.unique(codes[:, j])[1:]], axis=1).astype(float)
             for j in range(codes.shape[1])]
    blocks = [np.ones((len(codes), 1)), *mains]
    for a, b in itertools.combinations(mains, 2):
        blocks.append(np.einsum("ni,nj->nij", a, b).reshape(len(codes), -1))
    return int(np.linalg.matrix_rank(np.column_stack(blocks)))


def _array_runs(study: Study, name: str, array: np.ndarray) -> list[Run]:
    """The runs of ``array`` with the study's factors on free columns of matching levels.

    Why not simply the first free columns, as for the study's own array: in a larger
    array those can be a smaller array repeated (the first four 3-level columns of
    pyDOE3's L27 are the L9 three times: 9 distinct runs, not 27). Each factor takes
    the free column that gives the most distinct runs, then the most estimable
    main effects and two-factor interactions (the lowest-numbered on a tie), so the
    larger array is as informative as its size allows.
    """
    levels = _column_levels(array)
    used: list[int] = []
    for f in study.design.factors:
        free = [j for j in range(len(levels)) if j not in used and levels[j] == len(f.levels)]
        if not free:
            raise UserError(f"--against {name}: the array cannot hold the study's factors (no free column with "
                            f"{len(f.levels)} levels for {f.name}); choose an array whose columns fit them, or full")
        used.append(max(free, key=lambda j: (len(np.unique(array[:, [*used, j]], axis=0)),
                                             _model_rank(array[:, [*used, j]]), -j)))
    runs = []
    for i, row in enumerate(array):
        code = {f.name: int(row[c]) for f, c in zip(study.design.factors, used)}
        runs.append(Run(run=i + 1, factors={f.name: f.levels[code[f.name]] for f in study.design.factors},
                        codes=code))
    return runs


def validation_runs(study: Study, against: str) -> tuple[str, list[Run]]:
    """The set a study's array is checked against (``doe-sr validate --against``): its short name and runs.

    ``full`` is the full factorial; any other name is a pyDOE3 array (``L27``,
    ``L81(3^40)``) carrying the study's factors on free columns. Refused in one line:
    an unknown array, one whose columns cannot hold the factors, and a set not larger
    than the study's own array (it would check nothing).
    """
    if against.strip().lower() == FULL:
        key, runs = FULL, full_factorial(study)
    else:
        try:
            name = resolve_array_name(against.strip())
        except UserError as exc:
            raise UserError(f"--against {against}: {str(exc).split(': ', 1)[-1]}, or full") from None
        short = name.split("(")[0]
        unique = sum(1 for full in list_orthogonal_arrays() if full.split("(")[0] == short) == 1
        key = short if unique else "_".join("".join(c if c.isalnum() else " " for c in name).split())
        runs = _array_runs(study, key, orthogonal_array(name))
    own = len(orthogonal_array(study.design.array))
    if len(runs) <= own:
        raise UserError(f"--against {against}: {len(runs)} runs are not more than the study's {study.design.array} "
                        f"({own} runs), so it checks nothing; choose a larger array or full")
    return key, runs


def run_table(study: Study) -> pd.DataFrame:
    """The run table: run, coded levels (``<factor>__code``) and actual values."""
    records = []
    for r in build_runs(study):
        rec: dict[str, object] = {"run": r.run}
        rec.update({f"{k}__code": v for k, v in r.codes.items()})
        rec.update(r.factors)
        records.append(rec)
    return pd.DataFrame.from_records(records)


def is_balanced(codes: np.ndarray) -> bool:
    """Every level appears equally often in every column."""
    for j in range(codes.shape[1]):
        counts = np.unique(codes[:, j], return_counts=True)[1]
        if len(set(counts)) != 1:
            return False
    return True


def is_orthogonal(codes: np.ndarray) -> bool:
    """Every pair of columns shows every level combination equally often (strength 2)."""
    for a, b in itertools.combinations(range(codes.shape[1]), 2):
        pairs = pd.Series(list(zip(codes[:, a], codes[:, b]))).value_counts()
        n_comb = len(np.unique(codes[:, a])) * len(np.unique(codes[:, b]))
        if len(pairs) != n_comb or pairs.nunique() != 1:
            return False
    return True


def design_json(study: Study) -> dict:
    """The `doe-sr design --format json` contract: {"array", "runs": [{"run", "factors"}]}."""
    return {
        "array": resolve_array_name(study.design.array),
        "replicates": study.design.replicates,
        "runs": [{"run": r.run, "row": r.row, "factors": r.factors} for r in build_runs(study)],
    }
