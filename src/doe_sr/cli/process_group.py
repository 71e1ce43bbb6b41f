"""A child process tree that ends when the ``doe-sr`` process that started it ends.

Why: ``mlflow ui`` is not one process. It starts uvicorn, whose workers serve the
pages, and a job runner (huey consumer) beside them. When ``doe-sr ui`` simply ran
``mlflow ui`` as a child and was ended with SIGTERM, Python died at once and every one
of those processes stayed behind, still holding port 5000. Here the child starts in
a session of its own, so it and everything it starts share one process group, and:

- SIGTERM, SIGHUP or Ctrl-C reaching ``doe-sr`` ends the whole group: SIGTERM first,
  so MLflow shuts down cleanly, then SIGKILL for whatever is left after a bound;
- if ``doe-sr`` itself is killed outright (``kill -9``), Linux sends the child SIGTERM
  (``PR_SET_PDEATHSIG``); ``mlflow ui`` forwards it to its server, and its job runner
  watches the server and stops with it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGTERM when the parent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the signal handlers below still apply
            pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(proc: subprocess.Popen, *, grace: float = 15.0) -> None:
    """End ``proc`` and every process in its group: SIGTERM, then SIGKILL after ``grace`` s."""
    pgid = proc.pid  # the child leads its own session, so its pid is the group id
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(pgid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_group(cmd: Sequence[str], *, grace: float = 15.0) -> int:
    """Run ``cmd`` as its own process group until it exits or this process is told to stop.

    Returns the child's exit code, or 130 when a stop signal (Ctrl-C, SIGTERM, SIGHUP)
    ended it.
    """
    stopped: list[int] = []

    def _stop(signum, _frame):
        stopped.append(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, _stop) for s in _STOP_SIGNALS}
    proc = subprocess.Popen(list(cmd), start_new_session=True, preexec_fn=_die_with_parent)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        for s in _STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)  # a second signal must not cut the shutdown short
        stop_group(proc, grace=grace)
        return 130
    finally:
        if proc.poll() is None:
            stop_group(proc, grace=grace)
        for s, handler in previous.items():
            signal.signal(s, handler)
