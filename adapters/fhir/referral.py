"""`referral-created`: a FHIR R4 Bundle to the canonical `Referral` (CONTRACT §3).

`referral_from_bytes` is the whole intake check: JSON, FHIR structure, then the
contract's referral rules, each failure a `SchakelError` with its dead-letter reason.
"""

from __future__ import annotations

import re
from typing import Any

from adapters.fhir.common import (
    Json,
    check_id,
    first_line,
    human_name,
    identifier_value,
    name_parts,
    not_understood,
    parse_datetime,
    parse_full_date,
    patient_bsn,
    uri_or_none,
)
from adapters.fhir.validate import DEFAULT_MAX_BYTES, load_json, validate_resource
from schemas.errors import InvalidAgbError, InvalidReferralError, UnknownParticipantError
from schemas.identifiers import AGB_SYSTEM, agb_valid
from schemas.participants import Participant, Participants
from schemas.referral import Client, PostalAddress, Referral, Referrer
from schemas.text import plain

ACCEPTED_BUNDLE_TYPES = ("message", "collection", "transaction")
_EXT_STREET = "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-streetName"
_EXT_HOUSE_NUMBER = "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-houseNumber"
_EXT_HOUSE_SUFFIX = (
    "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-buildingNumberSuffix",
    "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-additionalLocator",
)
# An address line's house number: the last number in it (a street name can hold numbers:
# "Plein 1940-1945 12", "Laan van 1813 4"), with what follows it ("12-3hg", "12 A bis",
# "12 boven", "7 - 2"), written apart from the street or against it ("Kerkstraat12").
_LINE = re.compile(
    r"^(?P<street>.*?(?:[^\d\s](?=\d)|\S(?=\s)))\s*"
    r"(?P<number>\d[A-Za-z0-9]*(?:\s*-\s*[A-Za-z0-9]+)?(?:\s+[A-Za-z]{1,8}){0,2})\Z"
)
_LINE_MAX = 120
"""Longer lines are not split (no Dutch street name comes near; the match's cost grows with
the square of the length)."""
_NL_POSTCODE = re.compile(r"^\s*([1-9][0-9]{3})\s*-?\s*([A-Za-z]{2})\s*\Z")


class BundleIndex:
    """Resolves references inside one Bundle: by fullUrl, `Type/id`, `#contained`, or by
    identifier."""

    def __init__(self, bundle: Json) -> None:
        self.resources: list[Json] = []
        self._by_url: dict[str, Json] = {}
        for entry in bundle.get("entry") or ():
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                continue
            self.resources.append(resource)
            if entry.get("fullUrl"):
                self._by_url[entry["fullUrl"]] = resource
            if resource.get("id"):
                self._by_url[f"{resource['resourceType']}/{resource['id']}"] = resource

    def of_type(self, resource_type: str) -> list[Json]:
        return [r for r in self.resources if r.get("resourceType") == resource_type]

    def resolve(self, ref: Any, types: tuple[str, ...], context: Json | None = None) -> Json | None:
        if not isinstance(ref, dict):
            return None
        target: Json | None = None
        reference = ref.get("reference")
        if isinstance(reference, str) and reference:
            if reference.startswith("#") and context is not None:
                target = next(
                    (c for c in context.get("contained") or () if c.get("id") == reference[1:]),
                    None,
                )
            else:
                target = self._by_url.get(reference)
                if target is None:
                    tail = reference.split("/_history/")[0].rstrip("/").split("/")[-2:]
                    target = self._by_url.get("/".join(tail))
        elif isinstance(ref.get("identifier"), dict):
            wanted = (ref["identifier"].get("system"), ref["identifier"].get("value"))
            for resource in self.resources:
                if resource.get("resourceType") in types and any(
                    (i.get("system"), i.get("value")) == wanted
                    for i in resource.get("identifier") or ()
                ):
                    target = resource
                    break
        if target is not None and target.get("resourceType") not in types:
            return None
        return target


def _participant_of(ref: Any, index: BundleIndex, participants: Participants) -> Participant | None:
    """The participant an Organization reference points at, via any matching identifier."""
    if not isinstance(ref, dict):
        return None
    if isinstance(ref.get("identifier"), dict):
        found = participants.by_identifier(
            ref["identifier"].get("system"), ref["identifier"].get("value")
        )
        if found is not None:
            return found
    org = index.resolve(ref, ("Organization",))
    if org is None:
        return None
    for ident in org.get("identifier") or ():
        found = participants.by_identifier(ident.get("system"), ident.get("value"))
        if found is not None:
            return found
    return None


