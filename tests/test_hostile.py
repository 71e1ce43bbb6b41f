"""The hostile corpus: every broken input found by hostile testing, run through the real CLI.

Each folder under ``tests/hostile/`` is a category (study files, results tables, images,
weight files, archives, arguments) with a ``cases.yaml`` manifest. A case is:

```yaml
- id: utf16-bom                      # unique inside its folder
  files: {study.yaml: "name: x\n"}   # optional: text files written into the work folder
  make: utf16_study                  # optional: a function of the folder's make.py, called
                                     #   as make(work: Path) to write binary or large inputs
  argv: [design, "{work}/study.yaml"]  # the doe-sr arguments; {work} is a fresh folder
                                     #   holding the category's files, {data} ../shared/data
  exit: 2                            # the expected exit code (default 2)
  message: "not UTF-8"               # a regular expression the single stderr line must match
```

Every case must end with the expected exit code, exactly one line on stderr matching
``message``, and no traceback anywhere: a user reads one line that says what is wrong
and how to fix it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CORPUS = Path(__file__).parent / "hostile"


def _cases() -> list:
    params = []
    for manifest in sorted(CORPUS.glob("*/cases.yaml")):
        for case in yaml.safe_load(manifest.read_text()) or []:
            params.append(pytest.param(manifest.parent, case, id=f"{manifest.parent.name}/{case['id']}"))
    return params


CASES = _cases()


def _make(folder: Path, name: str, work: Path) -> None:
    spec = importlib.util.spec_from_file_location(f"hostile_make_{folder.name}", folder / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    getattr(module, name)(work)


def test_corpus_is_large_and_ids_are_unique():
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(ids) >= 100, f"the hostile corpus holds {len(ids)} cases; keep at least 100"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("folder,case", CASES)
def test_hostile_input(folder: Path, case: dict, tmp_path: Path, shared_data: Path):
    work = tmp_path / "work"
    work.mkdir()
    for src in folder.iterdir():  # committed inputs of the category (not the manifest or make.py)
        if src.name not in ("cases.yaml", "make.py", "__pycache__") and src.is_file():
            shutil.copy(src, work / src.name)
    for name, text in (case.get("files") or {}).items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text.replace("{work}", str(work)))
    if case.get("make"):
        _make(folder, case["make"], work)
    argv = [str(a).format(work=work, data=shared_data) for a in case["argv"]]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore", **(case.get("env") or {})}
    out = subprocess.run([sys.executable, "-m", "doe_sr.cli", *argv], cwd=work, capture_output=True, text=True,
                         timeout=case.get("timeout", 300), env=env, stdin=subprocess.DEVNULL)
    shown = f"exit {out.returncode}\nstdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stdout + out.stderr, shown
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown
    assert out.returncode == case.get("exit", 2), shown
    assert re.search(case["message"], lines[0], re.IGNORECASE), f"{case['message']!r} not in {lines[0]!r}\n{shown}"
