"""The refinement's Optuna parts (:mod:`doe_sr.engine.bayes`) on real in-memory Optuna studies.

Fast checks of what ``doe-sr refine`` relies on, without training: the array's runs
enter as completed trials with the refinement's distributions (runs outside the space
left out and counted), each sampler proposes settings inside the space after such a warm
start, an enqueued point (the Taguchi optimum, ``try_first``) is taken as given, and
fANOVA importances split 100 %.
"""

from __future__ import annotations

import math

import optuna
import pytest

from doe_sr.engine import bayes

SPACE = {"learning_rate": {"kind": "float", "low": 1e-5, "high": 1e-2, "log": True, "step": None},
         "filters": {"kind": "int", "choices": [32, 48, 64, 96, 128]},
         "optimizer": {"kind": "categorical", "choices": ["adam", "adadelta", "adagrad"]}}


def _response(learning_rate: float, filters: int, optimizer: str) -> float:
    """A smooth made-up response with its best at lr 3e-4, 96 filters, adam."""
    bonus = 0.3 if optimizer == "adam" else 0.0
    return 22.0 - (math.log10(learning_rate) + 3.5) ** 2 - ((filters - 96) / 64) ** 2 + bonus


def _warm() -> list[bayes.WarmTrial]:
    out = []
    for k, (lr, f, opt) in enumerate([(1e-2, 32, "adadelta"), (1e-2, 64, "adam"), (1e-2, 128, "adagrad"),
                                      (1e-3, 32, "adam"), (1e-3, 64, "adagrad"), (1e-3, 128, "adadelta"),
                                      (1e-4, 32, "adagrad"), (1e-4, 64, "adadelta"), (1e-4, 128, "adam"),
                                      (1e-1, 64, "adam")]):  # the last lies outside the learning-rate range
        v = _response(lr, f, opt)
        out.append(bayes.WarmTrial(params={"learning_rate": lr, "filters": f, "optimizer": opt}, value=v,
                                   intermediate=(v - 1.0, v), attrs={"role": "array_run", "run": k + 1}))
    return out


def _search(**kw) -> bayes.Search:
    return bayes.Search(space=SPACE, fixed={"activation": "tanh"}, warm=_warm, **kw)


def test_warm_start_adds_the_array_runs_inside_the_space_as_completed_trials():
    ost = optuna.create_study(direction="maximize")
    added, left_out = bayes.add_warm_trials(ost, _search())
    assert (added, left_out) == (9, 1)
    trials = ost.get_trials()
    assert all(t.state.name == "COMPLETE" and t.user_attrs[bayes.WARM] is True for t in trials)
    assert [t.user_attrs["run"] for t in trials] == list(range(1, 10))
    assert trials[0].intermediate_values == {0: trials[0].value - 1.0, 1: trials[0].value}
    assert trials[0].distributions == bayes.distributions(SPACE)
    assert ost.best_trial.params == {"learning_rate": 1e-4, "filters": 128, "optimizer": "adam"}


@pytest.mark.parametrize("sampler, cls", [("tpe", optuna.samplers.TPESampler), ("gp", optuna.samplers.GPSampler),
                                          ("cmaes", optuna.samplers.CmaEsSampler)])
def test_each_sampler_proposes_settings_inside_the_space_after_the_warm_start(sampler, cls):
    search = _search(sampler=sampler)
    ost = optuna.create_study(direction="maximize")
    added, _ = bayes.add_warm_trials(ost, search)
    ost.sampler = bayes.make_sampler(sampler, seed=0, warm_trials=added)
    assert isinstance(ost.sampler, cls)
    for _ in range(4):
        trial = ost.ask()
        _, params = bayes.suggest(ost, trial._trial_id, search)
        assert bayes.in_space(search, params), params
        assert 1e-5 <= params["learning_rate"] <= 1e-2 and params["filters"] in (32, 48, 64, 96, 128)
        ost.tell(trial, _response(**params))
    assert len(ost.get_trials()) == 13


def test_an_enqueued_point_is_taken_as_given():
    search = _search()
    ost = optuna.create_study(direction="maximize", sampler=bayes.make_sampler("tpe", 0, 9))
    bayes.add_warm_trials(ost, search)
    point = {"learning_rate": 3e-4, "filters": 96, "optimizer": "adam"}
    ost.enqueue_trial(point)
    trial = ost.ask()
    _, params = bayes.suggest(ost, trial._trial_id, search)
    assert params == point


def test_points_outside_the_space_are_told_apart():
    search = _search()
    assert bayes.in_space(search, {"learning_rate": 1e-3, "filters": 48, "optimizer": "adam"})
    assert not bayes.in_space(search, {"learning_rate": 1e-1, "filters": 48, "optimizer": "adam"})
    assert not bayes.in_space(search, {"learning_rate": 1e-3, "filters": 40, "optimizer": "adam"})
    assert not bayes.in_space(search, {"learning_rate": 1e-3, "filters": 48, "optimizer": "sgd"})
    assert not bayes.in_space(search, {"learning_rate": 1e-3, "filters": 48})


def test_pruners_and_importances():
    assert isinstance(bayes.make_pruner("median", 3), optuna.pruners.MedianPruner)
    assert isinstance(bayes.make_pruner("hyperband", 3), optuna.pruners.HyperbandPruner)
    assert isinstance(bayes.make_pruner("none", 3), optuna.pruners.NopPruner)
    ost = optuna.create_study(direction="maximize")
    bayes.add_warm_trials(ost, _search())
    shares = bayes.importances(ost, list(SPACE))
    assert set(shares) == set(SPACE) and sum(shares.values()) == pytest.approx(100.0)
    assert bayes.importances(ost, ["learning_rate"]) == {}  # one setting: nothing to split
