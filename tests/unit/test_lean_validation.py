"""The fast path of `validate_resource` (adapters/fhir/lean.py) is never more permissive
than fhir.resources: lean accepts => the R4B model accepts, and `validate_resource` answers
exactly what the full path (R4B model, then the hub's own rules) answers.

Three kinds of evidence: the lean models mirror the R4B models element by element (names,
types, cardinality, required elements, choice types); both paths agree on the corpus, the
hub's own fixtures and a table of edge values in every kind of primitive; and a property
test mutates valid Bundles and Consents and compares the paths on each mutant."""

from __future__ import annotations

import copy
import json
import types
from collections.abc import Callable, Iterator
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import orjson
import pytest
from annotated_types import MinLen
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from fhir_core.types import FhirBase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator
from pydantic.fields import FieldInfo

from adapters.fhir import lean, validate
from adapters.fhir.validate import load_json, validate_resource
from bench.workload import ORGANISATIONS, consent, referral, trajectory
from schemas.errors import InvalidFhirError, SchakelError
from services.demo.samples import consent_resource, referral_bundle
from tests.conftest import CORPUS
from tests.unit.mutation import LEAF

Json = dict[str, Any]
Outcome = tuple[str, str]


# --- the two paths --------------------------------------------------------------------------


def _r4b_accepts(data: Json) -> bool:
    try:
        get_fhir_model_class(data["resourceType"]).model_validate(data)
    except Exception:  # noqa: BLE001 - any failure is a rejection
        return False
    return True


def _full_path(data: Json) -> Outcome:
    """`validate_resource` as it was before the fast path: the R4B model, then the rules."""
    resource_type = data.get("resourceType")
    try:
        if not isinstance(resource_type, str) or not resource_type:
            raise InvalidFhirError("no resourceType: not a FHIR resource")
        validate._validate_full(data, resource_type)
        validate._check_rules(data, resource_type)
    except SchakelError as exc:
        return exc.reason, exc.detail
    return "ok", resource_type


def _hub_path(data: Json) -> Outcome:
    try:
        return "ok", validate_resource(data)
    except SchakelError as exc:
        return exc.reason, exc.detail


def _same_verdict(data: Json) -> bool:
    """Asserts the subset invariant and equal answers; returns whether lean accepted."""
    snapshot = copy.deepcopy(data)
    fast = lean.accepts(data)
    if fast:
        assert _r4b_accepts(data), "lean accepted what fhir.resources rejects"
    assert _hub_path(data) == _full_path(data)
    assert data == snapshot, "validation changed its input"
    return fast


# --- inputs ---------------------------------------------------------------------------------


def _rich_bundle() -> Json:
    """A referral Bundle using more of what the lean models cover: a transaction with
    meta, narrative, extensions, choice types, contained resources and notes."""
    bundle = referral_bundle("VERW-RICH-1", performer_ura="23456789")
    bundle.update(
        type="transaction",
        timestamp="2026-11-30T09:15:00.123+01:00",
        meta={"lastUpdated": "2026-11-30T08:15:00Z", "profile": ["http://example.org/p"]},
        identifier={"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1"},
    )
    for entry in bundle["entry"]:
        kind = entry["resource"]["resourceType"]
        entry["request"] = {"method": "POST", "url": kind}
    patient = bundle["entry"][1]["resource"]
    patient.update(
        active=True,
        deceasedBoolean=False,
        text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">A</div>'},
        extension=[
            {"url": "http://example.org/a", "valueString": "x"},
            {"url": "http://example.org/b", "extension": [{"url": "c", "valueInteger": 3}]},
        ],
        contact=[{"relationship": [{"text": "dochter"}], "telecom": [{"system": "phone"}]}],
        communication=[{"language": {"coding": [{"code": "nl"}]}, "preferred": True}],
        generalPractitioner=[{"reference": "urn:uuid:7d1f0c1e-0000-4000-8000-000000000003"}],
    )
    patient["telecom"][0]["rank"] = 1
    patient["name"][0]["period"] = {"start": "1970", "end": "2030-01"}
    service_request = bundle["entry"][0]["resource"]
    service_request.update(
        priority="routine",
        occurrencePeriod={"start": "2026-12-01", "end": "2026-12-31"},
        category=[{"coding": [{"system": "http://snomed.info/sct", "code": "410606002"}]}],
        contained=[{"resourceType": "Organization", "id": "o1", "name": "Welzijn"}],
    )
    service_request["note"][0].update(
        authorReference={"reference": "urn:uuid:7d1f0c1e-0000-4000-8000-000000000002"},
        time="2026-11-30T09:00:00+01:00",
    )
    return bundle


