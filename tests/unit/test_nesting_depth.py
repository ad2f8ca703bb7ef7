"""Nesting depth: a resource holding an object or array deeper than `MAX_DEPTH` (64) levels
is refused `invalid-fhir` ("nested deeper than 64 levels") by the lean and the full path
alike, before either judges it. Before, an extension nested a hundred or more levels in
extensions passed the lean models while fhir.resources ran out of Python stack on it
(RecursionError), so the two paths answered differently, and the intake accepted it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.fhir import lean, validate
from adapters.fhir.common import PERSONAL_DEPTH, personal_strings
from adapters.fhir.consent import consent_from_bytes
from adapters.fhir.referral import referral_from_bytes
from adapters.fhir.validate import MAX_DEPTH, _check_rules, _walk, load_json, validate_resource
from adapters.welfare.feedback import feedback_from_bytes
from schemas.errors import InvalidFhirError, InvalidJsonError, SchakelError
from schemas.messages import InboundRecord
from schemas.participants import Participants
from schemas.registration import MessageDeadLettered, ReferralAwaitingConsent
from services.demo.samples import consent_resource, fictional_bsn, referral_bundle
from services.intake.handlers import intake_pipeline
from tests.conftest import CORPUS, hub_on

Json = dict[str, Any]
Outcome = tuple[str, str]


def _depth(node: Any) -> int:
    """The depth of the deepest object or array in `node` (its own object at 0)."""
    deepest, stack = -1, [(node, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(resource_type: str) -> Outcome:
    return "invalid-fhir", f"{resource_type}: nested deeper than {MAX_DEPTH} levels"


def _outcome(check: Callable[[], str]) -> Outcome:
    try:
        return "ok", check()
    except SchakelError as exc:
        return exc.reason, exc.detail


def _hub_path(data: Json, **kw: Any) -> Outcome:
    return _outcome(lambda: validate_resource(data, **kw))


def _full_path(data: Json) -> Outcome:
    """Without the fast path: fhir.resources' R4B model, then the hub's own rules."""

    def full() -> str:
        validate._validate_full(data, data["resourceType"])
        validate._check_rules(data, data["resourceType"])
        return data["resourceType"]

    return _outcome(full)


# --- inputs: the ways a referral Bundle or a Consent can nest ---------------------------------


def _extensions(levels: int, leaf: Json | None = None) -> Json:
    node = leaf or {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(levels):
        node = {"url": "http://example.org/ext", "extension": [node]}
    return node


def _assigners(levels: int) -> Json:
    ident: Json = {"system": "urn:oid:2.16.528.1", "value": "1"}
    for _ in range(levels):
        ident = {"system": "urn:oid:2.16.528.1", "value": "1", "assigner": {"identifier": ident}}
    return ident


def _contained(levels: int) -> list[Json]:
    node: Json = {"resourceType": "Organization", "id": "o"}
    for i in range(levels):
        node = {"resourceType": "Organization", "id": f"o{i}", "contained": [node]}
    return [node]


def _arrays(levels: int) -> Any:
    node: Any = "x"
    for _ in range(levels):
        node = [node]
    return node


def _on_patient(key: str, value: Callable[[int], Any]) -> Callable[[int], Json]:
    def build(levels: int) -> Json:
        bundle = referral_bundle("VERW-DEEP-1")
        patient = next(
            e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
        )
        patient[key] = value(levels)
        return bundle

    return build


def _provisions(levels: int) -> Json:
    consent = consent_resource("c-deep-1")
    node: Json = {"type": "permit"}
    for _ in range(levels):
        node = {"type": "permit", "provision": [node]}
    consent["provision"]["provision"] = [node]
    return consent


def _bundles(levels: int) -> Json:
    node = referral_bundle("VERW-DEEP-2")
    for i in range(levels):
        node = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}", "resource": node}],
        }
    return node


SHAPES: dict[str, Callable[[int], Json]] = {
    "extension-in-extension": _on_patient("extension", lambda n: [_extensions(n)]),
    "coding-leaf-extensions": _on_patient(
        "extension",
        lambda n: [_extensions(n, {"url": "http://e.org/c", "valueCoding": {"code": "x"}})],
    ),
    "identifier-assigner": _on_patient("identifier", lambda n: [_assigners(n)]),
    "contained": _on_patient("contained", _contained),
    "array-in-unknown-element": _on_patient("unknownElement", _arrays),
    "primitive-extension": _on_patient("_gender", lambda n: {"extension": [_extensions(n)]}),
    "consent-provision": _provisions,
    "bundle-in-bundle": _bundles,
}


def _around_the_limit(build: Callable[[int], Json]) -> list[Json]:
    """The inputs of `build` at depths MAX_DEPTH - 3 to MAX_DEPTH + 3."""
    found, levels = [], 0
    while (depth := _depth(build(levels))) <= MAX_DEPTH + 3:
        if depth >= MAX_DEPTH - 3:
            found.append(build(levels))
        levels += 1
    assert min(map(_depth, found)) <= MAX_DEPTH < max(map(_depth, found))
    return found


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_both_paths_answer_the_same_at_the_limit(shape: str) -> None:
    for data in _around_the_limit(SHAPES[shape]):
        hub, full = _hub_path(data), _full_path(data)
        assert hub == full, (shape, _depth(data))
        assert (hub == _too_deep(data["resourceType"])) == (_depth(data) > MAX_DEPTH)


def test_the_deepest_extension_allowed_takes_the_fast_path_and_one_more_is_refused() -> None:
    allowed = next(
        d for d in _around_the_limit(SHAPES["coding-leaf-extensions"]) if _depth(d) == MAX_DEPTH
    )
    deeper = next(
        d for d in _around_the_limit(SHAPES["extension-in-extension"]) if _depth(d) == MAX_DEPTH + 1
    )
    assert lean.accepts(allowed)
    assert _hub_path(allowed) == _full_path(allowed) == ("ok", "Bundle")
    assert lean.accepts(deeper)  # the lean models have no limit: validate_resource has
    assert _hub_path(deeper) == _full_path(deeper) == _too_deep("Bundle")


@pytest.mark.parametrize("levels", [100, 200, 480], ids=lambda n: f"{n}-extensions")
def test_extensions_nested_too_deep_for_fhir_resources_are_refused_on_both_paths(
    levels: int,
) -> None:
    """Where the lean models accept and fhir.resources ran out of stack: the same refusal,
    with the personal strings handed over first, as for any refusal."""
    bundle = SHAPES["extension-in-extension"](levels)
    handed: list[set[str]] = []
    assert _hub_path(bundle, personal=handed.append) == _too_deep("Bundle")
    assert handed == [personal_strings(bundle)] and handed[0]
    assert _hub_path(bundle) == _full_path(bundle) == _too_deep("Bundle")


@pytest.mark.parametrize("levels", [65, 300, 1000], ids=lambda n: f"{n}-arrays")
def test_an_unknown_element_nested_deep_is_refused_for_its_depth(levels: int) -> None:
    for data in (SHAPES["array-in-unknown-element"](levels), _provisions(levels)):
        assert _hub_path(data) == _full_path(data) == _too_deep(data["resourceType"])


def _deep_bytes(template: Json, levels: int) -> bytes:
    """`template` as JSON with its "DEEP" string replaced by extensions nested `levels`
    deep (orjson does not write more than 255 levels, the hub reads up to 1024)."""
    nested = (
        b'{"url":"http://example.org/ext","extension":[' * levels
        + b'{"url":"http://example.org/leaf","valueString":"x"}'
        + b"]}" * levels
    )
    raw = orjson.dumps(template).replace(b'"DEEP"', b"[" + nested + b"]")
    assert raw.count(b"http://example.org/ext") == levels
    return raw


@pytest.mark.parametrize("levels", [40, 200, 505], ids=lambda n: f"{n}-extensions")
def test_the_intake_parsers_refuse_a_deep_message_as_invalid_fhir(
    levels: int, participants: Participants
) -> None:
    """Every depth orjson reads (up to 1024 levels) gets the same reasoned refusal."""
    bundle = referral_bundle("VERW-DEEP-3")
    bundle["entry"][1]["resource"]["extension"] = "DEEP"
    consent = consent_resource("c-deep-2")
    consent["extension"] = "DEEP"
    for parse, template, kind in (
        (referral_from_bytes, bundle, "Bundle"),
        (consent_from_bytes, consent, "Consent"),
    ):
        with pytest.raises(InvalidFhirError) as refused:
            parse(_deep_bytes(template, levels), participants)
        assert (refused.value.reason, refused.value.detail) == _too_deep(kind)


def test_beyond_what_orjson_reads_it_stays_invalid_json(participants: Participants) -> None:
    bundle = referral_bundle("VERW-DEEP-4")
    bundle["entry"][1]["resource"]["extension"] = "DEEP"
    with pytest.raises(InvalidJsonError):
        referral_from_bytes(_deep_bytes(bundle, 520), participants)
    with pytest.raises(SchakelError):  # the feedback reader is not affected
        feedback_from_bytes(_deep_bytes({"referral_id": "DEEP"}, 300))


def test_the_intake_dead_letters_a_deep_referral_with_its_reason(tmp_path: Path) -> None:
    hub = hub_on(f"sqlite:///{tmp_path / 'hub.db'}")
    records = []
    for offset, levels in enumerate((3, 200)):
        bundle = referral_bundle(f"VERW-DEEP-{levels}", bsn=fictional_bsn(offset))
        bundle["entry"][1]["resource"]["extension"] = "DEEP"
        value = _deep_bytes(bundle, levels)
        key = f"VERW-DEEP-{levels}".encode()
        records.append(InboundRecord("referral-created", 0, offset, key, value, (), 0))
    events = intake_pipeline(hub).process(records)
    waiting = [e.referral_id for e in events if isinstance(e, ReferralAwaitingConsent)]
    assert waiting == ["VERW-DEEP-3"]
    dead = [(e.key, e.reason, e.detail) for e in events if isinstance(e, MessageDeadLettered)]
    assert dead == [("VERW-DEEP-200", *_too_deep("Bundle"))]


def _with_frames_in_use(frames: int, call: Callable[[], Any]) -> Any:
    return call() if frames <= 0 else _with_frames_in_use(frames - 1, call)


def test_fhir_resources_judges_the_deepest_message_allowed_with_stack_to_spare() -> None:
    """The costliest shape per level (an Identifier.assigner chain: about 8 Python frames a
    level in fhir.resources) near MAX_DEPTH, on the full path, with 250 more frames in use
    than the test itself needs (as if the recursion limit were Python's default 1,000): the
    limit leaves the models room for their caller."""
    in_use = 250 + sys.getrecursionlimit() - 1000
    build = SHAPES["identifier-assigner"]
    deepest = max((d for d in _around_the_limit(build) if _depth(d) <= MAX_DEPTH), key=_depth)
    assert _depth(deepest) >= MAX_DEPTH - 1  # two levels a step
    assert _with_frames_in_use(in_use, lambda: _full_path(deepest)) == ("ok", "Bundle")
    assert _with_frames_in_use(in_use, lambda: _hub_path(deepest)) == ("ok", "Bundle")


@pytest.mark.parametrize("personal", [True, False], ids=["personal", "rules-alone"])
def test_the_walk_and_the_rules_agree_on_depth(personal: bool) -> None:
    """`_walk` (which every message takes) finds a node past MAX_DEPTH broken, as
    `_check_rules` does, and goes no deeper: no recursion limit for it to reach."""
    start = 0 if personal else validate._PAST_PERSONAL
    assert MAX_DEPTH >= PERSONAL_DEPTH  # every personal string within the limit is found
    for levels in (MAX_DEPTH, MAX_DEPTH + 1, 900):
        tree = {"resourceType": "Basic", "x": _arrays(levels)}
        assert _depth(tree) == levels
        found: set[str] = set()
        broken = _walk(tree, found, start)
        assert broken == (levels > MAX_DEPTH)
        if broken:
            with pytest.raises(InvalidFhirError, match=f"nested deeper than {MAX_DEPTH} levels"):
                _check_rules(tree, "Basic")
        else:
            _check_rules(tree, "Basic")


def test_the_hubs_own_messages_and_the_corpus_are_far_from_the_limit() -> None:
    depths = [_depth(referral_bundle()), _depth(consent_resource())]
    for path in sorted(CORPUS.glob("*/*.json")):
        try:
            depths.append(_depth(load_json(path.read_bytes())))
        except SchakelError:
            continue
    assert len(depths) > 90
    assert max(depths) <= MAX_DEPTH // 4
