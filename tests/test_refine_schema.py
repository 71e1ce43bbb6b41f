"""The ``refine:`` section of a study (issue 13): good sections load with their defaults,
each kind of bad range gets a one-line message naming the field, and the section never
changes the study's fingerprint (a finished array stays valid when a refinement is added)."""

from __future__ import annotations

import copy

import pytest
import yaml

from doe_sr.core.errors import UserError
from doe_sr.study.schema import RefineConfig, SearchRange, load_study, parse_study, setting_kind
from conftest import REPO, doe_sr

#: the quickstart study without its own refine: section (the tests add theirs)
QUICKSTART_TEXT = yaml.safe_dump({k: v for k, v in yaml.safe_load((REPO / "studies" / "quickstart.yaml").read_text())
                                  .items() if k != "refine"}, sort_keys=False)
#: The issue's example, plus a stepped integer range.
SPACE = {
    "learning_rate": {"low": 1.0e-5, "high": 1.0e-2, "log": True},
    "filters": {"choices": [32, 48, 64, 96, 128]},
    "batch_size": {"low": 2, "high": 8, "step": 2},
}


def study_data(refine) -> dict:
    data = yaml.safe_load(QUICKSTART_TEXT)
    data["refine"] = copy.deepcopy(refine)
    return data


def _error(refine) -> str:
    with pytest.raises(UserError) as info:
        parse_study(study_data(refine), origin="s.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_valid_section_parses_with_its_defaults():
    study = parse_study(study_data({"space": SPACE}))
    refine = study.refine
    assert isinstance(refine, RefineConfig)
    assert (refine.trials, refine.sampler, refine.hold, refine.pruner, refine.name, refine.seed) == \
        (20, "tpe", "auto", "median", "", None)
    assert refine.space["learning_rate"] == SearchRange(low=1e-5, high=1e-2, log=True)
    assert [study.refine_kind(n) for n in ("learning_rate", "filters", "batch_size")] == \
        ["float", "categorical", "int"]
    assert study.refine_param("learning_rate") == {"low": 1e-5, "high": 1e-2, "log": True, "step": None}
    assert study.refine_param("batch_size") == {"low": 2, "high": 8, "log": False, "step": 2}
    assert study.refine_param("filters") == {"choices": [32, 48, 64, 96, 128]}
    assert parse_study(yaml.safe_load(QUICKSTART_TEXT)).refine is None  # the section is optional


def test_every_field_can_be_set():
    refine = parse_study(study_data({"trials": 7, "sampler": "cmaes", "space": SPACE, "hold": ["optimizer"],
                                     "pruner": "none", "name": "second-pass", "seed": 11})).refine
    assert (refine.trials, refine.sampler, refine.hold, refine.pruner, refine.name, refine.seed) == \
        (7, "cmaes", ["optimizer"], "none", "second-pass", 11)
    assert parse_study(study_data({"space": SPACE, "hold": "none", "sampler": "gp",
                                   "pruner": "hyperband"})).refine.hold == "none"


def test_the_kind_follows_the_settings_type_in_the_models():
    assert {n: setting_kind(n) for n in ("learning_rate", "dropout", "filters", "batch_size", "epochs",
                                         "kernel_size", "optimizer", "activation", "loss", "residual")} == {
        "learning_rate": "float", "dropout": "float", "filters": "int", "batch_size": "int", "epochs": "int",
        "kernel_size": "int", "optimizer": "categorical", "activation": "categorical", "loss": "categorical",
        "residual": "categorical"}


def test_values_are_read_as_their_setting_reads_them(tmp_path):
    """YAML 1.1 reads 1e-5 and 1e1 (no dot) as strings; an integer setting's whole floats
    become ints, and true/yes become the bool, so Optuna gets the setting's own types."""
    text = QUICKSTART_TEXT + ("refine:\n  space:\n    learning_rate: {low: 1e-5, high: 1e-2, log: true}\n"
                              "    kernel_size: {low: 1e0, high: 7.0, step: 2}\n"
                              "    residual: {choices: [yes, false]}\n    dropout: {choices: [0, 1e-1]}\n")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    study = load_study(path)
    assert study.refine_param("learning_rate") == {"low": 1e-5, "high": 1e-2, "log": True, "step": None}
    kernel = study.refine_param("kernel_size")
    assert kernel == {"low": 1, "high": 7, "log": False, "step": 2}
    assert all(type(kernel[k]) is int for k in ("low", "high", "step"))
    assert study.refine_param("residual") == {"choices": [True, False]}
    assert study.refine_param("dropout") == {"choices": [0.0, 0.1]}


@pytest.mark.parametrize("refine, where, expected", [
    ({"space": {"learning_rate": {"low": 0.01, "high": 1e-5}}},
     "refine.space.learning_rate", "low 0.01 is above high 1e-05; swap them"),
    ({"space": {"learning_rate": {"low": 0.0, "high": 1e-2, "log": True}}},
     "refine.space.learning_rate", "a log range needs low > 0 (got low 0.0); use a positive low such as 1e-5"),
    ({"space": {"dropout": {"low": -0.1, "high": 0.5, "log": True}}},
     "refine.space.dropout", "a log range needs low > 0 (got low -0.1)"),
    ({"space": {"learning_rate": {"low": 0.01, "high": 0.01}}},
     "refine.space.learning_rate", "low equals high (0.01); use choices: [0.01]"),
    ({"space": {"dropout": {"low": 0.0, "high": 0.5, "step": 0}}},
     "refine.space.dropout", "step must be > 0 (got 0)"),
    ({"space": {"dropout": {"low": 0.0, "high": 0.5, "step": -0.1}}},
     "refine.space.dropout", "step must be > 0 (got -0.1)"),
    ({"space": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True, "step": 1e-4}}},
     "refine.space.learning_rate", "step and log together cannot be sampled (Optuna"),
    ({"space": {"learning_rate": {"low": 1e-4}}},
     "refine.space.learning_rate", "give low and high, or choices"),
    ({"space": {"filters": {"choices": [32, 64], "low": 16}}},
     "refine.space.filters", "give either choices or a range (low, high), not both"),
    ({"space": {"momentum": {"low": 0.1, "high": 0.9}}},
     "refine.space.momentum", "unknown factor 'momentum'; name a setting path such as training.learning_rate"),
    ({"space": {"optimizer": {"low": 0, "high": 3}}},
     "refine.space.optimizer", "optimizer is a choice of words, not a range; write choices: [adadelta, adam, adagrad]"),
    ({"space": {"loss": {"low": 0, "high": 1}}},
     "refine.space.loss", "loss is a choice of words, not a range; write choices: [mae, mse, charbonnier]"),
    ({"space": {"residual": {"low": 0, "high": 1}}},
     "refine.space.residual", "residual is true or false, not a range; write choices: [true, false]"),
    ({"space": {"filters": {"low": 32.5, "high": 128}}},
     "refine.space.filters", "low 32.5 is not a whole number; filters is an integer setting"),
    ({"space": {"batch_size": {"low": 2, "high": 8, "step": 1.5}}},
     "refine.space.batch_size", "step 1.5 is not a whole number"),
    ({"space": {"learning_rate": {"low": 0, "high": 1e-2}}},
     "refine.space.learning_rate", "low 0 is not a valid learning_rate value (Input should be greater than 0)"),
    ({"space": {"learning_rate": {"low": -1, "high": 1e-2}}},
     "refine.space.learning_rate", "low -1 is not a valid learning_rate value (Input should be greater than 0)"),
    ({"space": {"filters": {"low": 0, "high": 64}}},
     "refine.space.filters", "low 0 is not a valid filters value (Input should be greater than or equal to 1)"),
    ({"space": {"dropout": {"low": 0, "high": 1}}},
     "refine.space.dropout", "high 1 is not a valid dropout value (Input should be less than 1)"),
    ({"space": {"optimizer": {"choices": ["adam", "adamax"]}}},
     "refine.space.optimizer", "choice 'adamax' is not a valid optimizer value (unknown optimizer 'adamax'"),
    ({"space": {"filters": {"choices": [32, 64, 32]}}},
     "refine.space.filters.choices", "choices must be distinct"),
    ({"space": {"filters": {"choices": [32, 32.0]}}},
     "refine.space.filters", "choices 32 and 32.0 are the same value (32) written twice"),
    ({"space": {"residual": {"choices": [True, "yes"]}}},
     "refine.space.residual", "choices True and 'yes' are the same value (True)"),
    ({"space": {"filters": {"low": 16, "high": 100, "step": 16}}},
     "refine.space.filters", "the range 16..100 is not a whole number of steps of 16; use high 96"),
    ({"space": {"dropout": {"low": 0.0, "high": 0.5, "step": 0.2}}},
     "refine.space.dropout", "the range 0.0..0.5 is not a whole number of steps of 0.2; use high 0.4"),
    ({"space": {"filters": {"low": 16, "high": 32, "step": 64}}},
     "refine.space.filters", "step 64 is wider than the range 16..32"),
    ({"space": {"learning_rate": {"low": "fast", "high": 1e-2}}},
     "refine.space.learning_rate.low", "must be a number, got 'fast'"),
    ({"space": {"learning_rate": {"low": True, "high": 1e-2}}},
     "refine.space.learning_rate.low", "must be a number, got true"),
    ({"space": {"learning_rate": {"low": 1e-5, "high": float("inf")}}},
     "refine.space.learning_rate.high", "must be a finite number"),
    ({"space": {"filters": {"choices": [[32]]}}},
     "refine.space.filters.choices", "choice [32] is a list; choices are numbers, words or true/false"),
    ({"space": {"filters": {"low": 32, "high": 64}}, "hold": ["momentum"]},
     "refine.hold", "'momentum' is not a factor of the array; hold one of: learning_rate, optimizer, "
                    "activation, filters"),
    ({"space": {"filters": {"low": 32, "high": 64}}, "hold": ["optimizer", "filters"]},
     "refine.hold", "'filters' is held and also in refine.space; hold it or search it, not both"),
    ({"space": {"filters": {"low": 32, "high": 64}}, "hold": ["optimizer", "optimizer"]},
     "refine.hold", "'optimizer' appears twice"),
    ({"space": {"filters": {"low": 32, "high": 64}}, "hold": "sometimes"},
     "refine.hold", "hold 'sometimes' is not auto, none or a list of factor names"),
    ({"space": {"filters": {"low": 32, "high": 64}}, "colour": "red"},
     "refine.colour", "unknown key; remove it or check its spelling"),
    ({"space": {"filters": {"low": 32, "high": 64, "log2": True}}},
     "refine.space.filters.log2", "unknown key"),
    ({"space": {"filters": {"low": 32, "high": 64}}, "trials": 0},
     "refine.trials", "greater than or equal to 1"),
    ({"space": {"filters": {"low": 32, "high": 64}}, "trials": 10_001},
     "refine.trials", "less than or equal to 10000"),
    ({"space": {"filters": {"low": 32, "high": 64}}, "sampler": "random"},
     "refine.sampler", "Input should be 'tpe', 'gp' or 'cmaes'"),
    ({"space": {"filters": {"low": 32, "high": 64}}, "pruner": "always"},
     "refine.pruner", "Input should be 'median', 'hyperband' or 'none'"),
    ({"space": {"filters": {"low": 32, "high": 64}}, "seed": -1},
     "refine.seed", "greater than or equal to 0"),
    ({"space": {"filters": {"low": 32, "high": 64}}, "name": "two words"},
     "refine.name", "should match pattern"),
    ({"space": {}}, "refine.space", "at least 1 item"),
    ({"trials": 5}, "refine.space", "required field is missing"),
])
def test_a_bad_section_is_one_line_naming_the_field(refine, where, expected):
    message = _error(refine)
    assert message.startswith(f"s.yaml: {where}: "), message
    assert expected in message, message


