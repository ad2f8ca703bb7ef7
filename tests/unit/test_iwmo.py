"""The municipal registration: iWmo-style XML, XSD-valid, minimised (golden file)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from adapters.fhir.referral import referral_from_fhir
from adapters.municipal.iwmo import (
    NAMESPACE,
    SAFE_PARSER,
    InvalidOutputError,
    identificatie,
    iwmo_from_disclosure,
    validate,
)
from schemas.consent import DEFAULT_CLASSES, DataClass
from schemas.errors import SchakelError
from schemas.participants import Participants
from services.demo.samples import DEMO_BSN, referral_bundle
from services.domain.minimise import disclose

SENT = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)  # already 2 December in Amsterdam
NS = {"w": NAMESPACE}


def _xml(participants: Participants, classes=DEFAULT_CLASSES, **bundle) -> bytes:  # type: ignore[no-untyped-def]
    return _xml_of(participants, referral_bundle("VERW-M-1", **bundle), classes)


def _xml_of(participants: Participants, bundle: dict, classes=DEFAULT_CLASSES) -> bytes:  # type: ignore[no-untyped-def, type-arg]
    return _rendered(referral_from_fhir(bundle, participants), classes)


def _rendered(referral, classes=DEFAULT_CLASSES) -> bytes:  # type: ignore[no-untyped-def]
    return iwmo_from_disclosure(
        disclose(referral, "municipality", classes),
        identificatie=identificatie(42),
        ontvanger="0118",
        registration_id="83bc14e5-32a8-5495-a101-587b1e740fc2",
        welfare_id="welzijn-hoogeveen",
        welfare_name="Welzijn De Schakel Hoogeveen",
        sent_at=SENT,
    )


def _find(xml: bytes, path: str) -> str | None:
    found = etree.fromstring(xml, SAFE_PARSER).find(path, NS)
    return None if found is None else found.text


def test_header_client_and_gp_as_verwijzer(participants: Participants) -> None:
    xml = _xml(participants)
    validate(xml)
    assert _find(xml, "w:Header/w:BerichtCode") == "SK01"
    assert _find(xml, "w:Header/w:BerichtVersie") == "3"
    assert _find(xml, "w:Header/w:BerichtSubversie") == "2"
    assert _find(xml, "w:Header/w:Afzender") == "01012345"  # the practice's AGB
    assert _find(xml, "w:Header/w:Ontvanger") == "0118"
    ident = _find(xml, "w:Header/w:BerichtIdentificatie/w:Identificatie")
    assert ident == "SK0000000042"
    assert len(ident) <= 12
    assert _find(xml, "w:Header/w:BerichtIdentificatie/w:Dagtekening") == "2026-12-02", (
        "Europe/Amsterdam"
    )
    assert _find(xml, "w:Client/w:Bsn") == DEMO_BSN
    assert _find(xml, "w:Client/w:Geslacht") == "2"
    assert _find(xml, "w:Client/w:Naam/w:Achternaam") == "Vries-Bakker"
    assert _find(xml, "w:Client/w:Naam/w:Voorvoegsel") == "de"
    assert _find(xml, "w:Client/w:Naam/w:Voorletters") == "A"
    assert _find(xml, "w:Client/w:Adres/w:Huisnummer") == "12"
    assert _find(xml, "w:Client/w:Adres/w:Huisletter") == "a"
    assert _find(xml, "w:Client/w:Adres/w:Postcode") == "7901AB"
    assert _find(xml, "w:Verwijzer/w:Type") == "02"
    assert _find(xml, "w:Verwijzer/w:ZorgverlenerCode") == "01234567"
    assert _find(xml, "w:Registratie/w:Referentie") == "83bc14e5-32a8-5495-a101-587b1e740fc2"


def test_minimised_no_reason_without_its_class_never_diagnoses(participants: Participants) -> None:
    xml = _xml(participants, classes=frozenset({DataClass.REFERRAL}))
    text = xml.decode()
    assert _find(xml, "w:Registratie/w:Reden") is None
    assert _find(xml, "w:Client/w:Adres") is None, "address only with contact-address"
    for never in ("Eenzaam", "P03", "Depressief", "sertraline", "06-98765432", "example.nl"):
        assert never not in text
    with_reason = _xml(participants, classes=frozenset({DataClass.REFERRAL, DataClass.REASON}))
    assert _find(with_reason, "w:Registratie/w:Reden").startswith("Eenzaam")


def test_encoding_utf8_without_bom_and_crlf(participants: Participants) -> None:
    xml = _xml(participants, given="Zoë", family="van der Meer")
    assert not xml.startswith(b"\xef\xbb\xbf")
    assert xml.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\r\n")
    assert b"\n" not in xml.replace(b"\r\n", b"")
    assert "Zoë".encode() in xml
    assert _find(xml, "w:Client/w:Naam/w:Voorvoegsel") == "van der"


def test_iwmo_golden(participants: Participants, golden) -> None:  # type: ignore[no-untyped-def]
    golden("wmo-registratie.xml", _xml(participants))


def test_the_xsd_refuses_what_breaks_the_rules(participants: Participants) -> None:
    xml = _xml(participants)
    for old, new in (
        (b"<Identificatie>SK0000000042<", b"<Identificatie>SK00000000420<"),  # 13 characters
        (b"<Type>02<", b"<Type>07<"),
        (b"<Bsn>999900018<", b"<Bsn>99990001<"),
        (b"<Dagtekening>2026-12-02<", b"<Dagtekening>2026-12-02+01:00<"),
    ):
        assert old in xml
        with pytest.raises(InvalidOutputError):
            validate(xml.replace(old, new))


@pytest.mark.parametrize(
    "hostile",
    [
        b'<?xml version="1.0"?><!DOCTYPE b [<!ENTITY x SYSTEM "file:///etc/passwd">]><Bericht>&x;</Bericht>',
        b'<?xml version="1.0"?><!DOCTYPE b [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">]><Bericht>&d;</Bericht>',
        b'<?xml version="1.0"?><!DOCTYPE b SYSTEM "http://127.0.0.1:9/evil.dtd"><Bericht/>',
    ],
)
def test_xml_is_parsed_safely(hostile: bytes) -> None:
    with pytest.raises(InvalidOutputError):
        validate(hostile)
    tree = etree.fromstring(hostile, SAFE_PARSER)
    assert "root:" not in (etree.tostring(tree).decode()), "no external entity was read"


def test_identificatie_bounds() -> None:
    assert identificatie(1) == "SK0000000001"
    assert len(identificatie(9_999_999_999)) == 12
    with pytest.raises(InvalidOutputError):
        identificatie(10**10)


def test_a_message_that_fails_the_xsd_is_never_returned(participants: Participants) -> None:
    referral = referral_from_fhir(referral_bundle("VERW-M-2"), participants)
    with pytest.raises(InvalidOutputError, match="fails the XSD"):
        iwmo_from_disclosure(
            disclose(referral, "municipality", DEFAULT_CLASSES),
            identificatie="SK 1!",  # not a valid Identificatie
            ontvanger="0118",
            registration_id="r",
            welfare_id="welzijn-hoogeveen",
            welfare_name="W",
            sent_at=SENT,
        )


def _with(**patient: object) -> dict:  # type: ignore[type-arg]
    bundle = referral_bundle("VERW-M-3")
    resource = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    for key, value in patient.items():
        if key in ("line", "city"):
            resource["address"][0][key] = value
        else:
            resource[key] = value
    return bundle


@pytest.mark.parametrize(
    "patient",
    [
        {"line": ["Kerkstraat 0"]},  # the XSD's house numbers are 1-99999
        {"city": "   "},  # nothing to name the place by
        {"line": ["   12"]},  # no street
    ],
    ids=["house number 0", "blank city", "blank street"],
)
def test_an_address_the_format_cannot_carry_is_left_out_not_failed(
    participants: Participants,
    patient: dict,  # type: ignore[type-arg]
) -> None:
    """Accepted at intake, so it must not make the registration fail its XSD (which would
    dead-letter the consent that releases it, and stop the timer that does)."""
    xml = _xml_of(participants, _with(**patient))
    assert _find(xml, ".//w:Adres") is None
    assert _find(xml, ".//w:Bsn") == DEMO_BSN


def test_control_characters_become_spaces(participants: Participants) -> None:
    xml = _xml_of(
        participants,
        _with(name=[{"use": "official", "family": "de\x0bVries", "given": ["An\x01na"]}]),
    )
    assert _find(xml, ".//w:Achternaam") == "Vries"  # "de" is its prefix
    assert b"\x0b" not in xml and b"\x01" not in xml


def test_a_blank_own_name_extension_leaves_the_family_name_to_say_it(
    participants: Participants,
) -> None:
    own = "http://hl7.org/fhir/StructureDefinition/humanname-own-name"
    name = {
        "use": "official",
        "family": "de Vries",
        "given": ["Anna"],
        "_family": {"extension": [{"url": own, "valueString": "   "}]},
    }
    xml = _xml_of(participants, _with(name=[name]))
    assert (_find(xml, ".//w:Achternaam"), _find(xml, ".//w:Voorvoegsel")) == ("Vries", "de")


_OWN = "http://hl7.org/fhir/StructureDefinition/humanname-own-name"
_OWN_PREFIX = "http://hl7.org/fhir/StructureDefinition/humanname-own-prefix"
_ODD = st.one_of(
    st.text(alphabet=st.sampled_from(list(" \t\n\x01\x0b\u00a0\u2028aZé-'.09")), max_size=6),
    st.sampled_from(["de", "van der", "Vries", "  ", "\x01", "Kerkstraat 12"]),
)


@settings(max_examples=400, suppress_health_check=list(HealthCheck), deadline=None)
@given(
    family=st.none() | _ODD,
    given_names=st.lists(_ODD, max_size=2),
    text=st.none() | _ODD,
    own=st.none() | _ODD,
    own_prefix=st.none() | _ODD,
    reason=_ODD,
    line=st.none() | _ODD,
    city=st.none() | _ODD,
)
def test_every_referral_the_intake_accepts_renders_a_valid_registration(
    participants: Participants,
    family: str | None,
    given_names: list[str],
    text: str | None,
    own: str | None,
    own_prefix: str | None,
    reason: str,
    line: str | None,
    city: str | None,
) -> None:
    """Names, reasons and addresses of white space, control characters or odd shapes: what
    the intake accepts must render (a registration failing its XSD dead-letters the consent
    that releases it, and nothing reaches the welfare organisation either)."""
    bundle = copy.deepcopy(_BASE)
    entries = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    name: dict[str, object] = {"use": "official", "given": given_names}
    if family is not None:
        name["family"] = family
    if text is not None:
        name["text"] = text
    extensions = [
        {"url": url, "valueString": value}
        for url, value in ((_OWN, own), (_OWN_PREFIX, own_prefix))
        if value is not None
    ]
    if extensions:
        name["_family"] = {"extension": extensions}
    entries["Patient"]["name"] = [name]
    if line is not None:
        entries["Patient"]["address"][0]["line"] = [line]
    if city is not None:
        entries["Patient"]["address"][0]["city"] = city
    entries["ServiceRequest"]["reasonCode"] = [{"text": reason}]
    try:
        referral = referral_from_fhir(bundle, participants)
    except SchakelError:
        return  # refused at intake: dead-lettered there, with its reason
    assert _find(_rendered(referral), ".//w:Achternaam")


_BASE = referral_bundle("VERW-M-9")
