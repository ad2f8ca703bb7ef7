"""NEN 7513 log entries as FHIR R4 AuditEvents (DOMAIN §5, Zorgviewer IG mapping). Pure.

| NEN 7513 | AuditEvent |
|---|---|
| event code | `type` (DICOM 110106 Export for disclosures, 110110 Patient Record for reads) + `subtype` (Schakel action) |
| action | `action` (E transfer, R read, C submit) |
| date/time | `recorded` |
| user and role | `agent[requestor=true].who` + `.role` |
| responsible organisation / recipient | `agent` with role Destination (DICOM 110152) |
| consent | `agent.policy` (`Consent/<id>`) |
| client | `entity` type 1 (person): a keyed pseudonym of the BSN |
| object | `entity` type 2 (system object): the referral (ServiceRequest identifier), data classes in `detail` |
| outcome | `outcome` |
| source | `source.observer` |

The chain fields (sequence number, previous hash) are extensions inside the canonical form;
the entry's own hash is added only to the published copy.
"""

from __future__ import annotations

from typing import Any

import orjson

from adapters.broker.cloudevents import rfc3339
from schemas.audit import PSEUDONYM_SYSTEM, AuditRecord
from schemas.participants import Participants

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SEQ_URL = "urn:schakel:audit:seq"
PREV_URL = "urn:schakel:audit:prev-hash"
HASH_URL = "urn:schakel:audit:hash"
HUB_SYSTEM = "urn:schakel:participant"
_TYPES = {
    "read": ("110110", "Patient Record", "R"),
    "subject-access": ("110110", "Patient Record", "R"),
    "dlq-show": ("110110", "Patient Record", "R"),
    "replay": ("110110", "Patient Record", "R"),  # reads the topics, sends nothing
    "submit": ("110107", "Import", "C"),
}
_EXPORT = ("110106", "Export", "E")
_OUTCOME = {"success": "0", "refused": "4", "not-found": "4"}
_ROLE = {
    "gp-practice": "Huisartsenpraktijk",
    "welfare": "Welzijnsorganisatie",
    "municipality": "Gemeente",
    "operator": "Beheerder",
    "hub": "Applicatie",
}


def _who(participants: Participants, who: str) -> dict[str, Any]:
    participant = participants.get(who)
    if participant is None:
        return {"identifier": {"system": HUB_SYSTEM, "value": who}, "display": who}
    ident = participant.identifiers[0]
    return {
        "identifier": {"system": ident.system, "value": ident.value},
        "display": participant.name,
    }


def audit_event(
    record: AuditRecord, *, seq: int, prev_hash: str, participants: Participants
) -> dict[str, Any]:
    code, display, action = _TYPES.get(record.action, _EXPORT)
    requestor: dict[str, Any] = {
        "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": _who(participants, record.actor),
        "requestor": True,
        "role": [{"text": _ROLE.get(record.actor_role, record.actor_role)}],
    }
    if record.consent_id:
        requestor["policy"] = [f"Consent/{record.consent_id}"]
    agents = [requestor]
    if record.recipient:
        destination: dict[str, Any] = {
            "type": {
                "coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]
            },
            "who": _who(participants, record.recipient),
            "requestor": False,
        }
        if record.consent_id:
            destination["policy"] = [f"Consent/{record.consent_id}"]
        agents.append(destination)
    entities: list[dict[str, Any]] = []
    if record.patient:
        entities.append(
            {
                "what": {"identifier": {"system": PSEUDONYM_SYSTEM, "value": record.patient}},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                },
            }
        )
    if record.referral_id or record.registration_id:
        ident: dict[str, Any] = {"value": record.referral_id or record.registration_id}
        if record.referral_id and record.referral_system:
            ident["system"] = record.referral_system
        entity: dict[str, Any] = {
            "what": {"identifier": ident},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "2",
            },
        }
        details = []
        if record.registration_id:
            details.append({"type": "registration", "valueString": record.registration_id})
        if record.data:
            details.append({"type": "data", "valueString": ",".join(record.data)})
        if details:
            entity["detail"] = details
        entities.append(entity)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"audit-{seq}",
        "extension": [
            {"url": SEQ_URL, "valueString": str(seq)},
            {"url": PREV_URL, "valueString": prev_hash},
        ],
        "type": {"system": DCM, "code": code, "display": display},
        "subtype": [{"system": "urn:schakel:audit-action", "code": record.action}],
        "action": action,
        "recorded": rfc3339(record.recorded),
        "outcome": _OUTCOME[record.outcome],
        "purposeOfEvent": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                        "code": "CAREMGT",
                    }
                ]
            }
        ],
        "agent": agents,
        "source": {
            "observer": {
                "identifier": {"system": HUB_SYSTEM, "value": "schakel-hub"},
                "display": "schakel-hub",
            },
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                }
            ],
        },
    }
    if record.detail:  # what happened, said in words (kept in the hashed content)
        event["outcomeDesc"] = record.detail[:200]
    if entities:
        event["entity"] = entities
    return event


def canonical(event: dict[str, Any]) -> str:
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS).decode()


def published(event: dict[str, Any], entry_hash: str) -> bytes:
    """The copy on the `audit` topic: the event's canonical form plus the entry's own hash.
    Built from the event the audit trail has at hand (reading its canonical form back cost
    as much as writing it), which it leaves as it was."""
    extension = [*event["extension"], {"url": HASH_URL, "valueString": entry_hash}]
    return orjson.dumps({**event, "extension": extension}, option=orjson.OPT_SORT_KEYS)


def _extensions(event: Any) -> dict[str, Any]:
    """The event's extensions by url (raises for what is no AuditEvent)."""
    return {e["url"]: e.get("valueString") for e in event.get("extension", ())}


def chain_fields(event: Any) -> tuple[int | None, str | None]:
    """The sequence number and previous hash written inside a canonical form, parsed (None
    for either that is not there)."""
    try:
        extensions = _extensions(event)
        seq = extensions.get(SEQ_URL)
        return (int(seq) if seq is not None else None), extensions.get(PREV_URL)
    except (AttributeError, ValueError, TypeError, KeyError):
        return None, None


def published_link(value: bytes | None) -> tuple[int, str] | None:
    """(sequence number, hash) of an entry's copy on the `audit` topic (`published`); None
    for a record that is not one."""
    try:
        extensions = _extensions(orjson.loads(value or b""))
        seq, digest = extensions.get(SEQ_URL), extensions.get(HASH_URL)
        return (int(seq), str(digest)) if seq is not None and digest else None
    except (AttributeError, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        return None
