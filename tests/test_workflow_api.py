"""The Python API is the CLI without the printing: the same study analysed through
``doe_sr.workflow`` and through ``doe-sr analyze`` gives the same JSON."""

from __future__ import annotations

import json

from conftest import doe_sr


def test_analyze_study_from_python_equals_the_command(finished_tiny):
    from doe_sr.workflow import analyze_study, array_results, open_study

    engine = open_study(finished_tiny)
    assert len(array_results(engine)) == 9
    from_python = json.loads(json.dumps(analyze_study(engine, pool="auto").to_dict()))
    out = doe_sr("analyze", str(finished_tiny), "--pool", "auto", "--format", "json", cwd=finished_tiny.parent)
    assert out.returncode == 0, out.stderr
    from_cli = json.loads(out.stdout)
    assert from_python == from_cli
    assert from_python["optimum"] and from_python["anova"]
