"""Bayesian refinement in Optuna terms: search space, sampler, pruner, warm start, importances.

Why a module of its own: ``doe-sr refine`` runs on the engine's queue (one Optuna study
per campaign, trials taken exactly once, heartbeats, resumption) but, unlike the array,
its trials' settings are chosen by a sampler when a worker takes them. Everything that
speaks Optuna's language for that (distributions, samplers, pruners, the array's runs
as completed trials, fANOVA) is here, so :mod:`doe_sr.engine.queue` stays the queue.
With :mod:`~doe_sr.engine.queue` and :mod:`doe_sr.report.refine_figures` it is one of
the three modules allowed to import Optuna (an import-linter contract).

The warm start is what makes "screen with Taguchi, refine with Bayesian optimisation"
one tool: the array's (run, replicate) pairs enter the refinement's Optuna study as
COMPLETE trials with the refinement's distributions, their value and their per-epoch
values (so the pruner compares a new trial's epochs with the array's from the first
trial on). A run whose level lies outside the search space is left out and counted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

WARM = "warm_start"  # trial user attr: True on the array's runs added as completed trials
OPTIMUM = "taguchi_optimum"  # trial user attr: True on the trial that measures the Taguchi optimum
PRUNED = "pruned"  # trial user attr: why the pruner stopped the trial


@dataclass(frozen=True)
class WarmTrial:
    """One finished array pair as a completed trial of the refinement."""

    params: dict[str, Any]  # the searched settings' values
    value: float
    intermediate: tuple[float, ...]  # the response after each epoch (step = epoch)
    attrs: dict[str, Any]  # readable user attributes: role, run, replicate, mlflow_run_id, levels


@dataclass(frozen=True)
class Search:
    """What a refinement samples and how, in plain values (see :func:`distributions`).

    ``space``: setting -> ``{"kind": float|int|categorical, "low", "high", "log", "step",
    "choices"}``; ``fixed``: held settings (their Taguchi optimum); ``first``: the params
    of trial 1 when it must measure the Taguchi optimum (no array run did); ``try_first``:
    settings the study file asks to evaluate before the sampler decides; ``warm``: called
    once, when the refinement's Optuna study is created.
    """

    space: dict[str, dict[str, Any]]
    fixed: dict[str, Any]
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    epochs: int = 1
    first: dict[str, Any] | None = None
    try_first: tuple[dict[str, Any], ...] = ()
    warm: Callable[[], list[WarmTrial]] = field(default=lambda: [], compare=False, repr=False)


def distributions(space: Mapping[str, Mapping[str, Any]]) -> dict:
    """Optuna distributions of a search space (see :class:`Search`)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, spec in space.items():
        if spec.get("choices") is not None:
            out[name] = CategoricalDistribution(list(spec["choices"]))
        elif spec["kind"] == "int":
            out[name] = IntDistribution(int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")),
                                        step=int(spec.get("step") or 1))
        else:
            out[name] = FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")),
                                          step=None if spec.get("step") is None else float(spec["step"]))
    return out


def make_sampler(name: str, seed: int, warm_trials: int):
    """The sampler of a refinement; with a warm start it models the array's runs at once.

    Why no random start-up trials after a warm start: the orthogonal array *is* the
    start-up design (balanced over every factor), so TPE and the GP fit the array's runs
    from the first new trial. CMA-ES keeps its own generations (Optuna's CMA-ES reads only
    trials it sampled), and samples categorical settings independently.
    """
    import optuna

    startup = 0 if warm_trials >= 2 else 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna flags several sampler options as experimental
        if name == "tpe":
            # constant_liar: trials other workers are running count as bad guesses meanwhile,
            # so two workers do not sample the same point (Optuna's advice for parallel TPE)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True,
                                              constant_liar=True)
        if name == "gp":
            import importlib.util

            if importlib.util.find_spec("torch") is None:
                from doe_sr.core.errors import UserError

                raise UserError("refine.sampler gp needs PyTorch (Optuna's GP sampler is written in it); "
                                "install it with `pip install torch`, or use sampler: tpe")
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=max(startup, 1),
                                                warn_independent_sampling=False)
    raise ValueError(f"unknown sampler {name!r}")


def make_pruner(name: str, epochs: int):
    """Optuna's median or Hyperband pruner over epochs, or none.

    The median pruner stops a trial whose response after an epoch is worse than the
    median of earlier trials (the array's included) after the same epoch, once 5 trials
    finished; Hyperband allots epochs from 1 to the study's ``training.epochs``.
    """
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(int(epochs), 1))
    return optuna.pruners.NopPruner()


def add_warm_trials(ost, search: Search) -> tuple[int, int]:
    """Add the array's runs to ``ost`` as completed trials; (added, left out: outside the space)."""
    import optuna

    dists = distributions(search.space)
    added = skipped = 0
    for warm in search.warm():
        if not in_space(search, warm.params):
            skipped += 1
            continue
        trial = optuna.trial.create_trial(
            params={n: warm.params[n] for n in dists}, distributions=dists, value=warm.value,
            intermediate_values={i: v for i, v in enumerate(warm.intermediate) if math.isfinite(v)},
            user_attrs={**warm.attrs, WARM: True})
        ost.add_trial(trial)
        added += 1
    return added, skipped


def suggest(ost, trial_id: int, search: Search):
    """The taken trial's settings, sampled now (or fixed by an enqueued point); (trial, params).

    Why here and not at enqueue time: the sampler must see every trial finished so far,
    the array's and the other workers', when this trial starts.
    """
    import optuna

    trial = optuna.Trial(ost, trial_id)
    params = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, spec in search.space.items():
            if spec.get("choices") is not None:
                params[name] = trial.suggest_categorical(name, list(spec["choices"]))
            elif spec["kind"] == "int":
                params[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]),
                                                 step=int(spec.get("step") or 1), log=bool(spec.get("log")))
            else:
                params[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                                   step=None if spec.get("step") is None else float(spec["step"]),
                                                   log=bool(spec.get("log")))
    return trial, params


def in_space(search: Search, params: Mapping[str, Any]) -> bool:
    """True when every searched setting of ``params`` lies in the space (an enqueued point must)."""
    dists = distributions(search.space)
    try:
        return all(name in params and dists[name]._contains(dists[name].to_internal_repr(params[name]))
                   for name in dists)
    except (ValueError, TypeError):
        return False


def importances(ost, params: list[str]) -> dict[str, float]:
    """fANOVA importance (in %) of each searched setting over the completed trials (warm start included).

    Why fANOVA: it is Optuna's measure that, like the Taguchi ANOVA's contribution,
    splits the response's variance among the settings, so the two can be set side by
    side. Empty with fewer than two settings or three completed trials.
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState

    done = ost.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(params) < 2 or len(done) < 3:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = optuna.importance.get_param_importances(ost, evaluator=FanovaImportanceEvaluator(seed=0),
                                                      params=list(params), normalize=True)
    return {k: 100.0 * float(v) for k, v in raw.items()}