def _rich_consent() -> Json:
    resource = consent_resource(
        "toestemming-rich",
        period={"start": "2026-11-30", "end": "2027-11-30T00:00:00Z"},
        classes=("referral", "contact"),
        municipality_cbs=("0118",),
    )
    resource.update(
        meta={"versionId": "2", "source": "urn:uuid:abc"},
        identifier=[{"system": "urn:oid:1.2.3", "value": "c-1"}],
        performer=[{"reference": "Patient/pat-1"}],
        organization=[{"reference": "#org"}],
        contained=[{"resourceType": "Organization", "id": "org", "active": True}],
        sourceAttachment={"title": "Toestemming", "url": "http://example.org/c.pdf"},
        policy=[{"uri": "http://example.org/policy"}],
        verification=[{"verified": True, "verificationDate": "2026-11-30"}],
    )
    resource["provision"]["actor"][0]["reference"]["display"] = "Welzijn"
    return resource


def _hub_bundles() -> Iterator[Json]:
    yield referral_bundle()
    yield referral_bundle("VERW-2", performer_ura="23456789", with_diagnosis=False)
    yield referral_bundle("VERW-3", district=None, phone=None, email="x@example.nl")
    yield referral_bundle("VERW-4", district="1690", email=None)
    for i in range(4):
        yield orjson.loads(referral("t", f"VERW-B-{i}", trajectory(i)).value)


def _hub_consents() -> Iterator[Json]:
    yield consent_resource()
    yield consent_resource("c-2", referral_id=None)
    yield consent_resource("c-3", bsn=None, status="inactive")
    yield consent_resource("c-4", period={"start": "2026-12-01", "end": "2027-01"})
    yield consent_resource("c-5", classes=("referral", "contact-email"), municipality_cbs=("0118",))
    yield consent_resource("c-6", recipient_ura=tuple(o.ura for o in ORGANISATIONS))
    for i in range(4):
        yield orjson.loads(consent("t", f"VERW-B-{i}", trajectory(i)).value)


def _nodes(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) in a document, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        yield node, key
        if isinstance(value, dict | list):
            yield from _nodes(value)


def _hub_inputs() -> list[Json]:
    return [*_hub_bundles(), *_hub_consents(), _rich_bundle(), _rich_consent()]


HUB_INPUTS = _hub_inputs()


# --- 1. the lean models mirror the R4B models -------------------------------------------------


def _full_class(model: type[lean.Lean]) -> type:
    module, name = model.__full__.split(".")
    return getattr(import_module(f"fhir.resources.R4B.{module}"), name)


def _without_none(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in get_args(tp) if a is not type(None)]
        return rest[0] if len(rest) == 1 else tp
    return tp


def _r4b_shape(field: FieldInfo) -> tuple[bool, Any]:
    """(repeats, item type) of an R4B element: `Optional[List[Optional[X]]]` -> (True, X)."""
    tp = _without_none(field.annotation)
    if get_origin(tp) is list:
        return True, _without_none(get_args(tp)[0])
    return False, tp


def _lean_shape(hint: Any, where: str) -> tuple[bool, Any]:
    """(repeats, item type) of a lean element, the item's narrowing metadata (MinLen, the
    check by fhir.resources' own date/time type) taken off; fails on anything else that
    could widen it, and on any None in the type."""

    def plain(tp: Any) -> Any:
        assert get_origin(tp) not in (Union, types.UnionType) or type(None) not in get_args(tp), (
            f"{where}: a lean element must not admit null"
        )
        if get_origin(tp) is not Annotated:
            return tp
        base, *metadata = get_args(tp)
        kept = []
        for item in metadata:
            if isinstance(item, MinLen):
                continue
            if isinstance(item, AfterValidator) and hasattr(item.func, "full_type"):
                assert base is str, f"{where}: a date/time check applies to strict strings"
                return item.func.full_type
            kept.append(item)
        return Annotated[(base, *kept)] if kept else base

    tp = plain(hint)
    if get_origin(tp) is list:
        return True, plain(get_args(tp)[0])
    return False, tp


