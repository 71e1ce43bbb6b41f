"""The study schema: good files load, each kind of bad input gets a one-line message naming the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from doe_sr.errors import UserError
from doe_sr.study import load_study, parse_study

REPO = Path(__file__).resolve().parents[1]


def quickstart() -> dict:
    return yaml.safe_load((REPO / "studies" / "quickstart.yaml").read_text())


def test_bundled_studies_load():
    for name in ("quickstart.yaml", "srnet_l9.yaml"):
        study = load_study(REPO / "studies" / name)
        assert study.design.array == "L9(3^4)"
        assert study.factor_names == ["learning_rate", "optimizer", "activation", "filters"]
        assert study.factor("learning_rate").level_labels == ["0.01", "0.001", "0.0001"]


def test_run_config_applies_factors_and_keeps_fixed_settings():
    study = parse_study(quickstart())
    cfg = study.run_config({"learning_rate": 0.0001, "optimizer": "adagrad", "activation": "elu", "filters": 128})
    assert cfg.training.learning_rate == 0.0001 and cfg.training.optimizer == "adagrad"
    assert cfg.model.activation == "elu" and cfg.model.filters == 128
    assert cfg.training.batch_size == study.training.batch_size


def _error(data: dict) -> str:
    with pytest.raises(UserError) as info:
        parse_study(data, origin="s.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["training"].update(learnig_rate=0.1), "training.learnig_rate: unknown key"),
        (lambda d: d.update(colour="red"), "colour: unknown key"),
        (lambda d: d["design"]["factors"][1].update(levels=["adam", "adamax", "sgd"]), "unknown optimizer 'adamax'"),
        (lambda d: d["design"]["factors"][2].update(levels=["tanh", "swishy", "relu"]), "unknown activation 'swishy'"),
        (lambda d: d["design"]["factors"][0].update(name="momentum"), "unknown factor 'momentum'"),
        (lambda d: d["data"].update(patch_size=48), "multiple of 32"),
        (lambda d: d["training"].update(optimizer="lbfgs"), "training.optimizer: unknown optimizer 'lbfgs'"),
        (lambda d: d["design"].update(array="Taguchi9"), "is not an array name"),
        (lambda d: d["data"].update(split=[8, 0, 1]), "positive train, val and test"),
        (lambda d: d["design"]["factors"][3].update(levels=[32, 32, 64]), "levels must be distinct"),
        (lambda d: d.pop("name"), "name: required field is missing"),
    ],
)
def test_bad_input_names_the_field(mutate, expected):
    data = copy.deepcopy(quickstart())
    mutate(data)
    assert expected in _error(data)


def test_malformed_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndesign:\n  factors: [\n")
    with pytest.raises(UserError) as info:
        load_study(path)
    assert "malformed YAML" in str(info.value) and "line" in str(info.value)


def test_missing_study_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_study(tmp_path / "nope.yaml")


def test_fingerprint_changes_with_the_design():
    a = parse_study(quickstart())
    data = quickstart()
    data["design"]["factors"][3]["levels"] = [16, 32, 64]
    assert a.fingerprint() != parse_study(data).fingerprint()
    assert a.fingerprint() == parse_study(quickstart()).fingerprint()


def test_fingerprint_ignores_where_the_data_live():
    a, b = quickstart(), quickstart()
    b["data"]["source"] = "/mnt/other/machine/DIV2K"
    b["data"]["cache"] = "disk"
    assert parse_study(a).fingerprint() == parse_study(b).fingerprint()
    b["data"]["seed"] = 1  # another split is another study
    assert parse_study(a).fingerprint() != parse_study(b).fingerprint()
