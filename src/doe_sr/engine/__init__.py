"""The run engine: the Optuna queue, the executor of one trial, local workers.

* :mod:`~doe_sr.engine.queue`: the queue of (run, replicate) trials (the only Optuna user):
  storage, taking a trial exactly once, heartbeats, retries, states and progress.
* :mod:`~doe_sr.engine.executor`: one trial trained and recorded in MLflow (parent run,
  baseline, child runs), and the repair of what a killed worker left behind.
* :mod:`~doe_sr.engine.workers`: local worker processes, their GPUs, cores and logs.
* :mod:`~doe_sr.engine.lock`: the file lock under which local stores are created.
* :mod:`~doe_sr.engine.progress`: the live view of a running study.
* :mod:`~doe_sr.engine.study_engine`: :class:`Engine`, the queue and the executor of one study behind one object.
"""
