"""The file lock under which one process creates a study's local stores.

Local SQLite stores are created or upgraded once, under a file lock in the study's
folder (:class:`StoreLock`), before anything else opens them, and the parent run is
found-or-created under the same lock, so concurrent ``doe-sr run`` of one study neither
race through schema migrations nor make two parents.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from doe_sr.engine.queue import local_folder
from doe_sr.study.schema import Study


class StoreLock:
    """An exclusive ``flock`` on ``path`` (re-entrant in one process); ``None`` locks nothing.

    Why: MLflow migrates a fresh SQLite store and Optuna creates its schema without any
    lock between processes, so two ``doe-sr run`` started together crashed in the
    migration (``duplicate column name``) or made two parent runs. Holding this lock
    while a process opens the stores and finds-or-creates the parent makes the first
    one do it and the others find it done. A server store (PostgreSQL, ``mlflow
    server``) needs no file lock: its own transactions serialise the writes.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self._depth = 0
        self._fd: int | None = None
        self._mutex = threading.RLock()

    def __enter__(self) -> "StoreLock":
        if self.path is None:
            return self
        self._mutex.acquire()
        if self._depth == 0:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                self._mutex.release()
                raise
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        if self.path is None:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        self._mutex.release()


def lock_path(study: Study, storage_url: str, tracking_uri: str) -> Path | None:
    """The lock file of the study's local SQLite stores (None when both stores are servers)."""
    if "://" not in tracking_uri:
        folder = Path(tracking_uri).expanduser().resolve()
    elif storage_url.startswith("sqlite") or tracking_uri.startswith("sqlite"):
        folder = local_folder(study)
    else:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return folder / ".doe-sr.lock"
