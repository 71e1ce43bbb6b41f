"""Tables of a study's runs by state, for ``doe-sr run`` and ``doe-sr status``.

Why here: they turn the queue's :class:`~doe_sr.engine.queue.Progress` into rich
tables, which is printing, the CLI's part; the workflow returns the progress.
"""

from __future__ import annotations


def print_progress(engine, progress) -> None:
    """Every (run, replicate) in array order: its factor levels, state, response and reason."""
    from rich.table import Table

    from doe_sr.cli.main import _console

    study = engine.study
    t = Table(title=f"{study.name}: {progress.done}/{progress.total} runs done")
    for col in ("run", "rep", *[f.display for f in study.design.factors], "state", study.response.metric, "reason"):
        t.add_column(col)
    for s in progress.states:
        run = engine.runs[s.run]
        value = "" if s.value is None else f"{s.value:.3f}"
        t.add_row(str(s.run), str(s.replicate), *[str(run.factors[f]) for f in study.factor_names],
                  str(s.state), value, s.reason[:80])
    _console().print(t)


def status_table(engine, progress):
    """``doe-sr status``: the pairs by state, with time, worker and failure reason."""
    from rich.table import Table

    from doe_sr.engine.progress import COLORS, duration, summary
    from doe_sr.engine.queue import State

    from doe_sr.analysis.degenerate import LABELS

    t = Table(title=f"{engine.study.name}: " + summary(progress, 1, 0).split(";")[0])
    for col in ("state", "run", "rep", *[f.display for f in engine.study.design.factors],
                engine.study.response.metric, "flag", "time", "worker", "reason"):
        t.add_column(col)
    for s in progress.ordered():
        run = engine.runs[s.run]
        flag = getattr(s, "flag", "")  # set by doe_sr.workflow.run.study_status
        t.add_row(f"[{COLORS[s.state]}]{s.state}[/]", str(s.run), str(s.replicate),
                  *[str(run.factors[f]) for f in engine.study.factor_names],
                  "" if s.value is None else f"{s.value:.3f}", f"[yellow]{LABELS.get(flag, flag)}[/]" if flag else "",
                  duration(s.seconds) if s.seconds else "",
                  s.worker if s.state == State.RUNNING else "", s.reason)
    return t
