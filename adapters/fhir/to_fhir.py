"""FHIR R4 out: feedback and overdue notices for the referring practice (CONTRACT §5). Pure.

A collection Bundle with a Task (the referral's fulfilment: `basedOn` the ServiceRequest by
identifier, owner the welfare organisation, status per the mapping below) and a
Communication carrying the one-line summary. Following notified pull, the Task itself holds
no personal data: no `for`, no patient reference. Every Bundle is validated with
fhir.resources' R4B models before it is returned.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from adapters.broker.cloudevents import rfc3339
from adapters.fhir.common import AMSTERDAM
from schemas.errors import SchakelError
from schemas.feedback import WelfareFeedback
from schemas.identifiers import AGB_SYSTEM

REGISTRATION_SYSTEM = "urn:schakel:registration"
FEEDBACK_STATUS_SYSTEM = "urn:schakel:feedback-status"
TASK_STATUS = {
    "contacted": "in-progress",
    "in-progress": "in-progress",
    "completed": "completed",
    "declined": "rejected",
    "not-reached": "failed",
}
_NS = uuid.UUID("0b9d5a4e-7f31-4d0c-9a55-1f2b8e6f0c11")


class InvalidFhirOutputError(SchakelError):
    reason = "invalid-output"


def _urn(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, '|'.join(parts))}"


def _org(system: str, value: str, display: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"type": "Organization", "identifier": {"system": system, "value": value}}
    if display:
        ref["display"] = display
    return ref


def _service_request(referral_system: str | None, referral_id: str) -> dict[str, Any]:
    ident = {"value": referral_id}
    if referral_system:
        ident = {"system": referral_system, **ident}
    return {"type": "ServiceRequest", "identifier": ident}


def _bundle(key: str, at: datetime, resources: list[tuple[str, dict[str, Any]]]) -> bytes:
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(_NS, key)),
        "type": "collection",
        "timestamp": rfc3339(at),
        "entry": [{"fullUrl": url, "resource": resource} for url, resource in resources],
    }
    try:
        Bundle.model_validate(bundle)
    except ValidationError as exc:
        raise InvalidFhirOutputError(
            f"feedback Bundle fails R4B: {exc.error_count()} error(s)"
        ) from None
    return orjson.dumps(bundle)


def _task(
    *,
    registration_id: str,
    referral_system: str | None,
    referral_id: str,
    status: str,
    business: str,
    business_text: str,
    practice_agb: str,
    owner: dict[str, Any],
    modified: datetime,
) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": f"task-{registration_id}",
        "identifier": [{"system": REGISTRATION_SYSTEM, "value": registration_id}],
        "basedOn": [_service_request(referral_system, referral_id)],
        "status": status,
        "businessStatus": {
            "coding": [{"system": FEEDBACK_STATUS_SYSTEM, "code": business}],
            "text": business_text,
        },
        "intent": "order",
        "lastModified": rfc3339(modified),
        "requester": _org(AGB_SYSTEM, practice_agb),
        "owner": owner,
    }


def feedback_bundle(
    feedback: WelfareFeedback,
    *,
    registration_id: str,
    referral_system: str | None,
    practice_agb: str,
    owner_system: str,
    owner_value: str,
    owner_name: str,
    at: datetime,
) -> bytes:
    key = f"feedback|{registration_id}|{feedback.status}|{feedback.occurred_at.isoformat()}"
    task_url = _urn(key, "task")
    owner = _org(owner_system, owner_value, owner_name)
    task = _task(
        registration_id=registration_id,
        referral_system=referral_system,
        referral_id=feedback.referral_id,
        status=TASK_STATUS[str(feedback.status)],
        business=str(feedback.status),
        business_text=str(feedback.status),
        practice_agb=practice_agb,
        owner=owner,
        modified=feedback.occurred_at,
    )
    communication: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "basedOn": [_service_request(referral_system, feedback.referral_id)],
        "partOf": [{"reference": task_url}],
        "sent": rfc3339(feedback.occurred_at),
        "sender": owner,
        "recipient": [_org(AGB_SYSTEM, practice_agb)],
    }
    if feedback.summary.strip():
        communication["payload"] = [{"contentString": feedback.summary.strip()}]
    return _bundle(key, at, [(task_url, task), (_urn(key, "communication"), communication)])


def overdue_bundle(
    *,
    registration_id: str,
    referral_system: str | None,
    referral_id: str,
    practice_agb: str,
    owner_system: str,
    owner_value: str,
    owner_name: str,
    due_at: datetime,
    at: datetime,
) -> bytes:
    """The GP's notice that the contact term passed without contact (ids and names of
    organisations only)."""
    key = f"overdue|{registration_id}"
    task_url = _urn(key, "task")
    owner = _org(owner_system, owner_value, owner_name)
    task = _task(
        registration_id=registration_id,
        referral_system=referral_system,
        referral_id=referral_id,
        status="requested",
        business="contact-overdue",
        business_text="contact-overdue",
        practice_agb=practice_agb,
        owner=owner,
        modified=at,
    )
    task["restriction"] = {"period": {"end": rfc3339(due_at)}}
    communication = {
        "resourceType": "Communication",
        "status": "completed",
        "basedOn": [_service_request(referral_system, referral_id)],
        "partOf": [{"reference": task_url}],
        "sent": rfc3339(at),
        "recipient": [_org(AGB_SYSTEM, practice_agb)],
        "payload": [
            {
                # the deadline as the practice reads a clock: Dutch time
                "contentString": f"{owner_name} heeft voor "
                f"{due_at.astimezone(AMSTERDAM):%d-%m-%Y %H:%M} geen contact gemeld "
                "(contacttermijn verstreken)."
            }
        ],
    }
    return _bundle(key, at, [(task_url, task), (_urn(key, "communication"), communication)])


def operation_outcome(reason: str, diagnostics: str, *, code: str = "invalid") -> dict[str, Any]:
    """An OperationOutcome naming what is wrong (no personal data: `diagnostics` is one of
    the hub's error details)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": code,
                "details": {
                    "coding": [{"system": "urn:schakel:error-reason", "code": reason}],
                    "text": reason,
                },
                "diagnostics": diagnostics,
            }
        ],
    }


