"""Keep the terminal for what researchers need: library chatter goes away.

TensorFlow's C++ side writes a few lines (oneDNN notice, "could not find cuda drivers",
"failed call to cuInit") to file descriptor 2 before its logging is configured, so
``TF_CPP_MIN_LOG_LEVEL`` cannot silence them. They are noise to a researcher reading a
study's progress, so the first import and the first device query run with fd 2
pointed at /dev/null. Python exceptions are unaffected (they are printed later, by
Python, after fd 2 is restored).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings


def quiet_libraries() -> None:
    """Environment and warning filters set once, before any heavy import."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    # Optuna flags its (stable for years) heartbeat helpers as experimental.
    warnings.filterwarnings("ignore", message=".*is experimental.*")


@contextlib.contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """Import TensorFlow (and probe its devices) once, quietly; return the module."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_to_devnull():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    # Python-side warnings such as "N calls triggered tf.function retracing": images of
    # different sizes are expected to trace anew, and the advice printed does not apply.
    tf.get_logger().setLevel("ERROR")
    return tf
