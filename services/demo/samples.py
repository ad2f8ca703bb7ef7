"""Synthetic FHIR R4 inputs: a referral Bundle and a Consent, as a GP system would send
them. Fictional people; BSNs from the test range. Used by the demo and the tests."""

from __future__ import annotations

from typing import Any

import orjson

from schemas.consent import DATA_CLASS_SYSTEM
from schemas.identifiers import AGB_SYSTEM, BSN_SYSTEM, CBS_SYSTEM, URA_SYSTEM

REFERRAL_SYSTEM = "urn:oid:2.16.840.1.113883.2.4.3.11.999.7.1"
DEMO_BSN = "999900018"
PRACTICE_AGB = "01012345"
PRACTITIONER_AGB = "01234567"
WELFARE_URA = "12345678"


def referral_bundle(
    referral_id: str = "VERW-2026-0001",
    *,
    bsn: str = DEMO_BSN,
    given: str = "Anna",
    family: str = "de Vries-Bakker",
    district: str | None = "Hoogeveen",
    performer_ura: str | None = None,
    reason: str = "Eenzaam sinds overlijden partner; wil graag meer onder de mensen komen",
    practitioner_agb: str = PRACTITIONER_AGB,
    practice_agb: str = PRACTICE_AGB,
    phone: str | None = "06-98765432",
    email: str | None = "a.devries@example.nl",
    with_diagnosis: bool = True,
) -> dict[str, Any]:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "pat-1",
        "identifier": [{"system": BSN_SYSTEM, "value": bsn}],
        "name": [{"use": "official", "family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1948-03-14",
        "address": [
            {
                "use": "home",
                "line": ["Kerkstraat 12a"],
                "postalCode": "7901AB",
                "city": "Hoogeveen",
                **({"district": district} if district else {}),
                "country": "NL",
            }
        ],
    }
    telecom = []
    if phone:
        telecom.append({"system": "phone", "value": phone, "use": "mobile"})
    if email:
        telecom.append({"system": "email", "value": email, "use": "home"})
    if telecom:
        patient["telecom"] = telecom
    service_request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": "sr-1",
        "identifier": [{"system": REFERRAL_SYSTEM, "value": referral_id}],
        "status": "active",
        "intent": "order",
        "code": {"text": "Welzijn op Recept"},
        "subject": {"reference": "urn:uuid:7d1f0c1e-0000-4000-8000-000000000001"},
        "requester": {"reference": "urn:uuid:7d1f0c1e-0000-4000-8000-000000000003"},
        "authoredOn": "2026-11-30T09:15:00+01:00",
        "reasonCode": [
            {
                **(
                    {
                        "coding": [
                            {
                                "system": "http://hl7.org/fhir/sid/icpc-1-nl",
                                "code": "P03",
                                "display": "Depressief gevoel",
                            }
                        ]
                    }
                    if with_diagnosis
                    else {}
                ),
                "text": reason,
            }
        ],
        "note": [{"text": "Gebruikt sertraline 50 mg; voorgeschiedenis depressie."}]
        if with_diagnosis
        else None,
    }
    if service_request["note"] is None:
        del service_request["note"]
    if performer_ura:
        service_request["performer"] = [
            {"type": "Organization", "identifier": {"system": URA_SYSTEM, "value": performer_ura}}
        ]
    return {
        "resourceType": "Bundle",
        "id": f"bundle-{referral_id.lower()}",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:7d1f0c1e-0000-4000-8000-000000000000",
                "resource": service_request,
            },
            {"fullUrl": "urn:uuid:7d1f0c1e-0000-4000-8000-000000000001", "resource": patient},
            {
                "fullUrl": "urn:uuid:7d1f0c1e-0000-4000-8000-000000000002",
                "resource": {
                    "resourceType": "Practitioner",
                    "id": "prac-1",
                    "identifier": [{"system": AGB_SYSTEM, "value": practitioner_agb}],
                    "name": [{"family": "Jansen", "given": ["Eva"], "prefix": ["dr."]}],
                },
            },
            {
                "fullUrl": "urn:uuid:7d1f0c1e-0000-4000-8000-000000000003",
                "resource": {
                    "resourceType": "PractitionerRole",
                    "id": "role-1",
                    "practitioner": {"reference": "urn:uuid:7d1f0c1e-0000-4000-8000-000000000002"},
                    "organization": {"reference": "urn:uuid:7d1f0c1e-0000-4000-8000-000000000004"},
                },
            },
            {
                "fullUrl": "urn:uuid:7d1f0c1e-0000-4000-8000-000000000004",
                "resource": {
                    "resourceType": "Organization",
                    "id": "org-1",
                    "identifier": [{"system": AGB_SYSTEM, "value": practice_agb}],
                    "name": "Huisartsenpraktijk De Linde",
                },
            },
        ],
    }


def consent_resource(
    consent_id: str = "toestemming-0001",
    *,
    referral_id: str | None = "VERW-2026-0001",
    bsn: str | None = DEMO_BSN,
    recipient_ura: tuple[str, ...] = (WELFARE_URA,),
    status: str = "active",
    period: dict[str, str] | None = None,
    municipality_cbs: tuple[str, ...] = (),
    classes: tuple[str, ...] = (),
) -> dict[str, Any]:
    recipients = [(URA_SYSTEM, ura) for ura in recipient_ura] + [
        (CBS_SYSTEM, cbs) for cbs in municipality_cbs
    ]
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [
            {
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                        }
                    ]
                },
                "reference": {"identifier": {"system": system, "value": value}},
            }
            for system, value in recipients
        ],
    }
    if classes:
        provision["class"] = [{"system": DATA_CLASS_SYSTEM, "code": code} for code in classes]
    if period:
        provision["period"] = period
    if referral_id:
        provision["data"] = [
            {
                "meaning": "instance",
                "reference": {"identifier": {"system": REFERRAL_SYSTEM, "value": referral_id}},
            }
        ]
    consent: dict[str, Any] = {
        "resourceType": "Consent",
        "id": consent_id,
        "status": status,
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "dateTime": "2026-11-30T09:10:00+01:00",
        "provision": provision,
    }
    if bsn:
        consent["patient"] = {"identifier": {"system": BSN_SYSTEM, "value": bsn}}
    else:
        consent["patient"] = {"reference": "Patient/pat-1"}
    return consent


def fictional_bsn(i: int) -> str:
    """The i-th number of the iWmo test range that passes the 11-proef (a fictional BSN)."""
    from schemas.identifiers import bsn_valid

    n, found = 999_900_006, -1
    while True:
        if bsn_valid(str(n)):
            found += 1
            if found == i:
                return str(n)
        n += 1


def to_bytes(resource: dict[str, Any]) -> bytes:
    return orjson.dumps(resource)
