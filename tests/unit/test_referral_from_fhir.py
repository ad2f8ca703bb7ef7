from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.fhir.referral import referral_from_bytes
from schemas.errors import SchakelError
from schemas.participants import Participants
from services.demo.samples import DEMO_BSN, referral_bundle, to_bytes
from services.domain.routing import route
from tests.unit.mutation import mutate

Bundle = dict[str, Any]


def _parse(bundle: Bundle, participants: Participants, **kw: Any):  # type: ignore[no-untyped-def]
    return referral_from_bytes(to_bytes(bundle), participants, **kw)


def _resource(bundle: Bundle, kind: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind)


def test_reads_everything_the_hub_uses(participants: Participants) -> None:
    referral = _parse(referral_bundle("VERW-T-1"), participants)
    assert referral.referral_id == "VERW-T-1"
    assert referral.client.bsn == DEMO_BSN
    assert referral.client.name == "Anna de Vries-Bakker"
    assert referral.client.phone == "06-98765432"
    assert referral.client.email == "a.devries@example.nl"
    address = referral.client.address
    assert address is not None
    assert (address.street, address.house_number, address.postal_code) == (
        "Kerkstraat",
        "12a",
        "7901 AB",
    )
    assert address.municipality == "0118"  # "Hoogeveen" resolved through [municipalities]
    assert referral.reason.startswith("Eenzaam sinds overlijden partner")
    assert referral.referrer.agb == "01234567"
    assert referral.referrer.practice_id == "praktijk-de-linde"
    assert route(referral, participants).id == "welzijn-hoogeveen"


@pytest.mark.parametrize(
    ("line", "street", "number"),
    [
        ("Kerkstraat 12 A bis", "Kerkstraat", "12 A bis"),
        ("Kerkstraat 12-3hg", "Kerkstraat", "12-3hg"),
        ("Kerkstraat 12 boven", "Kerkstraat", "12 boven"),
        ("Kerkstraat12", "Kerkstraat", "12"),
        ("Straat 7 - 2", "Straat", "7 - 2"),
        ("Plein 1940-1945 12", "Plein 1940-1945", "12"),  # numbers in the street's name
        ("Laan van 1813 4", "Laan van 1813", "4"),
        ("2e Hugo de Grootstraat 3", "2e Hugo de Grootstraat", "3"),
        ("Kerkstraat", "Kerkstraat", None),
        ("1a" * 100 + " -", "1a" * 100 + " -", None),  # too long to split: as it is
    ],
)
def test_an_address_lines_house_number_is_its_last_number(
    participants: Participants, line: str, street: str, number: str | None
) -> None:
    bundle = referral_bundle("VERW-T-2")
    _resource(bundle, "Patient")["address"][0]["line"] = [line]
    address = _parse(bundle, participants).client.address
    assert address is not None
    assert (address.street, address.house_number) == (street, number)


@pytest.mark.parametrize("code", ["7901AB", "7901 ab", "7901-AB", " 7901 - AB "])
def test_a_dutch_postcode_is_written_1234_AB(participants: Participants, code: str) -> None:
    bundle = referral_bundle("VERW-T-3")
    _resource(bundle, "Patient")["address"][0]["postalCode"] = code
    address = _parse(bundle, participants).client.address
    assert address is not None and address.postal_code == "7901 AB"


def test_performer_wins_over_municipality(participants: Participants) -> None:
    referral = _parse(referral_bundle(performer_ura="23456789"), participants)
    assert referral.performer_id == "welzijn-de-wolden"
    assert route(referral, participants).id == "welzijn-de-wolden"


def test_district_may_be_a_cbs_code(participants: Participants) -> None:
    referral = _parse(referral_bundle(district="1690"), participants)
    assert route(referral, participants).id == "welzijn-de-wolden"


def test_reason_falls_back_to_the_first_note_line(participants: Participants) -> None:
    bundle = referral_bundle(with_diagnosis=False)
    sr = _resource(bundle, "ServiceRequest")
    del sr["reasonCode"]
    sr["note"] = [{"text": "Mantelzorger, overbelast\nTweede regel met details"}]
    assert _parse(bundle, participants).reason == "Mantelzorger, overbelast"


def _drop_sr(b: Bundle) -> None:
    b["entry"] = [e for e in b["entry"] if e["resource"]["resourceType"] != "ServiceRequest"]


def _two_srs(b: Bundle) -> None:
    sr = copy.deepcopy(_resource(b, "ServiceRequest"))
    sr["id"] = "sr-2"
    b["entry"].append({"fullUrl": "urn:uuid:7d1f0c1e-0000-4000-8000-0000000000ff", "resource": sr})


def _set(kind: str, key: str, value: Any) -> Callable[[Bundle], None]:
    def mutate(b: Bundle) -> None:
        _resource(b, kind)[key] = value

    return mutate


def _delete(kind: str, key: str) -> Callable[[Bundle], None]:
    def mutate(b: Bundle) -> None:
        _resource(b, kind).pop(key, None)

    return mutate


def _no_contact(b: Bundle) -> None:
    patient = _resource(b, "Patient")
    patient.pop("telecom", None)
    patient.pop("address", None)


def _empty_contact(b: Bundle) -> None:
    patient = _resource(b, "Patient")
    patient["telecom"] = [{"system": "phone", "use": "mobile"}]
    patient.pop("address", None)


def _no_reason(b: Bundle) -> None:
    sr = _resource(b, "ServiceRequest")
    sr.pop("reasonCode", None)
    sr.pop("note", None)


def _unknown_practice(b: Bundle) -> None:
    _resource(b, "Organization")["identifier"][0]["value"] = "09999999"


