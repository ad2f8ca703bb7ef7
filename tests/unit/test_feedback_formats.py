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
        ({"summary": "kamer 100 123 456 782"}, "looks like a BSN"),  # after another number
        ({"status": "happy"}, "status"),
        ({"occurred_at": "2026-12-04T15:30:00"}, "occurred_at"),
        ({"occurred_at": 1764583200}, "RFC 3339"),  # pydantic alone reads Unix seconds
        ({"occurred_at": "1764583300"}, "RFC 3339"),
        ({"occurred_at": "2026-12-02 10:00+01:00"}, "RFC 3339"),
        ({"occurred_at": "2026-02-30T10:00:00Z"}, "occurred_at"),
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


@pytest.mark.parametrize(
    "summary",
    [
        "Huisbezoek gepland op 1-03-2027 10:00 uur",  # nine digits, not a BSN (11-proef)
        "Bel terug op 0612345678",  # ten digits
        "Dossier 123456789 bij de schuldhulp",  # nine digits failing the 11-proef
    ],
)
def test_numbers_that_are_no_bsn_are_fine_in_a_summary(summary: str) -> None:
    assert feedback_from_bytes(_raw(summary=summary)).summary == summary


@pytest.mark.parametrize(
    ("moment", "read"),
    [
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2016-12-31t23:59:60.25z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2026-12-04T14:30:00.5Z", datetime(2026, 12, 4, 14, 30, 0, 500000, tzinfo=UTC)),
    ],
)
def test_rfc3339_moments_a_leap_second_included(moment: str, read: datetime) -> None:
    assert feedback_from_bytes(_raw(occurred_at=moment)).occurred_at == read


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


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"occurred_at": "2016-12-31T23:59:60Z"},
        {"occurred_at": "2026-12-04t15:30:00.123z"},
        {"summary": "Huisbezoek gepland op 1-03-2027 10:00 uur"},
        {"occurred_at": 1764583200},
        {"occurred_at": "1764583300"},
        {"occurred_at": "2026-12-02 10:00+01:00"},
        {"occurred_at": "2026-12-04T15:30:00"},
        {"organisation": "Welzijn Hoogeveen"},
        {"organisation": "w"},
        {"status": "happy"},
        {"summary": "y" * 281},
        {"extra": 1},
    ],
)
def test_the_exported_schema_and_the_hub_agree_on_feedback(fields: dict[str, object]) -> None:
    """What a welfare organisation checks against the published schema (formats included)
    is what the hub accepts, and the other way round. (The 11-proef on the summary is the
    one rule a JSON Schema cannot say; its description names it.)"""
    import jsonschema_rs

    schema = json.loads((GENERATED / "welfare-feedback.schema.json").read_text())
    validator = jsonschema_rs.validator_for(schema, validate_formats=True)
    body = orjson.loads(_raw(**fields))
    try:
        feedback_from_bytes(orjson.dumps(body))
        hub_accepts = True
    except SchakelError:
        hub_accepts = False
    assert validator.is_valid(body) == hub_accepts


@pytest.mark.parametrize(
    ("feedback_status", "expected"),
    [
        (None, ("cancelled", "revoked")),
        ("contacted", ("cancelled", "revoked")),
        ("in-progress", ("cancelled", "revoked")),
        ("completed", ("completed", "completed")),
        ("declined", ("rejected", "declined")),
        ("not-reached", ("failed", "not-reached")),
    ],
)
def test_an_open_task_is_cancelled_once_no_consent_covers_the_organisation(
    feedback_status: str | None, expected: tuple[str, str]
) -> None:
    """DOMAIN §5: a withdrawal (or the end of the consent's period) cancels open Tasks; a
    finished one keeps its outcome."""
    from adapters.fhir.to_fhir import current_task

    task = current_task(
        registration_id="REG-1",
        referral_system=SYSTEM,
        referral_id="VERW-1",
        feedback_status=feedback_status,
        overdue=feedback_status is None,
        practice_agb="01234567",
        owner_system="http://fhir.nl/fhir/NamingSystem/ura",
        owner_value="12345678",
        owner_name="Welzijn Hoogeveen",
        modified=AT,
        revoked=True,
    )
    Task.model_validate(task)
    assert (task["status"], task["businessStatus"]["coding"][0]["code"]) == expected
