"""Browsing a study in the MLflow UI: what ``doe-sr ui [STUDY]`` serves and the link it prints.

Why a link rather than "open the UI and click the experiment": MLflow 3's UI treats an
experiment as a GenAI app unless told otherwise, and a click on it lands on an
"Overview" of traces, not on the runs. MLflow 3.17 takes the kind from the page's
``workflowType`` (the URL's, else the browser's last choice, GenAI by default); earlier
3.x UIs read the experiment tag ``mlflow.experimentKind``. The link names the
experiment's runs view with ``workflowType=machine_learning``, and the experiment is
tagged as model training (``custom_model_development``) for the UIs that read the tag,
so both land on the runs table. Its search filter keeps the study's own runs (an
experiment may hold several studies), so the parent run, with its children nested under
it, is the first row.

The browser is opened only where one can show the page: never when ``DOE_SR_NO_BROWSER``
is set (tests, scripts), nor on Linux without a display (a text-mode browser would take
over the terminal).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

#: set (to anything but "" or "0") to never open a browser
NO_BROWSER = "DOE_SR_NO_BROWSER"


@dataclass(frozen=True)
class UiPlan:
    """What ``doe-sr ui`` does: serve ``backend_uri`` with ``mlflow ui`` (``command``), or,
    when the study records to an MLflow server already, only point at it."""

    url: str  # the UI's home, http://host:port
    link: str  # the page to open: the study's runs view, or the home without a study
    backend_uri: str
    command: list[str] | None  # the ``mlflow ui`` command line (None: the server is already there)
    study: str | None = None
    experiment_id: str | None = None


def runs_link(url: str, experiment_id: str, study: str) -> str:
    """The MLflow UI's runs view of ``experiment_id`` at ``url``, filtered to ``study``'s runs.

    The query lives in the fragment (the UI routes with ``#/``); ``searchFilter`` is the
    UI's search box, ``workflowType`` its GenAI / machine-learning switch.
    """
    from doe_sr.tracking.store import STUDY

    query = urllib.parse.urlencode({"searchFilter": f"tags.`{STUDY}` = '{study}'",
                                    "workflowType": "machine_learning"}, quote_via=urllib.parse.quote)
    return f"{url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def plan_ui(study: str | Path | None = None, *, tracking_uri: str | None = None, host: str = "127.0.0.1",
            port: int = 5000) -> UiPlan:
    """What ``doe-sr ui`` serves and links to.

    Without ``study``: the whole store at ``tracking_uri`` (default ``mlruns``), linked at
    the UI's home. With a study file: its store (``tracking_uri`` overrides the study's,
    as ``--tracking-uri`` does), its experiment created if absent and tagged as model
    training, and the link to its runs. A bad study file or URI is a one-line
    :class:`~doe_sr.core.errors.UserError`.
    """
    from doe_sr.tracking.store import Tracker, resolve_uri

    url = f"http://{host}:{port}"
    name = experiment_id = None
    if study is None:
        backend, artifacts = resolve_uri(tracking_uri or "mlruns")
        link = url
    else:
        from doe_sr.study.schema import check_tracking_uri, load_study

        loaded = load_study(study)
        check_tracking_uri(tracking_uri)
        tracker = Tracker(tracking_uri or loaded.tracking.uri, loaded.experiment)
        tracker.mark_training_experiment()
        backend, artifacts, name, experiment_id = tracker.uri, tracker.artifact_root, loaded.name, tracker.experiment_id
        if backend.lower().startswith(("http://", "https://")):  # a server: it is the UI already
            return UiPlan(url=backend.rstrip("/"), link=runs_link(backend, experiment_id, name), backend_uri=backend,
                          command=None, study=name, experiment_id=experiment_id)
        link = runs_link(url, experiment_id, name)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", backend, "--host", host,
               "--port", str(port)]
    if artifacts:
        command += ["--default-artifact-root", artifacts]
    return UiPlan(url=url, link=link, backend_uri=backend, command=command, study=name, experiment_id=experiment_id)


def browser_available() -> bool:
    """Whether a browser can show a page here (see the module's note)."""
    if os.environ.get(NO_BROWSER, "") not in ("", "0"):
        return False
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    return True


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5):
            return True
    except OSError:
        return False


def open_when_serving(plan: UiPlan, *, timeout: float = 180.0) -> threading.Thread | None:
    """Open ``plan.link`` in a browser once the UI answers (in a daemon thread, as
    ``mlflow ui`` starts in the foreground); None when no browser is available."""
    if not browser_available():
        return None

    def _open() -> None:
        import webbrowser

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _serving(plan.url):
                webbrowser.open(plan.link)
                return
            time.sleep(0.5)

    thread = threading.Thread(target=_open, name="doe-sr-ui-browser", daemon=True)
    thread.start()
    return thread
