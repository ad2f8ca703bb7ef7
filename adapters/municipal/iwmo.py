"""The municipal registration as iWmo-style XML (CONTRACT §4, DOMAIN §3). Pure.

`iwmo_from_disclosure` renders what the consent gate disclosed to a municipality; every
message is validated against `schemas/xsd/schakel-wmo-registratie.xsd` before it is
returned. UTF-8 without BOM, CRLF line ends (iWmo OP192). Dates carry no time zone and
are taken in Europe/Amsterdam.

XML is only ever parsed with `SAFE_PARSER`: no network, no DTD loading, no entity
expansion.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from lxml import etree

from adapters.fhir.common import AMSTERDAM
from schemas.disclosure import Disclosure
from schemas.errors import SchakelError
from schemas.text import plain

NAMESPACE = "urn:schakel:wmo:registratie:1"
XSD_PATH = Path(str(files("schemas") / "xsd" / "schakel-wmo-registratie.xsd"))
XSD_VERSION = "1.0.0"
BERICHT_CODE = "SK01"
_GENDER = {"male": "1", "female": "2"}
_HOUSE = re.compile(r"^\s*(\d{1,5})\s*([A-Za-z](?![A-Za-z]))?\s*[-\s]?\s*(.{1,4})?\s*\Z")
_POSTCODE = re.compile(r"^([1-9][0-9]{3})\s?([A-Za-z]{2})\Z")

SAFE_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
)


class InvalidOutputError(SchakelError):
    """The hub built a message its own schema refuses: a bug, kept from the recipient."""

    reason = "invalid-output"


@lru_cache(maxsize=1)
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD_PATH), SAFE_PARSER))


def validate(xml: bytes) -> None:
    """Parse safely and validate against the XSD; raises `InvalidOutputError`."""
    try:
        document = etree.fromstring(xml, SAFE_PARSER)
    except etree.XMLSyntaxError as exc:
        raise InvalidOutputError(f"not well-formed XML: {exc.msg}") from None
    validator = schema()
    if not validator.validate(document):
        errors = "; ".join(f"line {e.line}: {e.message}" for e in list(validator.error_log)[:3])
        raise InvalidOutputError(f"registration fails the XSD: {errors}")


def local_date(moment: datetime) -> date:
    return moment.astimezone(AMSTERDAM).date()


_clean = plain
"""The text as XML 1.0 can carry it (lxml refuses control characters)."""


def _text(parent: etree._Element, name: str, value: str | None, limit: int | None = None) -> None:
    text = _clean(value)
    if not text:
        return
    etree.SubElement(parent, f"{{{NAMESPACE}}}{name}").text = text[:limit] if limit else text


def _initials(given: tuple[str, ...]) -> str | None:
    letters = "".join(name[0].upper() for name in given if name[:1].isalpha())
    return letters[:6] or None


def _address(parent: etree._Element, disclosure: Disclosure) -> None:
    address = disclosure.address
    if address is None or not all(
        _clean(part)
        for part in (address.street, address.house_number, address.postal_code, address.city)
    ):
        return
    house = _HOUSE.match(address.house_number or "")
    postcode = _POSTCODE.match((address.postal_code or "").strip())
    if house is None or postcode is None or int(house[1]) < 1:
        return  # not a Dutch address the format can carry; nothing half-filled
    element = etree.SubElement(parent, f"{{{NAMESPACE}}}Adres")
    _text(element, "Straatnaam", address.street, 80)
    _text(element, "Huisnummer", str(int(house[1])))
    _text(element, "Huisletter", house[2])
    _text(element, "Huisnummertoevoeging", house[3])
    _text(element, "Postcode", f"{postcode[1]}{postcode[2].upper()}")
    _text(element, "Plaatsnaam", address.city, 80)
    _text(element, "Gemeente", address.municipality)
    _text(element, "LandCode", "NL")


def iwmo_from_disclosure(
    disclosure: Disclosure,
    *,
    identificatie: str,
    ontvanger: str,
    registration_id: str,
    welfare_id: str,
    welfare_name: str,
    sent_at: datetime,
) -> bytes:
    """One registration message; `identificatie` is at most 12 characters, unique per sender."""
    if disclosure.recipient_kind != "municipality" or disclosure.bsn is None:
        raise InvalidOutputError("an iWmo registration needs a municipality disclosure with a BSN")
    afzender = disclosure.referrer.practice_agb or disclosure.referrer.agb
    n = f"{{{NAMESPACE}}}"
    root = etree.Element(f"{n}Bericht", nsmap={None: NAMESPACE})
    header = etree.SubElement(root, f"{n}Header")
    _text(header, "BerichtCode", BERICHT_CODE)
    _text(header, "BerichtVersie", "3")
    _text(header, "BerichtSubversie", "2")
    _text(header, "Afzender", afzender)
    _text(header, "Ontvanger", ontvanger)
    ident = etree.SubElement(header, f"{n}BerichtIdentificatie")
    _text(ident, "Identificatie", identificatie)
    _text(ident, "Dagtekening", local_date(sent_at).isoformat())
    versions = etree.SubElement(header, f"{n}XsdVersie")
    _text(versions, "BasisschemaXsdVersie", XSD_VERSION)
    _text(versions, "BerichtXsdVersie", XSD_VERSION)

    client = etree.SubElement(root, f"{n}Client")
    _text(client, "Bsn", disclosure.bsn)
    if disclosure.birth_date is not None:
        birth = etree.SubElement(client, f"{n}Geboortedatum")
        _text(birth, "Datum", disclosure.birth_date.isoformat())
    _text(client, "Geslacht", _GENDER.get(disclosure.gender or "", "0"))
    name = etree.SubElement(client, f"{n}Naam")
    _text(name, "Achternaam", _clean(disclosure.family_name) or disclosure.name, 200)
    _text(name, "Voorvoegsel", disclosure.family_prefix, 10)
    _text(name, "Voornamen", " ".join(disclosure.given_names) or None, 200)
    _text(name, "Voorletters", _initials(disclosure.given_names))
    _address(client, disclosure)

    referrer = etree.SubElement(root, f"{n}Verwijzer")
    _text(referrer, "Type", "02")
    _text(referrer, "ZorgverlenerCode", disclosure.referrer.agb)

    registration = etree.SubElement(root, f"{n}Registratie")
    _text(registration, "Referentie", registration_id, 36)
    _text(registration, "VerwijzingId", disclosure.referral_id, 64)
    provider = etree.SubElement(registration, f"{n}Aanbieder")
    _text(provider, "Id", welfare_id)
    _text(provider, "Naam", welfare_name, 64)
    if disclosure.authored_on is not None:
        _text(registration, "Verwijsdatum", local_date(disclosure.authored_on).isoformat())
    _text(registration, "StatusAanlevering", "1")
    _text(registration, "Reden", disclosure.reason, 200)

    xml = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    xml = xml.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    validate(xml)
    return xml


def identificatie(number: int) -> str:
    """`SK` and ten digits: 12 characters, unique per sender while the counter never repeats."""
    if not 0 < number < 10**10:
        raise InvalidOutputError("message number out of range for a 12-character Identificatie")
    return f"SK{number:010d}"
