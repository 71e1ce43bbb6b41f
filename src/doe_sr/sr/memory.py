"""Peak memory of training one run: the cost side of a quality-against-cost study.

What is measured is the peak of TensorFlow's own allocator on the device that trains
(``GPU:0`` or ``CPU:0``), reset when training starts: the weights, optimizer state,
activations and gradients of the network, which is what limits a batch size or a
network. It is the same quantity on a CPU and a GPU, and it does not depend on what ran
before in the same worker process.

Why not the process's resident memory: measured that way (a thread sampling it), the
same EDSR run peaked at 91 MB in a fresh process and at 53 MB after an SR-NET run in the
same process, because the allocator reuses what the earlier run freed, and the first
run of a process also pays one-time costs (kernels, traced functions). The resident
memory stays as the fallback where the allocator keeps no statistics: its peak growth
over the level when training started.

Linux reads ``/proc/self/statm``; elsewhere the resident peak of ``getrusage`` stands in
(it never decreases, so it measures a new high only).
"""

from __future__ import annotations

import os
import resource
import sys
import threading

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """The process's resident memory now (its peak so far where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _tf_device():
    """The TensorFlow device whose allocator keeps statistics (``/device:GPU:0`` or
    ``/device:CPU:0``), or None."""
    try:
        import tensorflow as tf
    except ImportError:
        return None
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if not devices:
        return None
    try:
        tf.config.experimental.reset_memory_stats(devices[0].name)
        tf.config.experimental.get_memory_info(devices[0].name)
    except (ValueError, RuntimeError):
        return None
    return devices[0].name


def _release_free_memory() -> None:
    """Give memory freed by earlier runs back to the system before the baseline is read.

    Why: a worker trains runs one after another, and glibc's malloc keeps what a finished
    run freed; the next run reuses it without the resident set growing, so its measured
    peak would depend on what ran before it in the same process. ``malloc_trim(0)`` hands
    the free pages back (glibc only; elsewhere this does nothing but collect garbage).
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Context manager; ``megabytes`` is the peak memory used inside it (see the module).

    >>> with PeakMemory() as peak:
    ...     model.fit(...)
    >>> peak.megabytes
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.megabytes = 0.0
        self.where = "resident"
        self._stop = threading.Event()
        self._peak = 0
        self._base = 0
        self._thread: threading.Thread | None = None
        self._gpu = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, resident_bytes())

    def __enter__(self) -> "PeakMemory":
        self._gpu = _tf_device()
        if self._gpu is not None:
            import tensorflow as tf

            self.where = "allocator"
            tf.config.experimental.reset_memory_stats(self._gpu)
            return self
        _release_free_memory()
        self._base = self._peak = resident_bytes()
        self._thread = threading.Thread(target=self._sample, name="doe-sr-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._gpu is not None:
            import tensorflow as tf

            self.megabytes = tf.config.experimental.get_memory_info(self._gpu)["peak"] / 2**20
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._peak = max(self._peak, resident_bytes())
        self.megabytes = max(0, self._peak - self._base) / 2**20
