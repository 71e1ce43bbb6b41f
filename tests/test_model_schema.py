"""The ``model:`` section and dotted factors, validated before anything trains (issue 11):
built-in settings, user builders read by their signature, entry-point names, losses, and
the patch each network needs. Fast: no network is built here (see test_byo_model.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import TINY_STUDY
from doe_sr.core.errors import UserError
from doe_sr.study.schema import load_study, load_yaml, parse_study

NET = '''
def build(*, scale, width: int, depth: int = 2, activation: str = "relu"):
    raise AssertionError("validation must not build the network")


def no_scale(*, width: int = 8):
    raise AssertionError("validation must not build the network")


def anything(**settings):
    raise AssertionError("validation must not build the network")


def loss(y_true, y_pred):
    return abs(y_true - y_pred)


NOT_A_FUNCTION = 3
'''


def _study(tmp_path: Path, model: str, factors: str = "    - {name: training.learning_rate, levels: [0.001, 0.0001]}",
           extra: str = "") -> Path:
    (tmp_path / "nets").mkdir(exist_ok=True)
    (tmp_path / "nets" / "net.py").write_text(NET)
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\ndesign:\n  array: L4(2^3)\n  factors:\n{factors}\n"
                    f"data: {{patch_size: 32}}\nmodel: {model}\n{extra}")
    return path


def _error(path: Path) -> str:
    with pytest.raises(UserError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_an_srnet_study_keeps_the_fingerprint_it_had_before_models_were_pluggable():
    # dc1070b957275342: the tiny study's fingerprint computed by the code before issue 11
    # (git archive of 95b7729); a changed hash would make every existing store "another study".
    study = parse_study(load_yaml(TINY_STUDY.format(mlruns="/tmp/x")))
    assert study.fingerprint() == "dc1070b957275342"
    assert study.model_params() == {"name": "srnet", "filters": 64, "activation": "relu", "kernel_size": 3,
                                    "depth": 5, "dropout": 0.0, "residual": True, "head_width": None}


def test_dotted_and_short_factor_names_set_the_same_fields(tmp_path: Path):
    path = _study(tmp_path, "{name: edsr, num_feat: 16}", factors=textwrap.indent(textwrap.dedent("""\
        - {name: training.learning_rate, levels: [1e-3, 1e-4]}
        - {name: model.num_block, levels: [2, 4]}
        - {name: data.patch_size, levels: [32, 48]}"""), "    "))
    study = load_study(path)
    cfg = study.run_config({"training.learning_rate": "1e-4", "model.num_block": 4, "data.patch_size": 48})
    assert cfg.training.learning_rate == 1e-4 and cfg.patch_size == 48
    assert cfg.model.name == "edsr" and cfg.model.input == "lr"
    assert cfg.model.settings == {"num_block": 4, "num_feat": 16, "res_scale": 1.0}
    assert cfg.model.kwargs(4) == {"scale": 4, "num_block": 4, "num_feat": 16, "res_scale": 1.0}
    assert study.factor("training.learning_rate").display == "learning rate"
    short = load_study(_study(tmp_path, "{depth: 3}", factors="    - {name: learning_rate, levels: [0.01, 0.001]}"))
    assert short.run_config({"learning_rate": 0.01}).training.learning_rate == 0.01


@pytest.mark.parametrize("factor, expected", [
    ("training.seed", "cannot be a factor: each replicate already has its own seed"),
    ("data.scale", "unknown factor 'data.scale'"),
    ("model.builder", "cannot be a factor; vary model.name"),
    ("optimiser.lr", "unknown factor 'optimiser.lr'"),
    ("model.filterz", "model srnet takes no setting 'filterz'; its settings are: filters, activation"),
])
def test_a_factor_naming_no_setting_is_one_line(tmp_path: Path, factor: str, expected: str):
    path = _study(tmp_path, "{depth: 3}", factors=f"    - {{name: {factor}, levels: [1, 2]}}")
    assert expected in _error(path)


@pytest.mark.parametrize("model, factors, expected", [
    # a built-in's settings are its own
    ("{name: edsr, filters: 32}", None, "model edsr takes no setting 'filters'; its settings are: num_block, "
                                        "num_feat, res_scale"),
    ("{name: rrdbnet, num_block: 0}", None, "model.num_block: Input should be greater than or equal to 1"),
    ("{name: esrgan}", None, "model.name: unknown model 'esrgan'; use one of: srnet, rrdbnet, edsr"),
    ("{name: edsr, builder: 'nets/net.py:build'}", None, "give model.name (a registered model"),
    ("{name: edsr, input: bicubic}", None, "model.input: edsr takes the lr image, not bicubic"),
    # a user builder, read by its signature
    ("{builder: 'nets/net.py:build', input: lr, width: 8, dilation: 2}", None,
     "model.dilation: nets/net.py:build does not accept a 'dilation' argument; it takes: width, depth, activation"),
    ("{builder: 'nets/net.py:build', input: lr}", None, "nets/net.py:build needs width (no default)"),
    ("{builder: 'nets/net.py:build', width: 8}", None, "model.input: say which image nets/net.py:build takes"),
    ("{builder: 'nets/net.py:build', input: lr}", "    - {name: model.width, levels: [8, wide]}",
     "factor 'model.width' level 'wide': 'wide' does not fit the builder's annotation"),
    ("{builder: 'nets/missing.py:build', input: lr}", None, "model.builder: file "),
    ("{builder: 'nets/net.py:buld', input: lr}", None, "model.builder: nets/net.py has no 'buld'; it defines: "
                                                       "anything, build, loss, no_scale"),
    ("{builder: 'nets/net.py:NOT_A_FUNCTION', input: lr}", None, "is not a function"),
    ("{builder: 'no_such_pkg.nets:build', input: lr}", None, "model.builder: no module named 'no_such_pkg'"),
    ("{builder: 'build', input: lr}", None, "does not name a function; write it as package.module:function"),
    # a patch its network cannot take
    ("{name: edsr}", "    - {name: data.patch_size, levels: [32, 34]}",
     "data.patch_size 34 must be a multiple of the scale 4 for edsr"),
    ("{depth: 5}", "    - {name: data.patch_size, levels: [32, 48]}",
     "data.patch_size 48 must be a multiple of 32 (2**model.depth)"),
])
def test_a_model_section_its_network_cannot_take_is_one_line(tmp_path: Path, model: str, factors, expected: str):
    path = _study(tmp_path, model, **({"factors": factors} if factors else {}))
    message = _error(path)
    assert expected in message, message


def test_user_builders_accept_what_their_signature_does(tmp_path: Path):
    study = load_study(_study(tmp_path, "{builder: 'nets/net.py:anything', input: bicubic, multiple: 4, "
                                        "whatever: 3}"))
    run = study.run_config({}).model
    assert run.settings == {"whatever": 3} and run.multiple == 4 and run.input == "bicubic"
    no_scale = load_study(_study(tmp_path, "{builder: 'nets/net.py:no_scale', input: bicubic}")).run_config({})
    assert no_scale.model.kwargs(4) == {}, "a builder without a scale parameter is not given one"
    typed = load_study(_study(tmp_path, "{builder: 'nets/net.py:build', input: lr}",
                              factors="    - {name: model.width, levels: ['8', 16]}"))
    assert typed.run_config({"model.width": "8"}).model.settings["width"] == 8  # the int annotation reads "8"
    assert typed.setting_kind("model.width") == "int"
    params = typed.run_config({"model.width": 16}).model.params()
    assert params["builder_file"] == str((tmp_path / "nets" / "net.py").resolve()) and params["input"] == "lr"


def test_a_study_across_models_gives_each_its_own_settings(tmp_path: Path):
    factors = "    - {name: model.name, levels: [srnet, edsr]}\n    - {name: model.num_feat, levels: [8, 16]}"
    study = load_study(_study(tmp_path, "{filters: 4, depth: 3, num_block: 2}", factors=factors))
    srnet = study.run_config({"model.name": "srnet", "model.num_feat": 8}).model
    edsr = study.run_config({"model.name": "edsr", "model.num_feat": 16}).model
    assert srnet.settings["filters"] == 4 and "num_feat" not in srnet.settings and srnet.multiple == 8
    assert edsr.settings == {"num_block": 2, "num_feat": 16, "res_scale": 1.0} and edsr.multiple == 1
    bad = _study(tmp_path, "{filters: 4, depth: 3, num_blok: 2}", factors=factors)
    assert "none of the study's models (srnet, edsr) takes a setting 'num_blok'" in _error(bad)


def test_losses_by_name_or_function(tmp_path: Path):
    ok = load_study(_study(tmp_path, "{depth: 3}", factors="    - {name: training.loss, "
                                                           "levels: [charbonnier, 'nets/net.py:loss']}"))
    assert ok.run_config({"training.loss": "nets/net.py:loss"}).training.loss == "nets/net.py:loss"
    assert "unknown loss 'huber'" in _error(_study(tmp_path, "{depth: 3}", extra="training: {loss: huber}"))
    assert "training.loss: nets/net.py has no 'los'" in _error(
        _study(tmp_path, "{depth: 3}", extra="training: {loss: 'nets/net.py:los'}"))


def test_the_builder_file_is_found_next_to_the_study_whatever_the_current_folder(tmp_path: Path, monkeypatch):
    path = _study(tmp_path, "{builder: 'nets/net.py:build', input: lr, width: 8}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_study(path).run_config({}).model.base_dir == str(tmp_path.resolve())


def test_a_refinement_searches_dotted_and_user_settings_in_their_types(tmp_path: Path):
    refine = ("refine:\n  space:\n    training.learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}\n"
              "    model.width: {low: 8, high: 32, step: 8}\n    model.activation: {choices: [relu, tanh]}\n")
    study = load_study(_study(tmp_path, "{builder: 'nets/net.py:build', input: lr}",
                              factors="    - {name: model.width, levels: [8, 16]}", extra=refine))
    assert study.refine_kind("training.learning_rate") == "float"
    assert study.refine_kind("model.width") == "int"
    assert study.refine_param("model.width") == {"low": 8, "high": 32, "log": False, "step": 8}
    assert study.refine_param("model.activation") == {"choices": ["relu", "tanh"]}
    bad = refine.replace("{low: 8, high: 32, step: 8}", "{low: 8.5, high: 32}")
    assert "refine.space.model.width: low 8.5 is not a whole number" in _error(
        _study(tmp_path, "{builder: 'nets/net.py:build', input: lr}",
               factors="    - {name: model.width, levels: [8, 16]}", extra=bad))


def test_the_shipped_example_studies_validate_with_their_networks():
    from conftest import REPO

    byo = load_study(REPO / "studies" / "byo_model.yaml")
    run = byo.run_config({"model.width": 32, "model.depth": 3}).model
    assert run.builder == "../examples/nets/espcn.py:build" and run.input == "lr"
    assert run.kwargs(4) == {"scale": 4, "width": 32, "depth": 3, "activation": "tanh"}
    arch = load_study(REPO / "studies" / "architectures.yaml")
    inputs = {name: arch.run_config({"model.name": name}).model.input for name in ("srnet", "edsr", "rrdbnet")}
    assert inputs == {"srnet": "bicubic", "edsr": "lr", "rrdbnet": "lr"}
    assert arch.run_config({"model.name": "rrdbnet"}).model.settings == {"num_block": 4, "num_feat": 32,
                                                                         "num_grow_ch": 16}
