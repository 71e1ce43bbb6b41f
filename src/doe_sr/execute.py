"""Optuna as the run engine: one enqueued trial per (array run, replicate).

Why Optuna for a fixed design: its storages already solve what an overnight study
needs. A trial popped from the queue is taken atomically, so several workers, on one
machine or many, share one study without running a run twice; the storage persists,
so a study resumes after a crash; heartbeats mark the trial of a dead worker stale and
a retry callback puts it back in the queue. The design, not a sampler, decides the
parameters: every trial is enqueued up front with its run number and replicate as
user attributes.

States of a (run, replicate): done (a COMPLETE trial), queued (WAITING), running
(RUNNING), failed (FAIL with a reason: diverged, out of memory, an exception; re-run
only with ``retry_failed``) or interrupted (Ctrl-C or a dead worker: re-run by the next
``doe-sr run``). MLflow holds the record; Optuna holds the queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .design import Run, build_runs
from .errors import RunFailed, UserError
from .study import Study

log = logging.getLogger("doe_sr")

FAILURE = "failure"  # trial user attr: why a trial failed
INTERRUPTED = "interrupted"


def default_storage(study: Study) -> str:
    """The study's Optuna storage URL: ``execution.storage`` or SQLite beside the MLflow store."""
    if study.execution.storage:
        return study.execution.storage
    uri = study.tracking.uri
    folder = Path("mlruns") if "://" in uri else Path(uri).expanduser()
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def open_storage(url: str, study: Study):
    """An Optuna RDB storage with heartbeats, so the trial of a dead worker is retried.

    SQLite is the local default (safe for several processes on one machine: writes are
    serialised by SQLite's lock, with a generous timeout); any SQLAlchemy URL works,
    PostgreSQL above all for many machines.
    """
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return RDBStorage(
            url, engine_kwargs=engine_kwargs,
            heartbeat_interval=study.execution.heartbeat_interval,
            grace_period=study.execution.grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
        )
    except Exception as exc:  # bad URL, unreachable server, missing driver
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"execution.storage: cannot open Optuna storage {url!r} ({first}); "
                        "check the URL and that the database server is reachable") from None


@dataclass
class RunState:
    run: int
    replicate: int
    state: str  # done | queued | running | failed | interrupted | pending
    value: float | None = None
    reason: str = ""
    mlflow_run_id: str = ""
    seconds: float | None = None


@dataclass
class Progress:
    """Counts of a study's (run, replicate) pairs by state."""

    states: list[RunState] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for s in self.states if s.state == state)

    @property
    def total(self) -> int:
        return len(self.states)

    @property
    def done(self) -> int:
        return self.count("done")


