"""Executing one trial: train one (run, replicate), record it in MLflow, tell the queue.

The executor owns the MLflow side of a study: its parent run (params, environment, the
bicubic baseline, the images as a dataset input, the study's description; RUNNING while
a session works on the study, see :meth:`Executor.start_parent`), one child run per
trial, named by its levels (:meth:`doe_sr.study.design.Run.label`), and the repair of
what a killed worker left behind. It talks to the Optuna queue only through
:mod:`doe_sr.engine.queue` and never imports Optuna itself.

Two stores cannot be written in one transaction, so a worker killed between two writes
leaves them disagreeing; each child run is therefore tagged with its trial, its (run,
replicate) and its worker (``host:pid``), and the handshake is recoverable from either
side (:meth:`Executor.close_orphans`, :meth:`Executor.adopt`): a FINISHED child whose
trial was never told complete is adopted instead of trained again, and a RUNNING child
whose worker is gone is closed as KILLED, found by its tags.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from doe_sr.core.errors import RunFailed, TrialPruned, UserError
from doe_sr.engine.queue import (ADOPTED, FAILURE, INTERRUPTED, Campaign, Progress, Queue, State, Taken, worker_gone,
                                 worker_id)
from doe_sr.study.design import Run
from doe_sr.study.schema import Study

log = logging.getLogger("doe_sr")

#: test-only: ``after-child-created`` or ``after-child-finished`` makes a worker SIGKILL itself
#: at that point, to reproduce the windows between the MLflow and Optuna writes
TEST_DIE_AT = "DOE_SR_TEST_DIE_AT"
DATA_TAG = "doe_sr.data_digest"  # the study's data digest as a tag of the parent and of every child
TRIAL_STATE_TAG = "doe_sr.trial_state"  # PRUNED on a refinement child the pruner stopped (MLflow status KILLED)


def _test_die_at(point: str) -> None:
    """Test-only hook: die by SIGKILL at ``point`` (see ``TEST_DIE_AT``) to reproduce a kill window."""
    if os.environ.get(TEST_DIE_AT) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _ignore_sigint() -> None:
    """A second Ctrl-C must not interrupt the bookkeeping of the first."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class Executor:
    """Trains the trials of one study and keeps its MLflow record.

    ``lock`` (see :class:`doe_sr.engine.lock.StoreLock`) is held while the MLflow store
    is created or migrated and while the parent run is found or created.
    """

    #: ``doe-sr run --accept-new-data``: go on with images other than the finished runs used.
    accept_new_data = False

    def __init__(self, study: Study, queue: Queue, *, runs: dict[int, Run], tracking_uri: str,
                 study_path: Path | None = None, lock: AbstractContextManager | None = None):
        self.study, self.queue, self.runs = study, queue, runs
        self.campaign: Campaign = queue.campaign
        self.tracking_uri = tracking_uri
        self.study_path = study_path
        self.lock = lock if lock is not None else nullcontext()
        self.parent_id: str | None = None
        self._tracker = None
        self._splits = None

    @property
    def tracker(self):
        if self._tracker is None:
            from doe_sr.tracking.store import Tracker

            with self.lock:  # one process creates or migrates a local MLflow store
                self._tracker = Tracker(self.tracking_uri, self.study.experiment)
        return self._tracker

    # -- one taken trial -----------------------------------------------------------------
    def run_taken(self, taken: Taken, verbose: int | str = "auto") -> None:
        """Execute one taken trial under a heartbeat and tell the queue how it ended."""
        queue = self.queue
        with queue.heartbeat(taken):
            other = queue.duplicate_of(taken)
            if other is not None:
                queue.step_aside(taken, other)
                return
            adopted = self.adopt(taken)
            if adopted is not None:
                queue.complete(taken, adopted)
                return
            run = self._sampled_run(taken) if self.campaign.sampled else self.runs[taken.run]
            try:
                value = self.execute(run, taken.replicate, trial=taken, verbose=verbose,
                                     **self._campaign_options(taken, run))
            except TrialPruned as exc:  # recorded by execute (MLflow KILLED + doe_sr.trial_state); settled
                queue.prune(taken, str(exc))
                return
            except KeyboardInterrupt:
                _ignore_sigint()
                taken.set_user_attr(FAILURE, INTERRUPTED)
                queue.fail(taken)
                raise
            except RunFailed:  # recorded by execute (MLflow tag + trial attr); the study goes on
                queue.fail(taken)
                return
            except BaseException:
                # Not the run's fault (MLflow or the database went away): leave the pair
                # interrupted so the next session runs it again, and stop this worker.
                queue.fail(taken)
                raise
            queue.complete(taken, value)

    def _campaign_options(self, taken: Taken, run: Run) -> dict:
        """How a trial of a campaign other than the array is recorded: its role, tags and name."""
        camp = self.campaign
        if camp.kind == "array":
            return {}
        shown = Run(run.run, {k: _short_number(v) for k, v in run.factors.items()}, run.codes) if camp.sampled else run
        return {"role": camp.role, "tags": dict(camp.tags),
                "run_name": shown.label(taken.replicate if camp.replicates > 1 else None, prefix=camp.label_prefix)}

    def _sampled_run(self, taken: Taken) -> Run:
        """A refinement trial's run: its settings sampled now, held settings at the Taguchi optimum.

        Factors come first in the study's order (held or searched), then searched
        settings the array did not vary.
        """
        search = self.campaign.search
        values = {**search.fixed, **self.queue.suggest(taken)}
        order = [f for f in self.study.factor_names if f in values] + [k for k in values
                                                                         if k not in self.study.factor_names]
        return Run(run=taken.run, factors={k: values[k] for k in order}, codes={})

    def _own(self, children) -> list:
        """The children of this campaign among ``children`` of its role (its tags tell it from others)."""
        tags = self.campaign.tags
        return [c for c in children if all(c.tags.get(k) == v for k, v in tags.items())]

    def adopt(self, taken: Taken) -> float | None:
        """Take over a FINISHED child of ``taken``'s pair instead of training it again; its response.

        Why: a worker killed after its child run was marked FINISHED but before Optuna
        heard of it leaves a pair with a result in MLflow and no COMPLETE trial; training
        it again gave the pair two FINISHED children, which the analysis counted as two
        replicates. ``taken`` is held exclusively (and :meth:`Queue.duplicate_of` found no
        COMPLETE trial of the pair), so no other worker adopts or trains the pair now.
        """
        metric = self.study.response.metric
        for child in self._own(self.tracker.runs(self.study.name, role=self.campaign.role, status="FINISHED",
                                                 run=taken.run, replicate=taken.replicate)):
            value = child.metrics.get(metric)
            if value is None:
                continue
            taken.set_user_attr("mlflow_run_id", child.run_id)
            taken.set_user_attr(ADOPTED, True)
            if "val_psnr" in child.metrics:
                taken.set_user_attr("val_psnr", child.metrics["val_psnr"])
            log.warning("run %s replicate %s: adopting its finished MLflow run %s (its worker stopped before the "
                        "queue recorded it)", taken.run, taken.replicate, child.run_id)
            return float(value)
        return None

    def reuse_recorded(self, progress: Progress) -> dict[str, int]:
        """Pairs of this campaign already in the record are done without training; how many, by role.

        A pair's result is taken from a FINISHED child of the study (an array run, or a
        run of any validation set) with the same levels and replicate, trained with the
        same seed (``training.seed + replicate``, the array's rule) on the same images
        under the same parent: the run is the same run, so training it again would only
        spend time. Called under the store lock before workers start (see
        :meth:`doe_sr.engine.study_engine.Engine.prepare`).
        """
        from doe_sr.tracking.store import REPLICATE, SEED

        camp = self.campaign
        wanted = {(s.run, s.replicate) for s in progress.states if s.state not in (State.DONE, State.RUNNING)}
        if camp.kind != "validation" or not wanted:  # the array has nothing to reuse; a refinement samples anew
            return {}
        factors = self.study.factor_names
        labels = {f: self.study.factor(f).level_labels for f in factors}
        by_levels = {tuple(labels[f][r.codes[f]] for f in factors): r.run for r in camp.runs.values()}
        metric, digest, parent = self.study.response.metric, self.splits().identity.digest, self.ensure_parent()
        counts: dict[str, int] = {}
        for role in ("array_run", camp.role):  # the array's own runs first
            for child in self.tracker.runs(self.study.name, role=role, status="FINISHED"):
                rep = child.tags.get(REPLICATE, "")
                run = by_levels.get(tuple(child.params.get(f) for f in factors))
                if metric not in child.metrics or not rep.isdigit() or run is None or (run, int(rep)) not in wanted:
                    continue
                if (child.tags.get(SEED) != str(self.study.training.seed + int(rep))
                        or child.tags.get(DATA_TAG, digest) != digest
                        or child.tags.get("mlflow.parentRunId", parent) != parent):
                    continue
                if self.queue.complete_reused(run, int(rep), float(child.metrics[metric]), child.run_id, role):
                    wanted.discard((run, int(rep)))
                    counts[role] = counts.get(role, 0) + 1
        return counts

    # -- repairs and checks before workers start ---------------------------------------------
    def close_orphans(self) -> None:
        """MLflow runs left RUNNING by a worker that died: mark them KILLED with the reason.

        A child is orphaned when its trial is no longer RUNNING, or its worker was on this
        host and is dead. A child whose trial still runs with a live heartbeat is never
        touched: its worker is training it.
        """
        from doe_sr.tracking.store import TRIAL as TRIAL_TAG
        from doe_sr.tracking.store import WORKER as WORKER_TAG

        reason = "worker stopped (crash or kill) before the run finished; the run was queued again"
        trials = self.queue.trials()
        for t in trials:
            if t.failed and t.mlflow_run_id and self.tracker.status(t.mlflow_run_id) == "RUNNING":
                self.tracker.finish(t.mlflow_run_id, "KILLED", reason)
        # By tag: a worker killed between creating its child and storing the child's id on
        # the trial left a RUNNING child that no trial names.
        by_number = {t.number: t for t in trials}
        for child in self._own(self.tracker.runs(self.study.name, role=self.campaign.role, status="RUNNING")):
            number = child.tags.get(TRIAL_TAG, "")
            trial = by_number.get(int(number)) if number.isdigit() else None
            if worker_gone(child.tags.get(WORKER_TAG, "")) or (trial is not None and not trial.running):
                self.tracker.finish(child.run_id, "KILLED", reason)

    def check_record(self, progress: Progress) -> None:
        """Refuse a queue whose finished runs the MLflow store no longer holds.

        Why refuse rather than train them again: the usual cause is a ``tracking.uri``
        pointing at another store (a typo, another server), and training there would
        split the study's record silently; when the store really was deleted, the user
        says so by moving the queue away too.
        """
        recorded = {s.mlflow_run_id for s in progress.states if s.state == State.DONE and s.mlflow_run_id}
        if not recorded:
            return
        roles = {self.campaign.role} | ({"array_run", "validation"} if self.campaign.kind != "array" else set())
        present = {r.run_id for role in sorted(roles)
                   for r in self.tracker.runs(self.study.name, role=role, status="FINISHED")}
        missing = recorded - present
        if missing:
            url = self.queue.url
            sqlite = url.startswith("sqlite:///")
            where = url.removeprefix("sqlite:///") if sqlite else "the Optuna storage"
            fresh = f"move {where} away" if sqlite else "delete the study from the Optuna storage"
            raise UserError(
                f"study {self.study.name!r}: {len(missing)} of the {len(recorded)} finished runs recorded in "
                f"{where} are missing from the MLflow store {self.tracker.uri} (deleted, or tracking.uri points "
                f"elsewhere); point tracking.uri at the store that holds them, or {fresh} (or give the study "
                "a new name) to train them again")

    # -- the parent run ------------------------------------------------------------------
    def ensure_parent(self) -> str:
        """The study's MLflow parent run, created on first use after the checks that need the data.

        Nothing is trained or recorded before them: the patch must fit every training
        image, and the images must be those the study's finished runs used.
        """
        if self.parent_id is None:
            from doe_sr.sr.data import check_patch_size
            from doe_sr.tracking.store import FINGERPRINT, ROLE, environment

            splits = self.splits()
            for patch in sorted({self.study.run_config(r.factors).patch_size for r in self.runs.values()}
                                | {self.study.data.patch_size}):
                check_patch_size(splits, patch, self.study.data.max_side)
            data_changed = self.queue.check_data(splits.identity.digest, accept_new_data=self.accept_new_data)
            fingerprint = self.study.fingerprint()
            old = self.tracker.find_parent(self.study.name)
            if old is not None and self.tracker.run(old).tags.get(FINGERPRINT) != fingerprint:
                # The queue of an earlier design was replaced (none of its runs finished, see
                # Queue._open); its parent's params describe that design, so a new parent
                # describes this one. The old parent keeps its failed children.
                self.tracker.set_tags(old, {ROLE: "superseded_parent"})
                self.tracker.end_parent(old, "FAILED", "superseded: the study was corrected before any run "
                                                       "finished; a new parent describes the corrected study")
            params = {f"{section}.{k}": v for section in ("data", "training", "response")
                      for k, v in getattr(self.study, section).model_dump(mode="json").items()}
            params.update({f"model.{k}": v for k, v in self.study.model_params().items()})
            params.update({"design.array": self.study.design.array,
                           "design.replicates": self.study.design.replicates,
                           "design.factors": ", ".join(self.study.factor_names)})
            artifacts = [self.study_path] if self.study_path else []
            self.parent_id = self.tracker.parent_run(
                self.study.name, params=params, artifacts=artifacts, description=self.study.description,
                tags={FINGERPRINT: fingerprint, **{f"env.{k}": v for k, v in environment().items()}})
            if data_changed or "bicubic_test_psnr" not in self.tracker.run(self.parent_id).metrics:
                self.tracker.log_metrics(self.parent_id, self.bicubic_baseline())
            self._log_data(self.parent_id)
        return self.parent_id

    def check_models(self) -> None:
        """Build each distinct network of the runs once and run it on a dummy input, before
        anything is trained or recorded (issue 11): a builder that raises or gives the wrong
        output fails the study here with one line (exit code 2), not in every run."""
        import json
        import subprocess
        import sys

        runs = {self.study.run_config(r.factors).model.model_dump_json(): None for r in self.runs.values()}
        request = json.dumps({"scale": self.study.data.scale, "runs": [json.loads(r) for r in runs]})
        # A child process, on the CPU: this session must not import TensorFlow, which would
        # take a GPU's memory from the workers (and seconds from `doe-sr run`'s first line).
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        out = subprocess.run([sys.executable, "-m", "doe_sr.sr.models.registry"], input=request, text=True,
                             capture_output=True, env=env, timeout=3600)
        answer = next((line for line in reversed(out.stdout.splitlines()) if line.startswith("{")), None)
        if out.returncode == 2 and answer:
            raise UserError(json.loads(answer)["error"])
        if out.returncode != 0:
            tail = " ".join(out.stderr.strip().splitlines()[-1:]) or f"exit code {out.returncode}"
            raise RuntimeError(f"checking the study's networks failed: {tail}")

    def start_parent(self) -> str:
        """The parent run marked RUNNING as a session starts work on the study (see
        :meth:`doe_sr.engine.study_engine.Engine.prepare`); its id.

        Why: the parent is the study in the MLflow UI, so it runs while any of its runs
        may (its end is set by :meth:`end_parent`); it carries the study's description.
        """
        parent = self.ensure_parent()
        self.tracker.start_parent(parent, self.study.description)
        return parent

    def end_parent(self, status: str, reason: str | None = None) -> bool:
        """End the parent run in ``status`` (FINISHED, FAILED, KILLED) now, if this process
        found or created it and it is still RUNNING; whether it did."""
        return self.parent_id is not None and self.tracker.end_parent(self.parent_id, status, reason)

    def _log_data(self, run_id: str) -> None:
        """Record the study's images on an MLflow run: a dataset input carrying the digest, and a tag."""
        ident = self.splits().identity
        self.tracker.log_dataset(run_id, name=ident.name, digest=ident.digest, source=ident.source,
                                 schema=ident.schema(), profile=ident.profile())
        self.tracker.set_tags(run_id, {DATA_TAG: ident.digest})

    def bicubic_baseline(self) -> dict[str, float]:
        """Bicubic's PSNR/SSIM on the study's val and test images: the floor every run must beat."""
        from doe_sr.sr.train import bicubic_metrics

        sp = self.splits()
        out = {}
        for part, pairs in (("val", sp.val), ("test", sp.test)):
            m = bicubic_metrics(pairs, scale=sp.scale)
            out.update({f"bicubic_{part}_psnr": m["psnr"], f"bicubic_{part}_ssim": m["ssim"]})
        return out

    def splits(self):
        if self._splits is None:
            from doe_sr.sr.data import load_splits

            self._splits = load_splits(self.study.data)
        return self._splits

    def run_params(self, run: Run) -> dict[str, object]:
        """The child run's MLflow params: its factors' levels as written in the study, then
        every setting of its network and training. A factor named by its path
        (``training.learning_rate``) is one param, carrying the level as written (``1e-3``),
        which is how the analysis matches runs to levels."""
        cfg = self.study.run_config(run.factors)
        levels: dict[str, object] = {name: (self.study.factor(name).level_labels[run.codes[name]]
                                            if name in run.codes else run.factors[name])
                                     for name in self.study.factor_names if name in run.codes or name in run.factors}
        params: dict[str, object] = {f"model.{k}": v for k, v in cfg.model.params().items()}
        params.update({f"training.{k}": v for k, v in cfg.training.model_dump(mode="json").items()})
        params.update({"data.patch_size": cfg.patch_size, "data.scale": self.study.data.scale})
        return {**levels, **{k: v for k, v in params.items() if k not in levels}}

    # -- training one run ----------------------------------------------------------------
    def execute(self, run: Run, replicate: int, *, trial: Taken | None = None, verbose: int | str = "auto",
                role: str = "array_run", run_name: str | None = None, tags: dict[str, str] | None = None) -> float:
        """Train one run, log it as a child run, return its response. Raises RunFailed.

        ``tags``: more tags of the child (a validation run's ``doe_sr.validation``).
        """
        from doe_sr.tracking.store import REPLICATE, ROLE, ROW, RUN, SEED, TRIAL, WORKER, environment
        from doe_sr.sr.train import device_info, train_run

        import tempfile

        splits = self.splits()
        parent = self.ensure_parent()
        seed = self.study.training.seed + replicate
        tags = {**(tags or {}), RUN: run.run, REPLICATE: replicate, ROW: run.row, SEED: seed, ROLE: role,
                WORKER: worker_id()}
        if trial is not None:
            tags[TRIAL] = trial.number
        name = run_name or run.label(replicate if self.campaign.replicates > 1 else None)
        child = self.tracker.start_child(parent, study=self.study.name, run_name=name,
                                         params=self.run_params(run), tags={k: str(v) for k, v in tags.items()})
        self._log_data(child)  # issue 9 item 1: the images this run trains on (MLflow dataset input)
        _test_die_at("after-child-created")
        env = {**environment(), **device_info(self.study.training.mixed_precision)}
        self.tracker.set_tags(child, {f"env.{k}": v for k, v in env.items()})
        if trial is not None:
            trial.set_user_attr("mlflow_run_id", child)
        cfg = self.study.run_config(run.factors)
        try:
            with tempfile.TemporaryDirectory(prefix="doe-sr-") as tmp:
                result = train_run(
                    cfg, splits, patch_size=cfg.patch_size, seed=seed, workdir=Path(tmp),
                    on_epoch_end=self._epoch_hook(child, trial), verbose=verbose)
                # per-epoch keys (val_psnr, ...) are already logged step by step; their final
                # value is the last step, so only the run-level numbers are added here
                self.tracker.log_metrics(child, {k: v for k, v in result.metrics.items() if k not in result.history})
                self.tracker.set_tags(child, result.tags)
                if result.model_path is not None:
                    self.tracker.log_artifact(child, result.model_path, "model")
                per_image = Path(tmp) / "test_images.csv"
                import pandas as pd

                pd.DataFrame(result.per_image).to_csv(per_image, index=False)
                self.tracker.log_artifact(child, per_image)
                if self.study_path:
                    self.tracker.log_artifact(child, self.study_path)
                from doe_sr.analysis.degenerate import flag_tags  # issue 12: degenerate runs flagged (doe_sr.flag)

                self.tracker.set_tags(child, flag_tags(self.tracker.run(child).metrics, self.run_params(run),
                                                       self.tracker.run(parent).metrics))
        except KeyboardInterrupt:
            self._interrupted(child, trial)
            raise
        except TrialPruned as exc:
            self.tracker.set_tags(child, {TRIAL_STATE_TAG: "PRUNED"})
            self.tracker.finish(child, "KILLED", str(exc))
            raise
        except RunFailed as exc:
            self._fail(child, trial, str(exc))
            raise
        except Exception as exc:  # OOM (ResourceExhaustedError) and any bug inside one run
            if _interrupt_in(exc):  # Ctrl-C that landed inside a C call: an interruption, not a failure
                self._interrupted(child, trial)
                raise KeyboardInterrupt from exc
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if "ResourceExhausted" in type(exc).__name__ or "OOM" in str(exc)[:200]:
                reason = f"out of memory: {reason}"
            self._fail(child, trial, reason)
            raise RunFailed(reason) from exc
        self.tracker.finish(child, "FINISHED")
        _test_die_at("after-child-finished")
        value = result.metrics[self.study.response.metric]
        if trial is not None:
            trial.set_user_attr("val_psnr", result.metrics["val_psnr"])
        return float(value)

    def _epoch_hook(self, child: str, trial: Taken | None):
        """What happens after each epoch: its metrics logged (step = epoch) and, in a refinement,
        the response reported to the pruner, which may stop the run (:class:`TrialPruned`)."""
        metric = self.study.response.metric
        sampled = trial is not None and self.campaign.sampled
        pruner = self.campaign.search.pruner if sampled else "none"

        def hook(epoch: int, metrics: dict[str, float]) -> None:
            self.tracker.log_metrics(child, metrics, step=epoch)
            if sampled and pruner != "none" and metric in metrics and self.queue.report(trial, epoch, metrics[metric]):
                rule = ("worse than the median of earlier trials (the array's included) after the same epoch"
                        if pruner == "median" else "below the cut of its Hyperband bracket")
                raise TrialPruned(f"pruned after epoch {epoch + 1} by the {pruner} pruner: {metric} "
                                  f"{metrics[metric]:.4f} was {rule}")

        return hook

    def _interrupted(self, child: str, trial: Taken | None) -> None:
        """Record a run the user interrupted (Ctrl-C): its child KILLED, its trial marked interrupted."""
        _ignore_sigint()
        self.tracker.finish(child, "KILLED", "interrupted by the user (Ctrl-C)")
        if trial is not None:
            trial.set_user_attr(FAILURE, INTERRUPTED)

    def _fail(self, child: str, trial: Taken | None, reason: str) -> None:
        self.tracker.finish(child, "FAILED", reason)
        if trial is not None:
            trial.set_user_attr(FAILURE, reason[:1000])
        log.warning("run failed: %s", reason)


def _short_number(value: object) -> object:
    """A sampled float as a run's name shows it (4 significant digits); other values as they are."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def _interrupt_in(exc: BaseException) -> bool:
    """True when a KeyboardInterrupt lies in ``exc``'s chain (its cause or context).

    Why: Ctrl-C that arrives while NumPy or TensorFlow is inside a C function surfaces
    as ``SystemError: ... returned a result with an exception set`` (seen in CI), with the
    KeyboardInterrupt as its cause; recording that as the run's failure would make an
    interrupted run look failed, so ``doe-sr run`` would not redo it.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False

