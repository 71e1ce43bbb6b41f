"""Shared fixtures and helpers: where the repository and the test data live, the CLI as a
user runs it, and quiet, deterministic TensorFlow.

Test modules import the helpers with ``from conftest import REPO, doe_sr`` (pytest puts
``tests/`` on ``sys.path``), so each is defined once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


def _cli_env(env: dict[str, str] | None) -> dict[str, str]:
    """The suite's environment plus ``env``, with TensorFlow's and Python's warnings quiet and
    ``doe-sr ui`` never opening a browser on a desktop."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore", "DOE_SR_NO_BROWSER": "1",
            **(env or {})}


def doe_sr(*args: str, cwd: Path, timeout: float = 1800, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess:
    """``doe-sr ARGS`` in a fresh interpreter, as a user runs it; output captured as text.

    ``timeout`` is a bound for a loaded 2-core machine, not an expected duration.
    """
    return subprocess.run([sys.executable, "-m", "doe_sr.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=_cli_env(env))


def _default_sigint() -> None:
    # A suite launched in the background (`bash .ci/run &`) inherits SIGINT ignored, and so
    # would `doe-sr run`, which rightly keeps it: a test's Ctrl-C would then do nothing.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_doe_sr(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``doe-sr ARGS`` in the background (stdout and stderr merged), with SIGINT at its
    default whatever the suite inherited, for tests that kill or interrupt it."""
    return subprocess.Popen([sys.executable, "-m", "doe_sr.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL, env=_cli_env(env),
                            preexec_fn=_default_sigint)


def wait_for(predicate, timeout: float = 300, what: str = "condition", *, proc: subprocess.Popen | None = None,
             interval: float = 0.2):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` s pass.

    Tests wait on observable states, never on fixed sleeps; with ``proc``, the wait
    fails at once, with its output, when that process ends first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (exit code {proc.returncode}) before {what}:\n"
                                 f"{proc.communicate()[0]}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_serving(port: int) -> bool:
    """Whether an MLflow server answers its health check on 127.0.0.1:``port``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only test data of ../shared/data (override with DOE_SR_DATA)."""
    path = Path(os.environ.get("DOE_SR_DATA", REPO.parent / "shared" / "data"))
    if not (path / "MANIFEST.md").exists():
        pytest.fail(f"test data not found at {path}; set DOE_SR_DATA to the shared/data folder")
    return path


TINY_STUDY = """
name: tiny
design:
  array: L9(3^4)
  factors:
    - name: learning_rate
      levels: [0.01, 0.001, 0.0001]
    - name: optimizer
      levels: [adadelta, adam, adagrad]
    - name: activation
      levels: [tanh, elu, relu]
    - name: filters
      levels: [4, 6, 8]
data:
  source: sample
  patch_size: 32
  max_side: 96
model:
  depth: 5
training:
  epochs: 2
  steps_per_epoch: 2
  batch_size: 2
tracking:
  uri: {mlruns}
execution:
  heartbeat_interval: 2
  grace_period: 6
"""


@pytest.fixture
def tiny_study(tmp_path: Path, monkeypatch) -> Path:
    """A 9-run study that trains in seconds: 32-pixel patches, 4 steps per run, 96-pixel images.

    Runs in a temporary working directory, so its mlruns/ and reports/ are thrown away.
    """
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_STUDY.format(mlruns=tmp_path / "mlruns"))
    return path


@pytest.fixture(scope="session")
def finished_tiny(tmp_path_factory) -> Path:
    """The tiny study, trained once per test session through the real CLI; returns its study file.

    Tests that only need *a* finished study share it (training it takes about a minute).
    They may add runs or reports to it but must not assume they are alone in it.
    """
    folder = tmp_path_factory.mktemp("finished_tiny")
    path = folder / "tiny.yaml"
    path.write_text(TINY_STUDY.format(mlruns=folder / "mlruns"))
    out = doe_sr("run", str(path), cwd=folder)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return path


def dihedral(img):
    """The 8 flips/rotations of an image, in the order the patch pipeline can produce them."""
    import numpy as np

    out = []
    for flip in (False, True):
        base = img[:, ::-1] if flip else img
        out += [np.rot90(base, k) for k in range(4)]
    return out
