"""The designer: pyDOE3's arrays, factor assignment, balance and orthogonality."""

from __future__ import annotations


import numpy as np
import pytest
import yaml

from doe_sr.study.design import build_runs, design_json, is_balanced, is_orthogonal, orthogonal_array, run_table
from doe_sr.core.errors import UserError
from doe_sr.study.schema import load_study, parse_study
from conftest import REPO


@pytest.mark.parametrize("name", ["L4(2^3)", "L8(2^7)", "L9(3^4)", "L16(4^5)", "L18(6^1 3^6)", "L27(2^1 3^12)"])
def test_arrays_are_balanced_and_pairwise_orthogonal(name):
    array = orthogonal_array(name)
    assert is_balanced(array)
    assert is_orthogonal(array)


def test_checks_catch_a_broken_array():
    array = orthogonal_array("L9(3^4)").copy()
    array[0, 1] = 1  # one cell changed: level counts and pairs go off
    assert not is_balanced(array)
    assert not is_orthogonal(array)


def test_seed_levels_land_in_textbook_l9_rows():
    study = load_study(REPO / "studies" / "srnet_l9.yaml")
    table = run_table(study)
    # Taguchi's L9: rows (1111, 1222, 1333, 2123, 2231, 2312, 3132, 3213, 3321)
    textbook = ["1111", "1222", "1333", "2123", "2231", "2312", "3132", "3213", "3321"]
    codes = ["".join(str(c + 1) for c in row) for row in table[[f + "__code" for f in study.factor_names]].to_numpy()]
    assert codes == textbook
    run4 = table.loc[table["run"] == 4].iloc[0]
    assert (run4["learning_rate"], run4["optimizer"], run4["activation"], run4["filters"]) == (0.001, "adadelta", "elu", 128)
    # every level of every factor appears 3 times
    for f in study.factor_names:
        assert table[f].value_counts().tolist() == [3, 3, 3]


def test_design_json_contract():
    study = load_study(REPO / "studies" / "srnet_l9.yaml")
    doc = design_json(study)
    assert doc["array"] == "L9(3^4)" and len(doc["runs"]) == 9
    assert doc["runs"][0] == {"run": 1, "row": "1-1-1-1", "factors": {
        "learning_rate": 0.01, "optimizer": "adadelta", "activation": "tanh", "filters": 32}}


def _study(**design) -> dict:
    data = yaml.safe_load((REPO / "studies" / "quickstart.yaml").read_text())
    data["design"].update(design)
    return data


def test_too_many_factors_for_the_array():
    data = _study(array="L4(2^3)")
    with pytest.raises(UserError, match="no free column of L4.*has 3 levels"):
        build_runs(parse_study(data))


def test_level_count_must_fit_a_column():
    data = _study()
    data["design"]["factors"][3]["levels"] = [32, 64]
    with pytest.raises(UserError, match="design.factors.filters"):
        build_runs(parse_study(data))


def test_mixed_array_puts_factors_on_matching_columns():
    data = _study(array="L18(6^1 3^6)")
    runs = build_runs(parse_study(data))
    assert len(runs) == 18
    codes = np.array([[r.codes[f] for f in r.codes] for r in runs])
    assert is_balanced(codes) and is_orthogonal(codes)


def test_short_array_name_and_unknown_array():
    assert len(build_runs(parse_study(_study(array="L9")))) == 9
    with pytest.raises(UserError, match="unknown orthogonal array 'L7'"):
        build_runs(parse_study(_study(array="L7")))


def test_run_labels_carry_the_levels_as_written():
    """Child run names in the MLflow UI (issue 14): the run number and every level, compact."""
    study = load_study(REPO / "studies" / "quickstart.yaml")
    runs = build_runs(study)
    assert runs[7].label() == "r08 lr=0.0001 adam tanh f128"
    assert runs[0].label() == "r01 lr=0.01 adadelta tanh f32"
    assert runs[7].label(replicate=2) == "r08 lr=0.0001 adam tanh f128 rep 2"
    assert len({r.label() for r in runs}) == len(runs)


def test_run_labels_name_other_factors():
    data = _study(array="L8(2^7)", factors=[{"name": "batch_size", "levels": [4, 8]},
                                            {"name": "loss", "levels": ["mae", "mse"]},
                                            {"name": "residual", "levels": [True, False]},
                                            {"name": "dropout", "levels": [0.0, 0.1]}])
    runs = build_runs(parse_study(data))
    assert runs[0].label() == "r01 batch_size=4 mae residual=True dropout=0.0"
    assert runs[-1].label(replicate=0) == "r08 batch_size=8 mse residual=True dropout=0.1 rep 0"
