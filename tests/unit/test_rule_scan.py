"""`_scan`, the path-free walk `validate_resource` runs first, finds a rule broken exactly
where `_check_rules` (the walk that names paths) does: on the FHIR corpus, on the hub's own
messages, and on generated JSON trees built to hit every rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.fhir.validate import _check_rules, _Found, _scan, load_json, validate_resource
from schemas.errors import InvalidFhirError, SchakelError
from services.demo.samples import consent_resource, referral_bundle
from tests.conftest import CORPUS


def _json_files() -> list[Path]:
    """Every corpus file that is JSON at all (some test cases are broken JSON on purpose)."""
    found = []
    for path in sorted(CORPUS.glob("*/*.json")):
        try:
            load_json(path.read_bytes())
        except SchakelError:
            continue
        found.append(path)
    return found


FILES = _json_files()


def _outcomes(data: Any) -> tuple[bool, bool]:
    try:
        _scan(data)
        scanned = True
    except _Found:
        scanned = False
    try:
        _check_rules(data, "X")
        checked = True
    except InvalidFhirError:
        checked = False
    return scanned, checked


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_corpus_gets_the_same_answer(path: Path) -> None:
    assert len(FILES) > 90
    data = load_json(path.read_bytes())
    scanned, checked = _outcomes(data)
    assert scanned == checked


def test_the_hubs_messages_pass_both_and_a_broken_one_is_named() -> None:
    bundle, consent = referral_bundle("VERW-SCAN-1"), consent_resource("c-scan-1")
    assert _outcomes(bundle) == (True, True)
    assert _outcomes(consent) == (True, True)
    bundle["entry"][0]["resource"]["note"] = [{"text": "zie <b>bijlage</b>"}]
    with pytest.raises(InvalidFhirError, match=r"entry\[0\]\.resource\.note\[0\]\.text"):
        validate_resource(bundle)


_TEXT = st.sampled_from(
    [
        "gewoon",
        "a < b",
        "<b>vet</b>",
        "< script",
        "javascript:alert(1)",
        'x onload = "y"',
        "2026-01-02",
        "2025-12-31",
        "2026-01-02T10:00:00Z",
        "2026-01-02T09:00:00+02:00",
        "urn:uuid:1",
        "relative/1",
        "",
    ]
)
_KEYS = st.sampled_from(
    ["start", "end", "div", "text", "fhir_comments", "resourceType", "entry", "fullUrl", "x"]
)
_LEAF = st.one_of(_TEXT, st.integers(-3, 3), st.booleans(), st.none())


def _bundle(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    entry = st.fixed_dictionaries(
        {"fullUrl": st.one_of(_TEXT, st.none())},
        optional={"resource": st.fixed_dictionaries({}, optional={"meta": st.just({})})},
    )
    return st.fixed_dictionaries(
        {"resourceType": st.just("Bundle"), "entry": st.lists(entry, max_size=3)},
        optional={"type": st.sampled_from(["collection", "history"])},
    )


_TREE = st.recursive(
    _LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(_KEYS, children, max_size=4),
        _bundle(children),
    ),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None)
@given(_TREE)
def test_generated_trees_get_the_same_answer(tree: Any) -> None:
    scanned, checked = _outcomes(tree)
    assert scanned == checked
