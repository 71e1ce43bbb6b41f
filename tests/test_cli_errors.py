"""Bad input through the real command: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, doe_sr



def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


GOOD = (REPO / "studies" / "quickstart.yaml").read_text()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("name: [unclosed\n", "malformed YAML"),
        (GOOD.replace("  loss: mae", "  loss: mae\n  momentum: 0.9"), "training.momentum: unknown key"),
        (GOOD.replace("[adadelta, adam, adagrad]", "[adadelta, adam, lion]"), "unknown optimizer 'lion'"),
        (GOOD.replace("[tanh, elu, relu]", "[tanh, elu, mish]"), "unknown activation 'mish'"),
        (GOOD.replace("levels: [32, 64, 128]", "levels: [32, 64]"), "design.factors.filters"),
        (GOOD.replace("patch_size: 64", "patch_size: 50"), "multiple of 32"),
    ],
)
def test_bad_study_file(tmp_path, text, needle):
    out = doe_sr("design", str(write(tmp_path, text)), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr


@pytest.mark.parametrize(
    "source, needle",
    [("does/not/exist", "does not exist"), ("empty", "no PNG/JPEG images")],
)
def test_bad_data_folder(tmp_path, source, needle):
    (tmp_path / "empty").mkdir()
    text = GOOD.replace("source: sample", f"source: {source}").replace("uri: mlruns", f"uri: {tmp_path / 'mlruns'}")
    out = doe_sr("run", str(write(tmp_path, text)), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert needle in out.stderr.strip().splitlines()[-1]


def test_bad_argument_exits_2(tmp_path):
    out = doe_sr("design", str(REPO / "studies" / "quickstart.yaml"), "--format", "xml", cwd=tmp_path)
    assert out.returncode == 2 and "invalid choice" in out.stderr and "Traceback" not in out.stderr


def test_design_json_on_the_seed_study(tmp_path):
    import json

    out = doe_sr("design", str(REPO / "studies" / "srnet_l9.yaml"), "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [r["factors"]["filters"] for r in doc["runs"]] == [32, 64, 128, 128, 32, 64, 64, 128, 32]


def test_unset_data_variable_is_named(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "DIV2K"}
    out = subprocess.run([sys.executable, "-m", "doe_sr.cli", "run", str(REPO / "studies" / "srnet_l9.yaml")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "environment variable DIV2K is not set" in out.stderr.strip().splitlines()[-1]


def _one_line(out: subprocess.CompletedProcess, needle: str) -> None:
    assert "Traceback" not in out.stdout + out.stderr, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and needle in lines[0], (out.returncode, out.stderr[-3000:])


@pytest.mark.parametrize("argv, needle", [
    (["status", "{study}", "--tracking-uri", "/proc/x"], "--tracking-uri '/proc/x': /proc/x is inside a system folder"),
    (["status", "{study}", "--tracking-uri", "bogus://nowhere"], "scheme 'bogus' is not one MLflow records to"),
])
def test_a_tracking_uri_option_is_checked_like_the_study_field(tmp_path, argv, needle):
    """--tracking-uri bypasses the schema: /proc/x made the store lock's mkdir raise (issue 9, item 7)."""
    study = write(tmp_path, GOOD.replace("uri: mlruns", f"uri: {tmp_path / 'mlruns'}"))
    _one_line(doe_sr(*[a.format(study=study) for a in argv], cwd=tmp_path), needle)


def test_a_study_with_an_unreachable_tracking_server_stops_within_the_stated_timeout(tmp_path):
    """`run` against http://127.0.0.1:9 retried for 4 minutes and printed 117 lines (issue 9, item 7)."""
    import time

    study = write(tmp_path, GOOD.replace("uri: mlruns", "uri: http://127.0.0.1:9"))
    start = time.monotonic()
    out = doe_sr("run", str(study), "--no-report", cwd=tmp_path)
    _one_line(out, "tracking URI http://127.0.0.1:9: no MLflow server answered within 20 s")
    assert time.monotonic() - start < 120  # the interpreter and imports, not MLflow's retries


@pytest.mark.parametrize("out_dir, needle", [("/proc/x", "cannot create the reports folder /proc/x/tiny"),
                                             ("/etc/passwd", "cannot create the reports folder /etc/passwd/tiny")])
def test_report_to_a_folder_that_cannot_exist_is_one_line(finished_tiny, out_dir, needle):
    _one_line(doe_sr("report", str(finished_tiny), "--out", out_dir, cwd=finished_tiny.parent), needle)