def _address(patient: Json, participants: Participants) -> PostalAddress | None:
    addresses = [a for a in patient.get("address") or () if a.get("use") != "old"]
    if not addresses:
        return None
    addr = addresses[0]
    lines = [line for line in addr.get("line") or () if isinstance(line, str)]
    street = number = None
    line_ext = (addr.get("_line") or [None])[0]
    if isinstance(line_ext, dict):
        exts = {e.get("url"): e.get("valueString") for e in line_ext.get("extension") or ()}
        street = exts.get(_EXT_STREET)
        number = exts.get(_EXT_HOUSE_NUMBER)
        suffix = next((exts[u] for u in _EXT_HOUSE_SUFFIX if exts.get(u)), None)
        if number and suffix:
            number = f"{number}{'' if suffix[:1].isalpha() else ' '}{suffix}"
    if street is None and lines:
        line = lines[0].strip()
        match = _LINE.match(line) if len(line) <= _LINE_MAX else None
        street, number = (
            (match["street"].strip(), match["number"].strip()) if match else (lines[0], None)
        )
    postal_code = addr.get("postalCode")
    if isinstance(postal_code, str) and (m := _NL_POSTCODE.match(postal_code)):
        postal_code = f"{m[1]} {m[2].upper()}"
    return PostalAddress(
        street=street or None,
        house_number=number or None,
        postal_code=postal_code or None,
        city=addr.get("city") or None,
        municipality=participants.municipality_code(addr.get("district")),
    )


def _telecom(patient: Json, system: str) -> str | None:
    points = [
        t for t in patient.get("telecom") or () if t.get("system") == system and t.get("value")
    ]
    if not points:
        return None
    preferred = sorted(points, key=lambda t: (t.get("use") == "old", t.get("rank", 1_000)))
    return str(preferred[0]["value"])


def _practice(
    requester: Json, role: Json | None, index: BundleIndex, participants: Participants
) -> Participant:
    candidates: list[Participant] = []
    if role is not None and role.get("organization"):
        found = _participant_of(role["organization"], index, participants)
        if found is None:
            raise UnknownParticipantError(
                "PractitionerRole.organization is not a known participant"
            )
        candidates = [found]
    else:
        for org in index.of_type("Organization"):
            for ident in org.get("identifier") or ():
                found = participants.by_identifier(ident.get("system"), ident.get("value"))
                if found is not None and found.kind == "gp-practice" and found not in candidates:
                    candidates.append(found)
    if not candidates:
        raise UnknownParticipantError(
            "the referring practice is not a known gp-practice participant"
        )
    if len(candidates) > 1:
        raise InvalidReferralError(
            "more than one gp-practice Organization; cannot tell the referrer's"
        )
    practice = candidates[0]
    if practice.kind != "gp-practice":
        raise UnknownParticipantError(f"referring organisation {practice.id} is not a gp-practice")
    return practice


def referral_from_fhir(
    bundle: Json, participants: Participants, *, allow_test_bsn: bool = True
) -> Referral:
    """A validated Bundle to a `Referral`; raises `SchakelError` subclasses only.

    The R4B models accept some values of the wrong JSON type (a number for a dateTime),
    so anything the reader trips over is still a refusal with a reason."""
    try:
        return _referral(bundle, participants, allow_test_bsn=allow_test_bsn)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        raise InvalidReferralError(f"unreadable referral ({type(exc).__name__})") from None


