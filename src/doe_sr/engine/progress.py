"""What a researcher sees while a study runs: runs done/running/failed and an ETA.

On a terminal a rich ``Live`` panel redraws in place; in a log file (``nohup doe-sr
run ... > log``, a batch job) one line is printed whenever the counts change, because
redrawn panels make unreadable logs. The ETA comes from :meth:`Progress.eta`: the mean
duration of finished runs times the runs left, shared by the workers.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from doe_sr.engine.queue import Progress, State

STATES = tuple(State)  # display order: done, pruned, running, queued, failed, interrupted, pending
COLORS = {State.DONE: "green", State.PRUNED: "yellow", State.RUNNING: "cyan", State.QUEUED: "white",
          State.FAILED: "red",
          State.INTERRUPTED: "yellow", State.PENDING: "white"}


def duration(seconds: float | None) -> str:
    """``1h02m``, ``4m05s``, ``12s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def summary(progress: Progress, workers: int, elapsed: float, now: datetime | None = None) -> str:
    """One line: counts by state, elapsed time and ETA (plain text, for logs)."""
    counts = ", ".join(f"{progress.count(s)} {s}" for s in STATES if progress.count(s))
    return (f"{progress.settled}/{progress.total} done ({counts}); elapsed {duration(elapsed)}, "
            f"ETA {duration(progress.eta(workers, now))}")


def panel(progress: Progress, workers: int, elapsed: float, title: str):
    """The live view: a bar of finished runs, counts by state, the runs in flight."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    now = datetime.now()
    head = Text.assemble((f"{title}  ", "bold"), f"{progress.settled}/{progress.total} done   ",
                         *[(f"{progress.count(s)} {s}   ", COLORS[s]) for s in STATES if progress.count(s)],
                         f"elapsed {duration(elapsed)}   ETA {duration(progress.eta(workers, now))}")
    bar = ProgressBar(total=max(progress.total, 1), completed=progress.settled + progress.count(State.FAILED), width=60)
    table = Table(box=None, show_header=True, header_style="dim", pad_edge=False)
    for col in ("run", "rep", "state", "for", "worker / reason"):
        table.add_column(col)
    for s in progress.states:
        if s.state in (State.RUNNING, State.FAILED, State.INTERRUPTED):
            since = (now - datetime.fromisoformat(s.started)).total_seconds() if s.started else None
            table.add_row(str(s.run), str(s.replicate), Text(str(s.state), COLORS[s.state]),
                          duration(since) if s.state == State.RUNNING else "",
                          s.worker if s.state == State.RUNNING else s.reason[:70])
    # A ProgressBar ends without a line break; a grid row gives it its own line.
    bar_line = Table.grid()
    bar_line.add_row(bar)
    return Group(head, bar_line, table) if table.row_count else Group(head, bar_line)


def last_line(path: Path, size: int = 4096) -> str:
    """The last non-empty line of a worker's log: Keras's latest epoch line while a run trains."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1][:100] if lines else ""


class Monitor:
    """Shows a study's progress while workers run; ``update(progress)`` whenever it is polled.

    With ``logs`` (one per local worker), the live panel also shows each worker's latest
    log line, so the Keras epoch progress of the runs in flight stays visible.
    """

    def __init__(self, console, *, workers: int, title: str, logs: list[Path] = ()):
        self.console, self.workers, self.title = console, workers, title
        self.logs = list(logs)
        self.start = time.monotonic()
        self._live = None
        self._last_counts: tuple[int, ...] | None = None
        self._progress: Progress | None = None

    def __enter__(self) -> "Monitor":
        if self.console.is_terminal:
            from rich.live import Live

            self._live = Live(console=self.console, refresh_per_second=2, transient=False,
                              get_renderable=self._render)
            self._live.__enter__()
        return self

    def _render(self):
        from rich.text import Text

        if self._progress is None:
            return Text("starting workers ...")
        view = panel(self._progress, self.workers, time.monotonic() - self.start, self.title)
        lines = [f"worker {i}: {last_line(p)}" for i, p in enumerate(self.logs)]
        if lines:
            from rich.console import Group

            view = Group(view, Text("\n".join(lines), style="dim"))
        return view

    def update(self, progress: Progress) -> None:
        self._progress = progress
        if self._live is None:
            counts = tuple(progress.count(s) for s in STATES)
            if counts != self._last_counts:
                self._last_counts = counts
                self.console.print(summary(progress, self.workers, time.monotonic() - self.start))

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
