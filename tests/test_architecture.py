"""The layers in pyproject.toml's import-linter contracts hold, and the check has teeth:
an ``import mlflow`` slipped into the analysis breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from conftest import REPO


def run_lint(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` (installed beside this Python) on the package under ``src``, with the
    project's contracts; no cache, so a changed file is always read."""
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--no-cache", str(REPO / "pyproject.toml")], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_contracts(tmp_path):
    out = run_lint(REPO / "src", tmp_path)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "BROKEN" not in out.stdout and "KEPT" in out.stdout


def test_an_analysis_that_imports_mlflow_breaks_a_contract(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "doe_sr", src / "doe_sr", ignore=shutil.ignore_patterns("__pycache__"))
    module = src / "doe_sr" / "analysis" / "taguchi.py"
    module.write_text(module.read_text() + "\n\ndef _leak():\n    import mlflow  # noqa: F401\n")
    out = run_lint(src, tmp_path)
    assert out.returncode != 0
    assert "doe_sr.analysis is not allowed to import mlflow" in out.stdout, out.stdout[-4000:]


def test_the_workflow_api_resolves_every_name_without_tensorflow(tmp_path):
    """``doe_sr.workflow`` is the notebook API: each public name is a callable, and reaching
    them all imports neither TensorFlow nor Keras (they load when a network is built)."""
    code = ("import sys, doe_sr.workflow as w\n"
            "missing = [n for n in w.__all__ if not callable(getattr(w, n))]\n"
            "print(missing, sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] []"
