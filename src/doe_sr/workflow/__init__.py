"""What a user does with a study, callable from Python: every CLI command is a call of one
of these plus printing, so a notebook gets the same behaviour as ``doe-sr``.

>>> from doe_sr.workflow import open_study, run_study, analyze_study, write_study_report
>>> engine = open_study("studies/quickstart.yaml")
>>> run_study(engine, workers=2)                  # doe-sr run
>>> analyzed = analyze_study(engine, pool="auto")  # doe-sr analyze
>>> write_study_report(engine)                     # doe-sr report
>>> refined = refine_study(engine, trials=20)      # doe-sr refine

The names are loaded on first use (PEP 562), so ``import doe_sr.workflow`` costs nothing
and a command that needs one step never imports the others' libraries (pandas,
TensorFlow, MLflow).
"""

from __future__ import annotations

import importlib

#: public name -> the module that defines it
_EXPORTS = {
    "open_study": "session", "save_study": "session", "array_results": "session", "design_frame": "session",
    "run_study": "run", "work": "run", "study_status": "run",
    "analyze_study": "analyze", "analyze_csv": "analyze",
    "predict_study": "predict", "predict_csv": "predict",
    "confirm_optimum": "confirm",
    "validate_study": "validate", "work_validation": "validate",
    "refine_study": "refine", "work_refine": "refine",
    "write_study_report": "report",
    "compare_study": "compare", "make_upscaler": "compare",
    "diagnose": "doctor",
    "plan_ui": "ui", "runs_link": "ui",
    "publish_analysis": "publish",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
