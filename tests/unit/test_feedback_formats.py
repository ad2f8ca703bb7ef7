"""Feedback in (welfare JSON) and out (FHIR R4 Task + Communication for the GP)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.task import Task

from adapters.fhir.to_fhir import TASK_STATUS, feedback_bundle, overdue_bundle
from adapters.welfare.feedback import feedback_from_bytes
from schemas.errors import SchakelError
from schemas.export import GENERATED
from schemas.feedback import FeedbackStatus, WelfareFeedback

AT = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
SYSTEM = "urn:oid:2.16.840.1.113883.2.4.3.11.999.7.1"


def _raw(**fields: object) -> bytes:
    body = {
        "referral_id": "VERW-1",
        "organisation": "welzijn-hoogeveen",
        "status": "contacted",
        "occurred_at": "2026-12-04T15:30:00+01:00",
        "summary": "Kennismaking gehad; start met maatjesproject.",
    }
    body.update(fields)
    return orjson.dumps(body)


def test_reads_valid_feedback() -> None:
    feedback = feedback_from_bytes(_raw())
    assert feedback.status == FeedbackStatus.CONTACTED
    assert feedback.occurred_at.utcoffset().total_seconds() == 3600


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"summary": "x" * 281}, "summary"),
        ({"summary": "Gebeld, bsn 999900018 klopt"}, "looks like a BSN"),
        ({"summary": "nummer 9999.00.018"}, "looks like a BSN"),
        ({"status": "happy"}, "status"),
        ({"occurred_at": "2026-12-04T15:30:00"}, "occurred_at"),
        ({"organisation": "Not A Slug"}, "organisation"),
        ({"diagnosis": "P03"}, "diagnosis"),
    ],
)
def test_refuses_bad_feedback_with_a_reason(fields: dict[str, object], words: str) -> None:
    with pytest.raises(SchakelError) as info:
        feedback_from_bytes(_raw(**fields))
    assert info.value.reason == "invalid-feedback"
    assert words in info.value.detail
    assert "999900018" not in info.value.detail


def test_280_characters_are_fine() -> None:
    assert len(feedback_from_bytes(_raw(summary="y" * 280)).summary) == 280


def _bundle(status: str, summary: str = "Contact gehad.") -> dict:  # type: ignore[type-arg]
    feedback = WelfareFeedback(
        referral_id="VERW-1",
        organisation="welzijn-hoogeveen",
        status=status,
        occurred_at=AT,
        summary=summary,
    )
    return orjson.loads(
        feedback_bundle(
            feedback,
            registration_id="83bc14e5-32a8-5495-a101-587b1e740fc2",
            referral_system=SYSTEM,
            practice_agb="01012345",
            owner_system="http://fhir.nl/fhir/NamingSystem/ura",
            owner_value="12345678",
            owner_name="Welzijn De Schakel Hoogeveen",
            at=AT,
        )
    )


@pytest.mark.parametrize(
    ("status", "task_status"),
    [
        ("contacted", "in-progress"),
        ("in-progress", "in-progress"),
        ("completed", "completed"),
        ("declined", "rejected"),
        ("not-reached", "failed"),
    ],
)
def test_every_status_maps_to_a_valid_r4_task(status: str, task_status: str) -> None:
    data = _bundle(status)
    bundle = Bundle.model_validate(data)
    task = Task.model_validate(data["entry"][0]["resource"])
    communication = Communication.model_validate(data["entry"][1]["resource"])
    assert bundle.type == "collection"
    assert task.status == task_status == TASK_STATUS[status]
    assert task.businessStatus.coding[0].code == status
    assert task.basedOn[0].identifier.system == SYSTEM
    assert task.basedOn[0].identifier.value == "VERW-1"
    assert task.owner.identifier.value == "12345678"
    assert task.for_fhir is None, "the Task holds no personal data"
    assert communication.payload[0].contentString == "Contact gehad."
    assert communication.partOf[0].reference == data["entry"][0]["fullUrl"]


def test_empty_summary_sends_no_payload() -> None:
    data = _bundle("contacted", summary="")
    assert "payload" not in data["entry"][1]["resource"]
    Bundle.model_validate(data)


def _overdue(due: datetime) -> dict:  # type: ignore[type-arg]
    return orjson.loads(
        overdue_bundle(
            registration_id="reg-1",
            referral_system=SYSTEM,
            referral_id="VERW-1",
            practice_agb="01012345",
            owner_system="http://fhir.nl/fhir/NamingSystem/ura",
            owner_value="12345678",
            owner_name="Welzijn De Schakel Hoogeveen",
            due_at=due,
            at=due,
        )
    )


def test_overdue_notice_is_valid_fhir_without_personal_data() -> None:
    data = _overdue(AT)
    Bundle.model_validate(data)
    task = data["entry"][0]["resource"]
    assert task["status"] == "requested"
    assert task["businessStatus"]["coding"][0]["code"] == "contact-overdue"


def test_overdue_notice_names_the_deadline_in_dutch_time() -> None:
    """23:30 UTC on 15 December is 00:30 on the 16th in the Netherlands."""
    data = _overdue(datetime(2026, 12, 15, 23, 30, tzinfo=UTC))
    text = data["entry"][1]["resource"]["payload"][0]["contentString"]
    assert "voor 16-12-2026 00:30 geen contact gemeld" in text


def test_feedback_bundle_golden(golden) -> None:  # type: ignore[no-untyped-def]
    golden(
        "gp-feedback-bundle.json",
        orjson.dumps(_bundle("contacted"), option=orjson.OPT_INDENT_2) + b"\n",
    )


def test_feedback_schema_is_exported() -> None:
    schema = json.loads((GENERATED / "welfare-feedback.schema.json").read_text())
    assert schema["properties"]["summary"]["maxLength"] == 280
    assert set(schema["required"]) == {"referral_id", "organisation", "status", "occurred_at"}