def _r4b_elements(full: type) -> dict[str, FieldInfo]:
    return {
        field.alias or name: field
        for name, field in full.model_fields.items()
        if not name.endswith("__ext") and name != "fhir_comments"
    }


def _check_item(where: str, lean_item: Any, full_item: Any) -> None:
    if isinstance(full_item, type) and issubclass(full_item, FhirBase):
        target = full_item.get_model_klass()
        if target is Resource:  # a nested resource: the lean union of resource models
            assert get_origin(lean_item) is Annotated, where
            union, info = get_args(lean_item)
            assert isinstance(info, FieldInfo) and info.discriminator == "resourceType", where
            assert set(get_args(union)) == set(lean.RESOURCES), where
            return
        assert isinstance(lean_item, type) and issubclass(lean_item, lean.Lean), where
        assert _full_class(lean_item) is target, f"{where}: {lean_item.__name__} is not {target}"
        return
    assert lean_item == full_item, f"{where}: lean {lean_item!r} is not R4B {full_item!r}"


@pytest.mark.parametrize("model", lean.MODELS, ids=lambda m: m.__name__)
def test_the_lean_model_mirrors_its_r4b_model(model: type[lean.Lean]) -> None:
    full = _full_class(model)
    # Otherwise pydantic's defaults on both sides (the same regex engine, no coercions).
    assert model.model_config == {"extra": "forbid", "strict": True}
    assert set(full.model_config) <= {"extra", "validate_assignment", "populate_by_name"}
    decorators = model.__pydantic_decorators__
    assert not (decorators.validators or decorators.field_validators or decorators.root_validators)
    for name, decorator in decorators.model_validators.items():
        assert (name, decorator.info.mode) == ("_one_type_per_choice", "after")

    r4b = _r4b_elements(full)
    hints = get_type_hints(model, include_extras=True)
    lean_names: dict[str, str] = {}
    for name, field in model.model_fields.items():
        element = field.alias or name
        lean_names[element] = name
        where = f"{model.__name__}.{element}"
        if element == "resourceType":
            assert field.is_required(), where
            assert hints[name] == Literal[full.__resource_type__], where
            continue
        assert element in r4b, f"{where}: not an element of R4B {full.__name__}"
        assert field.is_required() or field.default is None, where
        lean_list, lean_item = _lean_shape(hints[name], where)
        full_list, full_item = _r4b_shape(r4b[element])
        assert lean_list == full_list, f"{where}: cardinality differs"
        _check_item(where, lean_item, full_item)

    required = {e for e, f in r4b.items() if f.is_required()}
    required |= {element for element, _ in full.model_construct().get_required_fields()}
    for element in required:
        assert element in lean_names, f"{model.__name__}: required {element} missing"
        assert model.model_fields[lean_names[element]].is_required(), element

    for group, fields in full.model_construct().get_one_of_many_fields().items():
        assert not full.model_fields[fields[0]].json_schema_extra["one_of_many_required"]
        present = {f for f in fields if f in lean_names}
        if len(present) > 1:
            assert issubclass(model, lean.LeanWithChoices), f"{model.__name__}.{group}[x]"
            assert any(present <= set(g) for g in model.__choices__), f"{group}[x]"
    for choice in model.__choices__:
        assert set(choice) <= set(lean_names), choice


def test_every_lean_model_is_checked() -> None:
    abstract = {lean.Lean, lean.LeanWithChoices, lean.Element, lean.DomainResource}
    defined = {
        value
        for value in vars(lean).values()
        if isinstance(value, type) and issubclass(value, lean.Lean)
    }
    assert defined - abstract == set(lean.MODELS)
    assert set(lean.TOP_LEVEL.values()) <= set(lean.MODELS)
    for model in lean.RESOURCES:
        assert issubclass(_full_class(model), Resource)


# --- 2. the same answers on the corpus and the fixtures ----------------------------------------

CORPUS_JSON = sorted(CORPUS.rglob("*.json"))


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_bytes())
    except ValueError:
        return False
    return True