class Engine:
    """Runs what is not complete yet of one study."""

    def __init__(self, study: Study, study_path: Path | None = None, *, storage: str | None = None,
                 tracking_uri: str | None = None):
        self.study = study
        self.study_path = study_path
        self.storage_url = storage or default_storage(study)
        self.tracking_uri = tracking_uri or study.tracking.uri
        self.runs: dict[int, Run] = {r.run: r for r in build_runs(study)}
        self._optuna = None
        self._tracker = None
        self._splits = None
        self.parent_id: str | None = None

    # -- storage -------------------------------------------------------------------
    @property
    def optuna_study(self):
        if self._optuna is None:
            self._optuna = self._open_optuna()
        return self._optuna

    def _open_optuna(self):
        import optuna

        storage = open_storage(self.storage_url, self.study)
        direction = "minimize" if self.study.response.objective == "smaller" else "maximize"
        ost = optuna.create_study(study_name=self.study.name, storage=storage, direction=direction,
                                  load_if_exists=True)
        fingerprint = self.study.fingerprint()
        stored = ost.user_attrs.get("fingerprint")
        if stored is None:
            ost.set_user_attr("fingerprint", fingerprint)
            ost.set_user_attr("array", self.study.design.array)
            # Enqueue in a stable order; a concurrent first start may enqueue twice, which
            # _enqueue_missing tolerates (a duplicate just finds its pair done and is skipped).
            if not ost.get_trials(deepcopy=False):
                for run in self.runs.values():
                    for rep in range(self.study.design.replicates):
                        ost.enqueue_trial({}, user_attrs={"run": run.run, "replicate": rep},
                                          skip_if_exists=False)
        elif stored != fingerprint:
            raise UserError(
                f"study {self.study.name!r} already exists in {self.storage_url} with another design or "
                "settings; give the changed study a new name, or delete its storage to start over")
        return ost

    @property
    def tracker(self):
        if self._tracker is None:
            from .tracking import Tracker

            self._tracker = Tracker(self.tracking_uri, self.study.experiment)
        return self._tracker

    # -- state ---------------------------------------------------------------------
    def progress(self) -> Progress:
        """State of every (run, replicate), from the Optuna trials (newest trial wins)."""
        from optuna.trial import TrialState

        by_pair: dict[tuple[int, int], RunState] = {}
        rank = {"done": 5, "running": 4, "queued": 3, "failed": 2, "interrupted": 1, "pending": 0}
        for t in self.optuna_study.get_trials(deepcopy=False):
            if "run" not in t.user_attrs:
                continue
            key = (int(t.user_attrs["run"]), int(t.user_attrs["replicate"]))
            reason = str(t.user_attrs.get(FAILURE, ""))
            if t.state == TrialState.COMPLETE:
                state = "done"
            elif t.state == TrialState.RUNNING:
                state = "running"
            elif t.state == TrialState.WAITING:
                state = "queued"
            elif t.state == TrialState.FAIL and reason and reason != INTERRUPTED:
                state = "failed"
            else:  # FAIL without a reason: its worker died (heartbeat) or was interrupted
                state, reason = "interrupted", reason or "worker stopped without finishing the run"
            seconds = None
            if t.datetime_start and t.datetime_complete:
                seconds = (t.datetime_complete - t.datetime_start).total_seconds()
            cand = RunState(key[0], key[1], state, t.value, reason, str(t.user_attrs.get("mlflow_run_id", "")), seconds)
            if key not in by_pair or rank[state] >= rank[by_pair[key].state]:
                by_pair[key] = cand
        states = []
        for run in self.runs:
            for rep in range(self.study.design.replicates):
                states.append(by_pair.get((run, rep), RunState(run, rep, "pending")))
        return Progress(states)

    def _requeue(self, retry_failed: bool) -> int:
        """Put back in the queue what an earlier session left interrupted (and failed, if asked)."""
        wanted = {"interrupted", "pending"} | ({"failed"} if retry_failed else set())
        n = 0
        for s in self.progress().states:
            if s.state in wanted:
                self.optuna_study.enqueue_trial({}, user_attrs={"run": s.run, "replicate": s.replicate},
                                                skip_if_exists=False)
                n += 1
        return n

    def _close_orphans(self) -> None:
        """MLflow runs left RUNNING by a worker that died: mark them KILLED with the reason."""
        from optuna.trial import TrialState

        for t in self.optuna_study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            run_id = t.user_attrs.get("mlflow_run_id")
            if run_id and self.tracker.status(run_id) == "RUNNING":
                self.tracker.finish(run_id, "KILLED", "worker stopped (crash or kill) before the run finished; "
                                                      "the run was queued again")

    # -- execution -----------------------------------------------------------------
    def ensure_parent(self) -> str:
        if self.parent_id is None:
            from .tracking import FINGERPRINT, environment

            params = {f"{section}.{k}": v for section in ("data", "model", "training", "response")
                      for k, v in getattr(self.study, section).model_dump(mode="json").items()}
            params.update({"design.array": self.study.design.array,
                           "design.replicates": self.study.design.replicates,
                           "design.factors": ", ".join(self.study.factor_names)})
            artifacts = [self.study_path] if self.study_path else []
            self.parent_id = self.tracker.parent_run(
                self.study.name, params=params, artifacts=artifacts,
                tags={FINGERPRINT: self.study.fingerprint(), **{f"env.{k}": v for k, v in environment().items()}})
            if "bicubic_test_psnr" not in self.tracker.client.get_run(self.parent_id).data.metrics:
                self.tracker.log_metrics(self.parent_id, self.bicubic_baseline())
        return self.parent_id

    def bicubic_baseline(self) -> dict[str, float]:
        """Bicubic's PSNR/SSIM on the study's val and test images: the floor every run must beat."""
        from .train import bicubic_metrics

        sp = self.splits()
        out = {}
        for part, pairs in (("val", sp.val), ("test", sp.test)):
            m = bicubic_metrics(pairs, scale=sp.scale)
            out.update({f"bicubic_{part}_psnr": m["psnr"], f"bicubic_{part}_ssim": m["ssim"]})
        return out

    def splits(self):
        if self._splits is None:
            from .data import load_splits

            self._splits = load_splits(self.study.data)
        return self._splits

    def run(self, *, retry_failed: bool = False, wait: bool = True, poll: float = 2.0,
            verbose: int | str = "auto", on_change: Callable[[Progress], None] | None = None) -> Progress:
        """Execute every queued (run, replicate); return the final progress.

        ``wait``: when the queue is empty but other workers still hold running trials,
        keep polling: if their heartbeats stop, their trials come back to the queue and
        this worker runs them.
        """
        import optuna
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        ost = self.optuna_study
        fail_stale_trials(ost)
        self._close_orphans()
        self._requeue(retry_failed)
        before = self.progress()
        if before.done == before.total:
            return before
        self.splits()  # fail on bad data before any trial is taken
        self.ensure_parent()
        while True:
            fail_stale_trials(ost)
            if not ost.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                if wait and ost.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    self._close_orphans()
                    time.sleep(poll)
                    continue
                break
            ost.optimize(lambda trial: self._objective(trial, verbose), n_trials=1, catch=(RunFailed,),
                         gc_after_trial=True)
            if on_change is not None:
                on_change(self.progress())
        self._close_orphans()
        del optuna
        return self.progress()

    def _objective(self, trial, verbose) -> float:
        import optuna

        if "run" not in trial.user_attrs:
            # Another worker took the last queued trial between our check and ask().
            trial.set_user_attr(FAILURE, "no work left")
            raise optuna.TrialPruned("no queued run left")
        run = self.runs[int(trial.user_attrs["run"])]
        rep = int(trial.user_attrs["replicate"])
        return self.execute(run, rep, trial=trial, verbose=verbose)

    def run_params(self, run: Run) -> dict[str, object]:
        cfg = self.study.run_config(run.factors)
        params: dict[str, object] = {name: self.study.factor(name).level_labels[run.codes[name]]
                                     for name in self.study.factor_names}
        params.update({f"model.{k}": v for k, v in cfg.model.model_dump(mode="json").items()})
        params.update({f"training.{k}": v for k, v in cfg.training.model_dump(mode="json").items()})
        params.update({"data.patch_size": self.study.data.patch_size, "data.scale": self.study.data.scale})
        return params

    def execute(self, run: Run, replicate: int, *, trial=None, verbose: int | str = "auto",
                role: str = "array_run", run_name: str | None = None) -> float:
        """Train one run, log it as a child run, return its response. Raises RunFailed."""
        from .tracking import REPLICATE, ROLE, ROW, RUN, SEED, TRIAL, environment
        from .train import device_info, train_run

        import tempfile

        splits = self.splits()
        parent = self.ensure_parent()
        seed = self.study.training.seed + replicate
        tags = {RUN: run.run, REPLICATE: replicate, ROW: run.row, SEED: seed, ROLE: role}
        if trial is not None:
            tags[TRIAL] = trial.number
        name = run_name or f"run {run.run:02d}" + (f" rep {replicate}" if self.study.design.replicates > 1 else "")
        child = self.tracker.start_child(parent, study=self.study.name, run_name=name,
                                         params=self.run_params(run), tags={k: str(v) for k, v in tags.items()})
        self.tracker.set_tags(child, {f"env.{k}": v for k, v in {**environment(), **device_info()}.items()})
        if trial is not None:
            trial.set_user_attr("mlflow_run_id", child)
        cfg = self.study.run_config(run.factors)
        try:
            with tempfile.TemporaryDirectory(prefix="doe-sr-") as tmp:
                result = train_run(
                    cfg, splits, patch_size=self.study.data.patch_size, seed=seed, workdir=Path(tmp),
                    on_epoch_end=lambda epoch, m: self.tracker.log_metrics(child, m, step=epoch), verbose=verbose)
                # per-epoch keys (val_psnr, ...) are already logged step by step; their final
                # value is the last step, so only the run-level numbers are added here
                self.tracker.log_metrics(child, {k: v for k, v in result.metrics.items() if k not in result.history})
                self.tracker.set_tags(child, {"env.precision": cfg.training.mixed_precision})
                if result.model_path is not None:
                    self.tracker.log_artifact(child, result.model_path, "model")
                per_image = Path(tmp) / "test_images.csv"
                import pandas as pd

                pd.DataFrame(result.per_image).to_csv(per_image, index=False)
                self.tracker.log_artifact(child, per_image)
                if self.study_path:
                    self.tracker.log_artifact(child, self.study_path)
        except KeyboardInterrupt:
            self.tracker.finish(child, "KILLED", "interrupted by the user (Ctrl-C)")
            if trial is not None:
                trial.set_user_attr(FAILURE, INTERRUPTED)
            raise
        except RunFailed as exc:
            self._fail(child, trial, str(exc))
            raise
        except Exception as exc:  # OOM (ResourceExhaustedError) and any bug inside one run
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if "ResourceExhausted" in type(exc).__name__ or "OOM" in str(exc)[:200]:
                reason = f"out of memory: {reason}"
            self._fail(child, trial, reason)
            raise RunFailed(reason) from exc
        self.tracker.finish(child, "FINISHED")
        value = result.metrics[self.study.response.metric]
        if trial is not None:
            trial.set_user_attr("val_psnr", result.metrics["val_psnr"])
        return float(value)

    def _fail(self, child: str, trial, reason: str) -> None:
        self.tracker.finish(child, "FAILED", reason)
        if trial is not None:
            trial.set_user_attr(FAILURE, reason[:1000])
        log.warning("run failed: %s", reason)