def current_task(
    *,
    registration_id: str,
    referral_system: str | None,
    referral_id: str,
    feedback_status: str | None,
    overdue: bool,
    practice_agb: str,
    owner_system: str,
    owner_value: str,
    owner_name: str,
    modified: datetime,
    revoked: bool = False,
) -> dict[str, Any]:
    """The fulfilment Task of a registration as it stands (for `GET /fhir/Task`). A Task
    still open when no consent covers the organisation any more (withdrawn, or its period
    ended) is `cancelled`, business status `revoked` (DOMAIN §5: cancel open Tasks); one
    the organisation finished keeps its outcome."""
    if feedback_status is None:
        status, business = "requested", ("contact-overdue" if overdue else "released")
    else:
        status, business = TASK_STATUS[feedback_status], feedback_status
    if revoked and status in ("requested", "in-progress"):
        status, business = "cancelled", "revoked"
    return _task(
        registration_id=registration_id,
        referral_system=referral_system,
        referral_id=referral_id,
        status=status,
        business=business,
        business_text=business,
        practice_agb=practice_agb,
        owner=_org(owner_system, owner_value, owner_name),
        modified=modified,
    )


def searchset(resources: list[dict[str, Any]], at: datetime, base: str) -> dict[str, Any]:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": rfc3339(at),
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }
    try:
        Bundle.model_validate(bundle)
    except ValidationError as exc:
        raise InvalidFhirOutputError(
            f"searchset Bundle fails R4B: {exc.error_count()} error(s)"
        ) from None
    return bundle