CORPUS_VALID_JSON = [p for p in CORPUS_JSON if _is_json(p)]
"""The corpus's test cases of broken JSON on purpose (bad-json-close-*, json-comma-bad-*,
json-comments-2, json-no-quotes-1) never reach either path: left out, and counted."""


def test_the_corpus_holds_seven_files_of_broken_json() -> None:
    broken = [p for p in CORPUS_JSON if p not in CORPUS_VALID_JSON]
    assert len(broken) == 7, [p.name for p in broken]
    for path in broken:
        with pytest.raises(SchakelError):
            load_json(path.read_bytes())


@pytest.mark.parametrize("path", CORPUS_VALID_JSON, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_corpus_gets_the_same_answer(path: Path) -> None:
    _same_verdict(load_json(path.read_bytes()))


def test_the_corpus_consents_take_the_fast_path() -> None:
    consents = [load_json(p.read_bytes()) for p in CORPUS_JSON if p.name.startswith("Consent-")]
    assert len(consents) == 12
    assert all(_same_verdict(c) for c in consents)


@pytest.mark.parametrize("data", HUB_INPUTS, ids=lambda d: f"{d['resourceType']}-{d['id']}")
def test_the_hubs_own_inputs_take_the_fast_path(
    data: Json, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _same_verdict(data)

    def no_full_path(*args: Any) -> None:
        raise AssertionError("fhir.resources was asked")

    monkeypatch.setattr(validate, "_validate_full", no_full_path)
    assert validate_resource(data) == data["resourceType"]


def test_what_lean_does_not_cover_goes_to_fhir_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    full = validate._validate_full

    def counted(data: Json, resource_type: str) -> None:
        calls.append(resource_type)
        full(data, resource_type)

    monkeypatch.setattr(validate, "_validate_full", counted)
    bundle = referral_bundle()
    bundle["entry"][1]["resource"]["_birthDate"] = {"extension": [{"url": "x", "valueCode": "a"}]}
    assert validate_resource(bundle) == "Bundle"  # a primitive extension: valid, not lean
    bundle["entry"][1]["resource"]["birthDate"] = "1948-02-30"
    with pytest.raises(SchakelError) as info:
        validate_resource(bundle)
    assert info.value.detail.startswith("Bundle: entry[1].resource.birthDate: ")
    patient = load_json((CORPUS / "hl7-r4-examples" / "Patient-example.json").read_bytes())
    assert validate_resource(patient) == "Patient"  # not a top-level type lean covers
    assert calls == ["Bundle", "Bundle", "Patient"]


# Values for every kind of primitive, valid and not: FHIR regex edges, dates and times,
# whitespace and odd unicode, wrong JSON types.
EDGE_STRINGS = [
    *("", " ", "a", " a", "a ", "a  b", "a b", "a\nb", "a\n", "\n", "\t", "a\tb", "\r\n"),
    *("\u00a0", "a\u00a0b", "\u200b", "\x0b", "\x00", "\x1f", "\ufeff", "\u2028", "é", "😀"),
    *("\ud800", "a\udfffb", "\U0010ffff", "e\u0301", "\u202e"),
    *("x" * 64, "x" * 255, "x" * 256, "y" * 20_000, "A-Za.z9", "a_b", "a/b", "a:b", "#c1"),
    *("urn:uuid:7d1f0c1e-0000-4000-8000-000000000001", "urn:oid:1.2.3", "Patient/pat-1"),
    *("http://example.org/x y", "http://e.org/ü", "mailto:a@b", "//x", "true", "1", "-1"),
    *("0", "+1", "01", "1.0", "1e3", "<b>x</b>", "javascript:alert(1)"),
    *("2026", "0000", "0001", "1000", "2026-00", "2026-13", "2026-02", "2026-2"),
    *("2026-02-29", "2024-02-29", "2026-04-31", "2026-11-30", "2026-11-30Z", "20261130"),
    *("2026-11-30T09:15:00+01:00", "2026-11-30T09:15:00Z", "2026-11-30T09:15:00"),
    *("2026-11-30T09:15Z", "2026-11-30T24:00:00Z", "2026-11-30T23:59:60Z", "2016-12-31T23:59:60Z"),
    *("2026-11-30T09:15:00.123456789Z", "2026-11-30T09:15:00.Z", "2026-11-30T09:15:00+14:00"),
    *("2026-11-30T09:15:00+14:01", "2026-11-30T09:15:00-13:59", "2026-11-30T09:15:00+1:00"),
    *("2026-11-30 09:15:00Z", "2026-11-30t09:15:00z", "9999-12-31T23:59:59.999999Z"),
]
EDGE_VALUES: list[Any] = [
    *EDGE_STRINGS,
    *(None, True, False, 0, 1, -1, 2**31 - 1, 2**31, 2**70, 1.0, 1.5, -0.0, 1e308),
    *([], {}, [None], [""], ["a"], [{}], {"a": 1}, {"extension": []}, [1]),
]


def _entry(kind: str) -> Callable[[Json], Json]:
    return lambda b: next(e for e in b["entry"] if e["resource"]["resourceType"] == kind)[
        "resource"
    ]


# (name, builder of the document, where the slot is, key): one slot per kind of primitive
# and then some, in the referral Bundle and the Consent.
SLOTS: list[tuple[str, Callable[[], Json], Callable[[Json], Any], str | int]] = [
    ("id", _rich_bundle, lambda b: b, "id"),
    ("code", _rich_bundle, lambda b: b, "type"),
    ("instant", _rich_bundle, lambda b: b, "timestamp"),
    ("uri", _rich_bundle, lambda b: b["entry"][0], "fullUrl"),
    ("date", _rich_bundle, _entry("Patient"), "birthDate"),
    ("boolean", _rich_bundle, _entry("Patient"), "active"),
    ("string", _rich_bundle, lambda b: _entry("Patient")(b)["name"][0]["given"], 0),
    ("positiveInt", _rich_bundle, lambda b: _entry("Patient")(b)["telecom"][0], "rank"),
    ("xhtml", _rich_bundle, lambda b: _entry("Patient")(b)["text"], "div"),
    ("dateTime", _rich_bundle, _entry("ServiceRequest"), "authoredOn"),
    ("markdown", _rich_bundle, lambda b: _entry("ServiceRequest")(b)["note"][0], "text"),
    ("canonical", _rich_bundle, lambda b: b["meta"]["profile"], 0),
    (
        "integer",
        _rich_bundle,
        lambda b: _entry("Patient")(b)["extension"][1]["extension"][0],
        "valueInteger",
    ),
    ("period", _rich_consent, lambda c: c["provision"]["period"], "start"),
    ("url", _rich_consent, lambda c: c["sourceAttachment"], "url"),
    ("consent-code", _rich_consent, lambda c: c, "status"),
    ("consent-dateTime", _rich_consent, lambda c: c, "dateTime"),
    ("contained-id", _rich_consent, lambda c: c["contained"][0], "id"),
]


@pytest.mark.parametrize(("slot", "build", "where", "key"), SLOTS, ids=[s[0] for s in SLOTS])
def test_edge_values_in_every_kind_of_primitive(
    slot: str, build: Callable[[], Json], where: Callable[[Json], Any], key: str | int
) -> None:
    accepted = 0
    for value in EDGE_VALUES:
        document = build()
        where(document)[key] = value
        accepted += _same_verdict(document)
    assert 0 < accepted < len(EDGE_VALUES), slot  # both paths were exercised


def _one_element_less() -> Iterator[Json]:
    """Each of four inputs with one element (or array item) left out, and with it null."""
    for build in (referral_bundle, consent_resource, _rich_bundle, _rich_consent):
        for index in range(len(list(_nodes(build())))):
            for null in (False, True):
                mutant = build()
                container, key = list(_nodes(mutant))[index]
                if null:
                    container[key] = None
                else:
                    del container[key]
                yield mutant


def test_each_element_dropped_or_null() -> None:
    """Required elements and no nulls: every element of four inputs, one at a time."""
    verdicts = [_same_verdict(mutant) for mutant in _one_element_less()]
    assert len(verdicts) > 400
    assert 0 < sum(verdicts) < len(verdicts)


# A second type for a choice element that has one: valid on its own, never both.
CHOICES = [
    (_entry("Patient"), "deceasedBoolean", "deceasedDateTime", "2026-01-01"),
    (_entry("ServiceRequest"), "occurrencePeriod", "occurrenceDateTime", "2026-12-01"),
    (lambda b: _entry("ServiceRequest")(b)["note"][0], "authorReference", "authorString", "Eva"),
    (lambda b: _entry("Patient")(b)["extension"][0], "valueString", "valueCode", "x"),
    (lambda b: _entry("Patient")(b)["extension"][0], "valueString", "valueBoolean", True),
    (lambda c: c, "sourceAttachment", "sourceReference", {"reference": "DocumentReference/1"}),
]


@pytest.mark.parametrize(
    ("where", "present", "other", "value"), CHOICES, ids=[c[2] for c in CHOICES]
)
def test_a_choice_element_has_one_type(
    where: Callable[[Json], Json], present: str, other: str, value: Any
) -> None:
    build = _rich_consent if present == "sourceAttachment" else _rich_bundle
    alone = build()
    del where(alone)[present]
    where(alone)[other] = value
    assert _same_verdict(alone)
    both = build()
    where(both)[other] = value
    assert not _same_verdict(both)
    assert not _r4b_accepts(both)


# --- 3. mutated Bundles and Consents ---------------------------------------------------------

ELEMENT_NAMES = [
    *("id", "extension", "modifierExtension", "text", "div", "status", "url", "value"),
    *("valueString", "valueCode", "valueBoolean", "deceasedDateTime", "deceasedBoolean"),
    *("occurrenceDateTime", "occurrencePeriod", "authorString", "sourceReference"),
    *("implicitRules", "contained", "resourceType", "fhir_comments", "resource_type"),
    *("class", "class_", "unknownElement", "_family", "_birthDate", "_line", "meta", "system"),
]
RESOURCE_TYPES = [
    *("Patient", "Practitioner", "PractitionerRole", "Organization", "ServiceRequest"),
    *("Consent", "Bundle", "Observation", "RelatedPerson", "Resource", "patient", "", "Nonsense"),
]
VALUES = st.one_of(
    st.sampled_from(EDGE_VALUES),
    LEAF,
    st.text(max_size=12),
    st.builds(lambda url, v: {"url": url, "valueString": v}, st.sampled_from(["x", ""]), LEAF),
)


def _mutate_once(document: Json, data: st.DataObject) -> None:
    container, key = data.draw(st.sampled_from(list(_nodes(document))))
    value = container[key]

    def draw(strategy: st.SearchStrategy[Any]) -> Any:
        return copy.deepcopy(data.draw(strategy))  # the pools' lists and dicts stay unchanged

    operation = data.draw(st.integers(0, 8))
    if operation == 0:  # another value, of any JSON type
        container[key] = draw(VALUES)
    elif operation == 1 and isinstance(container, dict):  # drop the element
        del container[key]
    elif operation == 2 and isinstance(value, dict):  # add an element, known or not
        value[data.draw(st.sampled_from(ELEMENT_NAMES))] = draw(VALUES)
    elif operation == 3 and isinstance(container, dict):  # a sibling `_element`
        container[f"_{key}"] = {"extension": [{"url": "urn:x", "valueString": "y"}]}
    elif operation == 4 and isinstance(value, dict):  # the resourceType of a nested resource
        value["resourceType"] = data.draw(st.sampled_from(RESOURCE_TYPES))
    elif operation == 5 and isinstance(value, list) and value:  # null, or a copy, in an array
        value.append(None if data.draw(st.booleans()) else copy.deepcopy(value[0]))
    elif operation == 6:  # one where an array was, an array where one was
        container[key] = value[0] if isinstance(value, list) and value else [value]
    elif operation == 7 and isinstance(value, str):  # a string changed a little
        change = data.draw(st.sampled_from([" ", "\n", "\u00a0", "😀", "Z", "T", "-", ":60"]))
        container[key] = data.draw(st.sampled_from([value + change, change + value]))
    else:  # an edge value
        container[key] = draw(st.sampled_from(EDGE_VALUES))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_bundles_and_consents(data: st.DataObject) -> None:
    document = copy.deepcopy(data.draw(st.sampled_from(HUB_INPUTS)))
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate_once(document, data)
    _same_verdict(document)