def test_a_huge_number_is_a_message_not_an_overflow():
    """Python ints have no size limit; float arithmetic on them raises OverflowError, which
    would escape pydantic as a traceback."""
    assert "is not a valid filters value" in _error({"space": {"filters": {"low": 10**400, "high": 10**401}}})
    assert "wider than the range" in _error({"space": {"dropout": {"low": 0, "high": 0.5, "step": 10**400}}})
    assert "too small for the range" in _error(
        {"space": {"learning_rate": {"low": 1e-300, "high": 1e300, "step": 1e-300}}})


def test_the_study_fingerprint_ignores_the_refine_section():
    """Adding or editing a refinement must not orphan the finished array's runs."""
    plain = parse_study(yaml.safe_load(QUICKSTART_TEXT))
    for refine in ({"space": SPACE}, {"space": {"dropout": {"low": 0, "high": 0.5}}, "trials": 3, "seed": 4}):
        assert parse_study(study_data(refine)).fingerprint() == plain.fingerprint()


def test_the_refine_fingerprint_ignores_the_budget_but_not_the_search():
    base = parse_study(study_data({"space": SPACE})).refine_fingerprint()
    assert len(base) == 16 and int(base, 16) >= 0
    assert parse_study(study_data({"space": SPACE, "trials": 50})).refine_fingerprint() == base
    # the same range written differently is the same refinement
    same = copy.deepcopy(SPACE)
    same["batch_size"] = {"low": 2.0, "high": "8", "step": 2}
    assert parse_study(study_data({"space": same})).refine_fingerprint() == base
    others = [{"space": {**SPACE, "learning_rate": {"low": 1e-5, "high": 1e-1, "log": True}}},
              {"space": {k: v for k, v in SPACE.items() if k != "filters"}},
              {"space": SPACE, "sampler": "gp"}, {"space": SPACE, "hold": "none"},
              {"space": SPACE, "pruner": "none"}, {"space": SPACE, "seed": 1}, {"space": SPACE, "name": "b"}]
    prints = {parse_study(study_data(r)).refine_fingerprint() for r in others}
    assert base not in prints and len(prints) == len(others)


def test_refine_helpers_without_a_section_say_so():
    study = parse_study(yaml.safe_load(QUICKSTART_TEXT))
    with pytest.raises(UserError, match="has no refine: section"):
        study.refine_fingerprint()


def test_the_cli_refuses_a_bad_range_with_exit_2_and_one_line(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(QUICKSTART_TEXT + "refine:\n  space:\n    learning_rate: {low: 0.01, high: 0.0001}\n")
    result = doe_sr("design", str(path), cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "refine.space.learning_rate: low 0.01 is above high 0.0001; swap them" in lines[0]
