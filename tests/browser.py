"""A real headless Chromium driven by selenium, and ``doe-sr ui`` served for it (issue 14).

Why a helper module: the browser test needs three pieces that have nothing to do with
what it checks: finding Debian's chromium and chromedriver (and saying plainly when
they are missing), starting the real ``doe-sr ui`` on a free port and ending its whole
process tree afterwards, and a folder for the screenshots CI keeps as artifacts.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import free_port, mlflow_serving, wait_for  # noqa: F401 - wait_for is re-exported to the tests

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: a desktop-sized window, so MLflow's runs table shows its columns instead of a phone layout
WINDOW = (1920, 1200)


def missing_browser() -> str | None:
    """Why no browser test can run here, or None when Chromium and its driver are installed."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).exists() or shutil.which(Path(p).name))]
    if missing:
        return (f"{' and '.join(missing)} not installed (Debian: apt-get install chromium chromium-driver); "
                "the real-browser test needs them")
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def _executable(path: str) -> str:
    return path if Path(path).exists() else shutil.which(Path(path).name)


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium with a fixed window; quit however the test ends.

    ``--no-sandbox`` because CI runs as root in a container; ``--disable-dev-shm-usage``
    because a container's /dev/shm is too small for the renderer. A private profile
    folder keeps parallel sessions apart.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="doe-sr-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _executable(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={profile}",
                "--no-first-run", "--no-default-browser-check", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=_executable(CHROMEDRIVER)), options=options)
    try:
        driver.set_window_size(*WINDOW)
        driver.set_page_load_timeout(120)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def artifacts_dir(repo: Path) -> Path:
    """Where screenshots go: ``$DOE_SR_TEST_ARTIFACTS`` (CI), else ``<repo>/test-artifacts/browser``."""
    folder = Path(os.environ.get("DOE_SR_TEST_ARTIFACTS") or repo / "test-artifacts" / "browser")
    folder.mkdir(parents=True, exist_ok=True)
    return folder





class UiServer:
    """``doe-sr ui`` running in its own session; its output is kept (it prints the link)."""

    def __init__(self, args: list[str], cwd: Path, port: int):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "doe_sr.cli", "ui", *args, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore",
                 "DOE_SR_NO_BROWSER": "1", "BROWSER": "true", "DISPLAY": ""},
            start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 240) -> None:
        """Until the server answers /health (MLflow takes 10-60 s on a loaded machine)."""
        wait_for(lambda: mlflow_serving(self.port) or self.proc.poll() is not None, timeout, "the MLflow UI to answer")
        if self.proc.poll() is not None:
            raise AssertionError(f"doe-sr ui exited with {self.proc.returncode} before serving:\n{self.output}")

    def printed_link(self) -> str | None:
        """The runs-view link ``doe-sr ui`` printed, if it printed one."""
        for line in self.lines:
            match = re.search(r"https?://\S+#/experiments/\S+", line)
            if match:
                return match.group(0).rstrip(".,)")
        return None

    def stop(self) -> None:
        """SIGTERM to the whole group (doe-sr ui, mlflow, uvicorn, job runner), SIGKILL after a bound."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=30)


@contextmanager
def doe_sr_ui(args: list[str], cwd: Path, timeout: float = 240) -> Iterator[UiServer]:
    """The real ``doe-sr ui ARGS`` on 127.0.0.1 and a free port, answering; stopped afterwards."""
    server = UiServer(args, cwd, free_port())
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop()
