"""`_walk`, the path-free walk `validate_resource` runs first, finds a rule broken exactly
where `_check_rules` (the walk that names paths) does: on the FHIR corpus, on the hub's own
messages, and on generated JSON trees built to hit every rule. And with the personal strings
(the hub's intake), it finds what `personal_strings` and `_check_rules` find."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.fhir.common import personal_strings
from adapters.fhir.validate import (
    _PAST_PERSONAL,
    _check_rules,
    _walk,
    load_json,
    validate_resource,
)
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


def _passes_rules(data: Any) -> bool:
    try:
        _check_rules(data, "X")
    except InvalidFhirError:
        return False
    return True


def _outcomes(data: Any) -> tuple[bool, bool]:
    """(the walk finds no rule broken, `_check_rules` finds none); the walk for the rules
    alone gathers no personal strings."""
    found: set[str] = {"untouched"}
    walked = not _walk(data, found, _PAST_PERSONAL)
    assert found == {"untouched"}
    return walked, _passes_rules(data)


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


def _trees(
    leaf: st.SearchStrategy[Any], keys: st.SearchStrategy[str], width: int, leaves: int
) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaf,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(keys, children, max_size=width),
            _bundle(children),
        ),
        max_leaves=leaves,
    )


_TREE = _trees(_LEAF, _KEYS, 4, 25)


@settings(max_examples=600, deadline=None)
@given(_TREE)
def test_generated_trees_get_the_same_answer(tree: Any) -> None:
    scanned, checked = _outcomes(tree)
    assert scanned == checked


# --- one walk for the personal strings and the rules -----------------------------------


def _two_passes(data: Any) -> tuple[set[str], bool]:
    return personal_strings(data), not _passes_rules(data)


def _one_walk(data: Any) -> tuple[set[str], bool] | None:
    """What `_walk` finds, or None when it gives up (then `validate_resource` takes
    `personal_strings`, and `_check_rules` after the models)."""
    found: set[str] = set()
    try:
        broken = _walk(data, found)
    except Exception:  # noqa: BLE001 - as validate_resource
        return None
    return found, broken


def test_the_corpus_and_the_hubs_messages_get_the_same_from_one_walk() -> None:
    walked = 0
    for data in [load_json(path.read_bytes()) for path in FILES] + [
        referral_bundle("VERW-WALK-1"),
        consent_resource("c-walk-1"),
    ]:
        one = _one_walk(data)
        if one is not None:
            walked += 1
            assert one == _two_passes(data)
    assert walked > 90
    bundle = referral_bundle("VERW-WALK-2")
    found, broken = _one_walk(bundle) or (set(), True)
    assert not broken
    assert found and found == personal_strings(bundle)


_PERSONAL_KEYS = st.sampled_from(
    [
        "family",
        "given",
        "text",
        "system",
        "value",
        "postalCode",
        "line",
        "prefix",
        "div",
        "start",
        "end",
        "fhir_comments",
        "resourceType",
        "entry",
        "x",
    ]
)
_PERSONAL_LEAF = st.one_of(
    _TEXT, st.sampled_from(["phone", "email", "sms", "Jansen", "de Vries"]), st.integers(0, 2)
)
_PERSONAL_TREE = _trees(_PERSONAL_LEAF, _PERSONAL_KEYS, 5, 40)


@settings(max_examples=800, deadline=None)
@given(_PERSONAL_TREE)
def test_generated_trees_get_the_same_from_one_walk(tree: Any) -> None:
    one = _one_walk(tree)
    if one is not None:
        assert one == _two_passes(tree)


def test_deep_trees_get_the_same_from_one_walk() -> None:
    """`personal_strings` stops at depth 64, the rules at none: past it, only the rules."""
    tree: Any = {"family": "Diep", "x": []}
    for _ in range(40):
        tree = {"given": ["Laag"], "extension": [{"x": tree, "postalCode": "7901AA"}]}
    one = _one_walk(tree)
    assert one is not None
    assert one == _two_passes(tree)
    assert "Laag" in one[0] and "Diep" not in one[0]
    assert one[1]  # the empty array at the bottom


def test_what_the_walk_cannot_judge_goes_the_two_passes() -> None:
    """An entry that is no object: the walk's Bundle check fails on it; the names are
    still handed over first, and the verdict is the models' (a FHIR error, no crash)."""
    data = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            "x",
            {
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": "Jansen", "given": ["Piet"]}],
                }
            },
        ],
    }
    assert _one_walk(data) is None
    handed: list[set[str]] = []
    with pytest.raises(InvalidFhirError):
        validate_resource(data, personal=handed.append)
    assert handed == [{"Jansen", "Piet"}]


