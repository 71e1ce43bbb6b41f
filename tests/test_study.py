"""The study schema: good files load, each kind of bad input gets a one-line message naming the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from doe_sr.core.errors import UserError
from doe_sr.study.schema import load_study, parse_study
from conftest import REPO


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


# -- issue 9: the file itself (encoding, YAML limits) ----------------------------------
QUICKSTART_TEXT = (REPO / "studies" / "quickstart.yaml").read_text()


def _load_error(tmp_path: Path, content: str | bytes) -> str:
    path = tmp_path / "s.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + QUICKSTART_TEXT.encode())
    assert load_study(path).name == "quickstart"


@pytest.mark.parametrize("content, expected", [
    (QUICKSTART_TEXT.encode("utf-16"), "is UTF-16"),
    ((QUICKSTART_TEXT + "description: référence\n").encode("latin-1"), "is not UTF-8 text (byte 0xe9"),
])
def test_other_encodings_are_refused_saying_save_as_utf8(tmp_path, content, expected):
    message = _load_error(tmp_path, content)
    assert expected in message and "save it as UTF-8" in message


def test_deep_nesting_is_refused_without_a_recursion_error(tmp_path):
    assert "nested deeper than" in _load_error(tmp_path, "name: x\ndesign: " + "[" * 5000 + "]" * 5000 + "\n")


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    message = _load_error(tmp_path, "\n".join(lines) + "\nname: x\ndesign: {factors: *i}\n")
    assert "more than 100000 nodes" in message


def test_a_recursive_alias_is_refused(tmp_path):
    assert "recursive" in _load_error(tmp_path, "name: x\ndesign: &d {factors: [*d]}\n")


def test_aliases_and_merge_keys_within_bounds_still_work(tmp_path):
    assert "  batch_size: 4\n" in QUICKSTART_TEXT
    text = QUICKSTART_TEXT.replace("  epochs: 3\n", "  <<: &budget {epochs: 7, batch_size: 2}\n")
    text = text.replace("  batch_size: 4\n", "").replace("name: quickstart\n", "name: &n quickstart\n")
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("  uri: mlruns\n", "  uri: mlruns\n  experiment: *n\n"))
    study = load_study(path)
    assert study.training.epochs == 7 and study.training.batch_size == 2 and study.experiment == "quickstart"


@pytest.mark.parametrize("old, new, key", [
    ("name: quickstart\n", "name: quickstart\nname: other\n", "'name'"),
    ("  epochs: 3\n", "  epochs: 3\n  epochs: 300\n", "'epochs'"),
])
def test_a_duplicate_key_is_refused_not_last_one_wins(tmp_path, old, new, key):
    message = _load_error(tmp_path, QUICKSTART_TEXT.replace(old, new, 1))
    assert f"key {key} appears twice" in message and "line" in message


def test_a_study_file_that_is_a_folder_or_huge_is_refused(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        load_study(tmp_path / "dir.yaml")
    assert "larger than 1 MiB" in _load_error(tmp_path, QUICKSTART_TEXT + "#" * (1 << 20))


# -- issue 9: levels equal in value, sane upper bounds, tracking URIs ------------------
@pytest.mark.parametrize("factor, levels, shown", [
    (0, [0.001, "1e-3", 0.01], "levels 0.001 and '1e-3' are the same value"),  # YAML 1.1 reads 1e-3 as a string
    (3, [8, 8.0, 16], "levels 8 and 8.0 are the same value"),
])
def test_levels_equal_in_value_but_written_differently_are_refused(factor, levels, shown):
    data = quickstart()
    data["design"]["factors"][factor]["levels"] = levels
    assert shown in _error(data)


def test_true_and_yes_are_one_level_of_residual():
    data = quickstart()
    data["design"] = {"array": "L4(2^3)", "factors": [{"name": "residual", "levels": [True, "yes"]}]}
    assert "levels True and 'yes' are the same value" in _error(data)


def test_a_level_written_1e_dash_3_alone_becomes_the_float_and_keeps_its_label(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(QUICKSTART_TEXT.replace("[0.01, 0.001, 0.0001]", "[1e-2, 1e-3, 1e-4]"))
    study = load_study(path)
    assert study.factor("learning_rate").level_labels == ["1e-2", "1e-3", "1e-4"]
    assert study.run_config({"learning_rate": study.factor("learning_rate").levels[1]}).training.learning_rate == 0.001


@pytest.mark.parametrize("section, key, value, bound", [
    ("training", "batch_size", 100000000000, "less than or equal to 8192"),
    ("training", "epochs", 99999999999999999999999999, "less than or equal to 100000"),
    ("training", "steps_per_epoch", 10**10, "less than or equal to 1000000"),
    ("training", "learning_rate", float("inf"), "finite number"),
    ("training", "seed", 2**40, "less than or equal to 2147483647"),
    ("data", "patch_size", 8192 * 4, "less than or equal to 4096"),
    ("model", "head_width", 10**6, "less than or equal to 1024"),
])
def test_values_no_researcher_could_mean_are_refused(section, key, value, bound):
    data = quickstart()
    data[section][key] = value
    message = _error(data)
    assert message.startswith(f"s.yaml: {section}.{key}:") and bound in message


def test_a_factor_level_beyond_a_bound_is_refused():
    data = quickstart()
    data["design"]["factors"][3] = {"name": "batch_size", "levels": [2, 4, 100000000000]}
    assert "factor 'batch_size' level 100000000000: Input should be less than or equal to 8192" in _error(data)


@pytest.mark.parametrize("uri, expected", [
    ("/proc/x", "/proc/x is inside a system folder"),
    ("/etc/passwd", "/etc/passwd is a file, not a folder"),
    ("/etc/passwd/runs", "/etc/passwd is a file, so"),
    ("bogus://nowhere", "scheme 'bogus' is not one MLflow records to"),
    ("http://:5000", "names no host"),
])
def test_tracking_uris_mlflow_cannot_record_to_are_refused(uri, expected):
    data = quickstart()
    data["tracking"]["uri"] = uri
    message = _error(data)
    assert message.startswith("s.yaml: tracking.uri:") and expected in message


@pytest.mark.parametrize("uri", ["mlruns", "http://127.0.0.1:5000", "https://mlflow.example.org",
                                 "postgresql+psycopg2://u@h/db", "sqlite:///x.db", "databricks"])
def test_tracking_uris_mlflow_supports_are_accepted(uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = quickstart()
    data["tracking"]["uri"] = uri
    assert parse_study(data).tracking.uri == uri


def test_an_unreachable_tracking_server_is_one_line_within_the_stated_timeout(monkeypatch):
    """Nothing listens on port 9 (discard): MLflow alone retried for 4 minutes."""
    import os
    import time

    from doe_sr.tracking.store import resolve_uri

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
    monkeypatch.setattr(os, "environ", env)  # the defaults set below stay inside this test
    start = time.monotonic()
    with pytest.raises(UserError, match=r"http://127\.0\.0\.1:9: no MLflow server answered within 20 s"):
        resolve_uri("http://127.0.0.1:9")
    assert time.monotonic() - start < 25
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"  # later requests are bounded too