def _referral(bundle: Json, participants: Participants, *, allow_test_bsn: bool) -> Referral:
    if bundle.get("resourceType") != "Bundle":
        raise InvalidReferralError(f"expected a Bundle, got {str(bundle.get('resourceType'))[:40]}")
    if bundle.get("type") not in ACCEPTED_BUNDLE_TYPES:
        raise InvalidReferralError(f"Bundle.type must be one of {', '.join(ACCEPTED_BUNDLE_TYPES)}")
    index = BundleIndex(bundle)
    requests = index.of_type("ServiceRequest")
    if len(requests) != 1:
        raise InvalidReferralError(
            f"Bundle must hold exactly one ServiceRequest, found {len(requests)}"
        )
    sr = requests[0]
    not_understood(index.resources, "referral")
    if sr.get("doNotPerform") is True:
        raise InvalidReferralError("ServiceRequest.doNotPerform is true: not a referral to act on")

    identifiers = sr.get("identifier") or []
    if not identifiers or not identifiers[0].get("value"):
        raise InvalidReferralError(
            "ServiceRequest.identifier[0].value (the referral id) is missing"
        )
    referral_id = check_id(identifiers[0]["value"], "ServiceRequest.identifier[0].value")
    if sr.get("status") != "active":
        raise InvalidReferralError("ServiceRequest.status must be active")
    if sr.get("intent") != "order":
        raise InvalidReferralError("ServiceRequest.intent must be order")

    patient = index.resolve(sr.get("subject"), ("Patient",), sr)
    if patient is None:
        raise InvalidReferralError("ServiceRequest.subject must reference a Patient in the Bundle")
    bsn = patient_bsn(patient, "Patient.identifier", allow_test_bsn=allow_test_bsn)
    if bsn is None:
        raise InvalidReferralError("Patient has no BSN identifier (system .../NamingSystem/bsn)")
    named = human_name(patient)
    if named is None or not plain(named[0]):  # nothing a recipient could address them by
        raise InvalidReferralError("Patient has no name")
    has_telecom = any(isinstance(t, dict) and t.get("value") for t in patient.get("telecom") or ())
    has_address = any(
        isinstance(a, dict) and (a.get("line") or a.get("city") or a.get("postalCode"))
        for a in patient.get("address") or ()
    )
    if not has_telecom and not has_address:
        raise InvalidReferralError("Patient needs at least one of telecom or address")

    requester = index.resolve(sr.get("requester"), ("Practitioner", "PractitionerRole"), sr)
    if requester is None:
        raise InvalidReferralError(
            "ServiceRequest.requester must reference a Practitioner or PractitionerRole in the Bundle"
        )
    role: Json | None = None
    practitioner = requester
    if requester["resourceType"] == "PractitionerRole":
        role = requester
        practitioner = index.resolve(role.get("practitioner"), ("Practitioner",), role) or {}
    agb = identifier_value(practitioner, AGB_SYSTEM)
    if agb is None:
        raise InvalidReferralError("the referring Practitioner has no AGB-Z identifier")
    if not agb_valid(agb):
        raise InvalidAgbError("the referring Practitioner's AGB-Z code must be 8 digits")
    practitioner_name = human_name(practitioner)
    practice = _practice(requester, role, index, participants)

    reason_text = None
    for code in sr.get("reasonCode") or ():
        if code.get("text"):
            reason_text = code["text"]
            break
    if not reason_text:
        notes = sr.get("note") or []
        reason_text = notes[0].get("text") if notes else None
    reason = first_line(reason_text or "")
    if not plain(reason):
        raise InvalidReferralError(
            "no one-line reason (ServiceRequest.reasonCode[0].text or note[0].text)"
        )

    performer_id = None
    for ref in sr.get("performer") or ():
        found = _participant_of(ref, index, participants)
        if found is not None and found.kind == "welfare":
            performer_id = found.id
            break

    given_names, family_prefix, family_name = name_parts(patient)
    gender = patient.get("gender") if isinstance(patient.get("gender"), str) else None
    return Referral(
        referral_id=referral_id,
        identifier_system=uri_or_none(
            identifiers[0].get("system"), "ServiceRequest.identifier[0].system"
        ),
        authored_on=parse_datetime(sr.get("authoredOn")),
        reason=reason,
        client=Client(
            bsn=bsn,
            name=named[0],
            name_parts=named[1],
            given_names=given_names,
            family_prefix=family_prefix,
            family_name=family_name,
            birth_date=parse_full_date(patient.get("birthDate")),
            gender=gender,
            phone=_telecom(patient, "phone"),
            email=_telecom(patient, "email"),
            address=_address(patient, participants),
        ),
        referrer=Referrer(
            name=practitioner_name[0] if practitioner_name else "",
            agb=agb,
            practice_id=practice.id,
            practice_name=practice.name,
            practice_agb=next(
                (i.value for i in practice.identifiers if i.system == AGB_SYSTEM), None
            ),
        ),
        performer_id=performer_id,
    )


def referral_from_bytes(
    raw: bytes | None,
    participants: Participants,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_test_bsn: bool = True,
) -> Referral:
    data = load_json(raw, max_bytes)
    validate_resource(data)
    return referral_from_fhir(data, participants, allow_test_bsn=allow_test_bsn)