@pytest.mark.parametrize(
    ("mutate", "reason", "words"),
    [
        (_drop_sr, "invalid-referral", "exactly one ServiceRequest, found 0"),
        (_two_srs, "invalid-referral", "found 2"),
        (_set("ServiceRequest", "status", "draft"), "invalid-referral", "status must be active"),
        (_set("ServiceRequest", "intent", "plan"), "invalid-referral", "intent must be order"),
        (
            _set("ServiceRequest", "identifier", [{"system": "urn:x"}]),
            "invalid-referral",
            "referral id",
        ),
        (
            _set("ServiceRequest", "subject", {"reference": "Patient/nowhere"}),
            "invalid-referral",
            "subject",
        ),
        (
            _set("Patient", "identifier", [{"system": "urn:other", "value": "1"}]),
            "invalid-referral",
            "no BSN",
        ),
        (
            _set(
                "Patient",
                "identifier",
                [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "123456789"}],
            ),
            "invalid-bsn",
            "11-proef",
        ),
        (_delete("Patient", "name"), "invalid-referral", "no name"),
        (_no_contact, "invalid-referral", "telecom or address"),
        (
            _set(
                "Practitioner",
                "identifier",
                [{"system": "http://fhir.nl/fhir/NamingSystem/agb-z", "value": "123"}],
            ),
            "invalid-agb",
            "8 digits",
        ),
        (_delete("Practitioner", "identifier"), "invalid-referral", "no AGB-Z"),
        (_unknown_practice, "unknown-participant", "not a known participant"),
        (_no_reason, "invalid-referral", "one-line reason"),
        (_set("Patient", "birthDate", "14-03-1948"), "invalid-fhir", "birthDate"),
        # what the hub would otherwise read as absent (FHIR: must not be processed so)
        (_set("ServiceRequest", "doNotPerform", True), "invalid-referral", "doNotPerform"),
        (
            _set("ServiceRequest", "modifierExtension", [{"url": "urn:x", "valueBoolean": True}]),
            "invalid-referral",
            "ServiceRequest.modifierExtension: not understood",
        ),
        (
            _set("Patient", "implicitRules", "urn:rules"),
            "invalid-referral",
            "Patient.implicitRules: not understood",
        ),
        # fhir.resources' uri pattern does not anchor its "no white space"
        (
            _set("ServiceRequest", "identifier", [{"system": "urn:oid:2.16 .1", "value": "V-1"}]),
            "invalid-referral",
            "a URI without spaces",
        ),
        # a telecom with nothing in it is no contact
        (_empty_contact, "invalid-referral", "telecom or address"),
        # a trailing line break, which a pattern's "$" lets through in Python
        (
            _set(
                "Practitioner",
                "identifier",
                [{"system": "http://fhir.nl/fhir/NamingSystem/agb-z", "value": "01234567\n"}],
            ),
            "invalid-agb",
            "8 digits",
        ),
        (
            _set("ServiceRequest", "identifier", [{"system": "urn:x", "value": "VERW-1\n"}]),
            "invalid-referral",
            "printable characters",
        ),
        # valid FHIR, but before the year 1 in UTC: Python's datetime overflows
        (
            _set("ServiceRequest", "authoredOn", "0001-01-01T00:00:00+14:00"),
            "invalid-referral",
            "unreadable referral (OverflowError)",
        ),
    ],
)
def test_each_bad_input_class_has_its_reason(
    mutate: Callable[[Bundle], None], reason: str, words: str, participants: Participants
) -> None:
    bundle = referral_bundle()
    mutate(bundle)
    with pytest.raises(SchakelError) as info:
        _parse(bundle, participants)
    assert info.value.reason == reason
    assert words in info.value.detail
    assert DEMO_BSN not in info.value.detail


def test_not_json_not_fhir_not_a_bundle(participants: Participants) -> None:
    cases = [
        (b"", "invalid-json"),
        (b"<xml/>", "invalid-json"),
        (b"[1,2]", "invalid-json"),
        (b'{"hello": 1}', "invalid-fhir"),
        (b'{"resourceType": "Nonsense"}', "invalid-fhir"),
        (to_bytes({"resourceType": "Patient", "id": "p"}), "invalid-referral"),
    ]
    for raw, reason in cases:
        with pytest.raises(SchakelError) as info:
            referral_from_bytes(raw, participants)
        assert info.value.reason == reason, raw


def test_too_large_and_too_deep(participants: Participants) -> None:
    with pytest.raises(SchakelError) as info:
        referral_from_bytes(b"{" + b" " * 2_000_000 + b"}", participants)
    assert info.value.reason == "too-large"
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    with pytest.raises(SchakelError) as info:
        referral_from_bytes(deep, participants)
    assert info.value.reason == "invalid-json"


def test_production_refuses_fictional_bsn(participants: Participants) -> None:
    with pytest.raises(SchakelError) as info:
        _parse(referral_bundle(), participants, allow_test_bsn=False)
    assert info.value.reason == "invalid-bsn"
    assert (
        _parse(referral_bundle(bsn="123456782"), participants, allow_test_bsn=False).client.bsn
        == "123456782"
    )


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_mutated_bundles_raise_only_schakel_errors(
    data: st.DataObject, participants: Participants
) -> None:
    """Whatever a sender breaks, the parser answers with a reasoned refusal or a referral."""
    try:
        referral_from_bytes(orjson.dumps(mutate(referral_bundle(), data)), participants)
    except SchakelError as exc:
        assert exc.detail
        assert DEMO_BSN not in exc.detail


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_schakel_errors(raw: bytes, participants: Participants) -> None:
    with pytest.raises(SchakelError):
        referral_from_bytes(raw, participants)