class _Text(str):
    """A str that is no JSON string: the walk knows parsed JSON's types exactly."""


@pytest.mark.parametrize(
    "odd",
    [_Text("<b>vet</b>"), ("Jansen",), {"Jansen"}, b"Jansen"],
    ids=["str-subclass", "tuple", "set", "bytes"],
)
def test_values_parsed_json_does_not_have_go_the_two_passes(odd: Any) -> None:
    """The walk refuses what `type(...) is` does not know (a str subclass included), so
    a dict built by other code than the JSON parser still gets the two passes' answer."""
    for data in (
        {"resourceType": "Patient", "name": [{"family": "Jansen", "text": odd}]},
        {"resourceType": "Patient", "name": [{"family": "Jansen", "given": [odd]}]},
        {"resourceType": "Patient", "name": [{"family": "Jansen"}], "x": [[odd]]},
    ):
        assert _one_walk(data) is None
    data = {"resourceType": "Patient", "name": [{"family": "Jansen", "text": _Text("<b>x</b>")}]}
    handed: list[set[str]] = []
    with pytest.raises(InvalidFhirError, match=r"Patient\.name\[0\]\.text: .*HTML"):
        validate_resource(data, personal=handed.append)
    assert handed == [personal_strings(data)]
    assert "<b>x</b>" in handed[0]  # as personal_strings takes a name's text


@pytest.mark.parametrize("personal", [True, False], ids=["personal", "rules-alone"])
def test_where_the_walk_gives_up_the_rules_still_decide(personal: bool) -> None:
    """A message the walk refuses but the models accept: `_check_rules` names a rule it
    breaks, and lets it pass where it breaks none."""
    handed: list[set[str]] = []
    hand = handed.append if personal else None
    fine = {"resourceType": "Patient", "name": [{"family": _Text("Jansen")}]}
    assert _one_walk(fine) is None
    assert validate_resource(fine, personal=hand) == "Patient"
    broken = {"resourceType": "Patient", "name": [{"family": _Text("Jansen")}], "telecom": []}
    with pytest.raises(InvalidFhirError, match=r"Patient\.telecom: an array must not be empty"):
        validate_resource(broken, personal=hand)
    assert handed == ([{"Jansen"}, {"Jansen"}] if personal else [])


def test_the_personal_strings_of_an_invalid_message_are_handed_over_before_it_fails() -> None:
    bundle = referral_bundle("VERW-WALK-3")
    bundle["entry"][0]["resource"]["unknownElement"] = True
    handed: list[set[str]] = []
    with pytest.raises(InvalidFhirError):
        validate_resource(bundle, personal=handed.append)
    assert handed == [personal_strings(bundle)]
    assert handed[0]


def test_a_broken_rule_found_by_the_walk_is_named() -> None:
    bundle = referral_bundle("VERW-WALK-4")
    bundle["entry"][0]["resource"]["note"] = [{"text": "zie <b>bijlage</b>"}]
    handed: list[set[str]] = []
    with pytest.raises(InvalidFhirError, match=r"entry\[0\]\.resource\.note\[0\]\.text"):
        validate_resource(bundle, personal=handed.append)
    assert handed == [personal_strings(bundle)]
