"""Welfare intake JSON: minimised, schema-valid, stable (golden file)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import orjson

from adapters.fhir.referral import referral_from_fhir
from adapters.welfare.intake import intake_from_referral, intake_json, release_message
from schemas.export import GENERATED, stale
from schemas.participants import Participants
from schemas.registration import ReferralReleased
from services.demo.samples import DEMO_BSN, referral_bundle

RELEASED_AT = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)


def _released_json(participants: Participants, **bundle_kw) -> bytes:  # type: ignore[no-untyped-def]
    referral = referral_from_fhir(referral_bundle("VERW-W-1", **bundle_kw), participants)
    intake = intake_from_referral(
        referral,
        registration_id="reg-1",
        consent_id="c-1",
        released_at=RELEASED_AT,
        contact_within_days=14,
    )
    return intake_json(intake)


def test_no_bsn_no_diagnosis_no_medication_no_notes(participants: Participants) -> None:
    text = _released_json(participants).decode()
    assert DEMO_BSN not in text
    assert "bsn" not in text.lower()
    assert "P03" not in text and "icpc" not in text.lower() and "Depressief" not in text
    assert "sertraline" not in text and "voorgeschiedenis" not in text
    body = json.loads(text)
    assert set(body) == {
        "referral_id",
        "registration_id",
        "released_at",
        "client",
        "reason",
        "referrer",
        "contact_within_days",
        "consent_id",
    }


def test_absent_contact_data_is_left_out_not_null(participants: Participants) -> None:
    body = orjson.loads(_released_json(participants, phone=None, email=None))
    assert "phone" not in body["client"] and "email" not in body["client"]
    assert None not in body["client"].values()


def test_intake_json_matches_the_exported_schema(participants: Participants) -> None:
    schema = json.loads((GENERATED / "welfare-intake.schema.json").read_text())
    jsonschema.validate(orjson.loads(_released_json(participants)), schema)
    bad = orjson.loads(_released_json(participants))
    bad["client"]["bsn"] = DEMO_BSN
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("the schema must refuse a BSN in the client object")


def test_exported_schemas_are_current() -> None:
    assert stale() == [], "run: python -m schemas.export"


def test_intake_json_golden(participants: Participants, golden) -> None:  # type: ignore[no-untyped-def]
    pretty = orjson.dumps(
        orjson.loads(_released_json(participants)),
        option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
    )
    golden("welfare-intake.json", pretty.decode() + "\n")


def test_release_message_headers(participants: Participants) -> None:
    referral = referral_from_fhir(referral_bundle("VERW-W-2"), participants)
    release = ReferralReleased(
        referral_id="VERW-W-2",
        registration_id="reg-2",
        recipient_id="welzijn-hoogeveen",
        consent_id="c-2",
        released_at=RELEASED_AT,
    )
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    message = release_message(
        release, referral, topic="t", contact_within_days=14, traceparent=trace
    )
    headers = dict(message.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"nl.schakel.referral-released.v1"
    assert headers["ce_time"] == b"2026-12-01T10:30:00.000Z"
    assert headers["content-type"] == b"application/json"
    assert headers["traceparent"] == trace.encode()
    assert headers["ce_id"].decode() == message.message_id
    assert message.key == b"VERW-W-2"
    # deterministic: the same release always gets the same id
    again = release_message(release, referral, topic="t", contact_within_days=14, traceparent=trace)
    assert again.message_id == message.message_id
