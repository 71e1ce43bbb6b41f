"""Property test (issue 9): whatever a study file holds, `doe-sr design` answers without a traceback.

Hypothesis writes random YAML documents, random bytes and random mutations of
``studies/quickstart.yaml`` (a key removed, added or given a value of another kind, a
list where a map is expected, huge or negative numbers, odd text), and runs the real
command in-process through :func:`doe_sr.cli.main.main`: every outcome must be exit 0 (a
valid study) or exit 2 with exactly one line on stderr. Any other exception escapes
``main`` and fails the test with its traceback, which is the bug to fix.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doe_sr.cli.main import main
from conftest import REPO

QUICKSTART = yaml.safe_load((REPO / "studies" / "quickstart.yaml").read_text())
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

#: Text a study might plausibly hold, and text no study should.
WORDS = st.sampled_from(["adam", "sgd", "relu", "L9(3^4)", "L7", "L9(3^5)", "L4(2^3)", "mlruns", "/proc/x",
                         "/etc/passwd", "bogus://nowhere", "http://:1", "sample", "1e-3", "yes", "no", "~", "",
                         "[/]", "null", "learning_rate", "filters", "residual", "epochs", "batch_size"])
SCALARS = st.one_of(
    st.none(), st.booleans(), WORDS, st.text(max_size=40),
    st.integers(min_value=-(10**30), max_value=10**30), st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.one_of(WORDS, st.text(max_size=12)), inner, max_size=5)),
    max_leaves=20)


def _design(capsys, content: str | bytes, fmt: str = "json") -> None:
    """Run `doe-sr design` on ``content``; assert exit 0, or exit 2 with a single line."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        code = main(["design", str(path), "--format", fmt])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("doe-sr: error: "), err


def _paths(node, prefix=()):
    """Every (path, value) in a nested document, the root included."""
    yield prefix, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


@st.composite
def mutated_study(draw) -> dict:
    """Quickstart with one to three random edits: replace, delete or add at a random place."""
    doc = copy.deepcopy(QUICKSTART)
    doc["tracking"]["uri"] = tempfile.gettempdir() + "/doe-sr-property-mlruns"  # nothing is created by design
    for _ in range(draw(st.integers(1, 3))):
        spots = list(_paths(doc))
        path, node = draw(st.sampled_from(spots))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(node, dict):
            node[draw(st.one_of(WORDS, st.text(max_size=12)))] = draw(VALUES)
        elif isinstance(node, list):
            node.insert(draw(st.integers(0, len(node))), draw(VALUES))
    return doc


@pytest.mark.timeout(600)
@SETTINGS
@given(doc=mutated_study(), fmt=st.sampled_from(["table", "json", "csv"]))
def test_random_mutations_of_a_valid_study_never_print_a_traceback(capsys, doc, fmt):
    _design(capsys, yaml.safe_dump(doc, allow_unicode=True), fmt)


@pytest.mark.timeout(600)
@SETTINGS
@given(doc=VALUES)
def test_random_yaml_documents_never_print_a_traceback(capsys, doc):
    _design(capsys, yaml.safe_dump(doc, allow_unicode=True))


@pytest.mark.timeout(600)
@SETTINGS
@given(data=st.data())
def test_random_text_and_bytes_never_print_a_traceback(capsys, data):
    """Broken YAML: valid study text with characters cut or inserted, or plain random bytes."""
    text = (REPO / "studies" / "quickstart.yaml").read_text()
    kind = data.draw(st.sampled_from(["cut", "insert", "bytes"]))
    if kind == "bytes":
        _design(capsys, data.draw(st.binary(max_size=400)))
        return
    at = data.draw(st.integers(0, len(text)))
    if kind == "cut":
        text = text[:at] + text[at + data.draw(st.integers(1, 40)):]
    else:
        text = text[:at] + data.draw(st.one_of(st.text(max_size=20), st.sampled_from(
            [":", "- ", "&a ", "*a", "!!python/object ", "{", "[", "\t", "\x00", "\ufeff", "---\n", "<<: *a\n",
             " 2020-13-45", " !!int x", " !!binary x", " 1" + "0" * 5000, "? [a]\n", " " + "[" * 2000])))\
            + text[at:]
    _design(capsys, text)
