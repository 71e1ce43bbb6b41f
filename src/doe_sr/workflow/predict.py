"""What ``doe-sr predict`` does: the additive model's S/N and mean at any levels, with
95 % intervals (Minitab's "Predict Taguchi Results").

Why a workflow step and not only :func:`doe_sr.analysis.prediction.predict_at`: the
levels come as text from a command line (``learning_rate=0.001,optimizer=adam``) and
the analysis from a study's MLflow runs or a CSV, exactly as ``doe-sr analyze`` reads
them (:mod:`doe_sr.workflow.analyze`), so both commands judge the same numbers.
Nothing is published: a prediction is a question, not a result of the study.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from doe_sr.core.errors import UserError

if TYPE_CHECKING:
    from doe_sr.analysis.prediction import LevelPrediction

__all__ = ["parse_levels", "predict_csv", "predict_study"]


def parse_levels(text: str | None) -> dict[str, str]:
    """``--levels a=1,b=x`` as ``{"a": "1", "b": "x"}``; a malformed item or a factor
    named twice is a one-line UserError."""
    if not text or not text.strip():
        raise UserError("--levels: give factor=level pairs, e.g. learning_rate=0.001,optimizer=adam")
    out: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, level = item.partition("=")
        if not sep or not name.strip() or not level.strip():
            raise UserError(f"--levels: {item!r} is not factor=level (e.g. optimizer=adam)")
        if name.strip() in out:
            raise UserError(f"--levels: factor {name.strip()!r} is given twice")
        out[name.strip()] = level.strip()
    return out


def predict_study(engine, levels: dict[str, str], *, response: str | None = None,
                  objective: str | None = None, pool=None, impute: str | None = None) -> LevelPrediction:
    """The prediction at ``levels`` from a study's finished array runs (``engine`` from
    :func:`~doe_sr.workflow.session.open_study`)."""
    from doe_sr.analysis.prediction import predict_at
    from doe_sr.workflow.analyze import study_analysis

    analysis, _ = study_analysis(engine, response=response, objective=objective, pool=pool, impute=impute)
    return predict_at(analysis, levels)


def predict_csv(path: Path, factors: list[str], response: str, objective: str, levels: dict[str, str], *,
                pool=None, impute: str | None = None) -> LevelPrediction:
    """The prediction at ``levels`` from a results table produced elsewhere."""
    from doe_sr.analysis.prediction import predict_at
    from doe_sr.analysis.taguchi import analyze
    from doe_sr.workflow.analyze import read_results_csv

    results = read_results_csv(Path(path), factors, response)
    return predict_at(analyze(results, factors, response, objective, pool=pool, impute=impute), levels)
