"""Welfare intake JSON: minimised, schema-valid, stable (golden file)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import orjson

from adapters.broker.cloudevents import ce_headers
from adapters.fhir.referral import referral_from_fhir
from adapters.welfare.intake import intake_from_disclosure, intake_json, revoked_json
from schemas.consent import DEFAULT_CLASSES, DataClass
from schemas.export import GENERATED, stale
from schemas.participants import Participants
from services.demo.samples import DEMO_BSN, referral_bundle
from services.domain.minimise import disclose
from services.export import documents

RELEASED_AT = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)


def _released_json(participants: Participants, classes=DEFAULT_CLASSES, **bundle_kw) -> bytes:  # type: ignore[no-untyped-def]
    referral = referral_from_fhir(referral_bundle("VERW-W-1", **bundle_kw), participants)
    intake = intake_from_disclosure(
        disclose(referral, "welfare", classes),
        registration_id="reg-1",
        consent_id="c-1",
        released_at=RELEASED_AT,
        contact_within_days=14,
    )
    return intake_json(intake)


def test_no_bsn_no_diagnosis_no_medication_no_notes(participants: Participants) -> None:
    text = _released_json(participants, classes=frozenset(DataClass)).decode()
    assert DEMO_BSN not in text
    assert "bsn" not in text.lower()
    assert "P03" not in text
    assert "icpc" not in text.lower()
    assert "Depressief" not in text
    assert "sertraline" not in text
    assert "voorgeschiedenis" not in text
    assert "female" not in text, "gender is not for the welfare organisation"
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


def test_contact_data_only_when_consented(participants: Participants) -> None:
    only_referral = orjson.loads(
        _released_json(participants, classes=frozenset({DataClass.REFERRAL}))
    )
    assert set(only_referral["client"]) == {"name", "birth_date"}
    assert only_referral["reason"].startswith("Eenzaam")
    phone_only = orjson.loads(
        _released_json(
            participants, classes=frozenset({DataClass.REFERRAL, DataClass.CONTACT_PHONE})
        )
    )
    assert set(phone_only["client"]) == {"name", "birth_date", "phone"}


def test_absent_contact_data_is_left_out_not_null(participants: Participants) -> None:
    body = orjson.loads(_released_json(participants, phone=None, email=None))
    assert "phone" not in body["client"]
    assert "email" not in body["client"]
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


def test_the_exported_schema_holds_the_intake_to_the_contract(
    participants: Participants,
) -> None:
    """Formats checked (jsonschema_rs): the hub's release passes; a null where the hub leaves
    a field out, an empty id and a reason of two lines do not."""
    import jsonschema_rs

    schema = json.loads((GENERATED / "welfare-intake.schema.json").read_text())
    validator = jsonschema_rs.validator_for(schema, validate_formats=True)
    good = orjson.loads(_released_json(participants))
    assert validator.is_valid(good)
    for change in (
        lambda b: b["client"].update(phone=None),
        lambda b: b["client"].update(address=None),
        lambda b: b["client"]["address"].update(street=None),
        lambda b: b.update(referral_id=""),
        lambda b: b.update(reason="eerste regel\ntweede regel"),
        lambda b: b.update(released_at="5 december"),
    ):
        bad = orjson.loads(_released_json(participants))
        change(bad)
        assert not validator.is_valid(bad), bad


def test_exported_schemas_are_current() -> None:
    assert stale(documents()) == [], "run: python -m services.export"


def test_intake_json_golden(participants: Participants, golden) -> None:  # type: ignore[no-untyped-def]
    pretty = orjson.dumps(
        orjson.loads(_released_json(participants)),
        option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
    )
    golden("welfare-intake.json", pretty.decode() + "\n")


def test_revoked_notice_carries_ids_only() -> None:
    body = orjson.loads(
        revoked_json(
            referral_id="VERW-1",
            registration_id="reg-1",
            revoked_at=RELEASED_AT,
            reason="consent-withdrawn",
        )
    )
    assert body == {
        "referral_id": "VERW-1",
        "registration_id": "reg-1",
        "revoked_at": "2026-12-01T10:30:00Z",
        "reason": "consent-withdrawn",
    }


def test_cloudevents_headers() -> None:
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = dict(
        ce_headers(
            ce_id="id-1",
            ce_type="nl.schakel.referral-released.v1",
            time=RELEASED_AT,
            traceparent=trace,
            subject="VERW-1",
        )
    )
    assert headers == {
        "ce_specversion": b"1.0",
        "ce_id": b"id-1",
        "ce_source": b"urn:schakel:hub",
        "ce_type": b"nl.schakel.referral-released.v1",
        "ce_time": b"2026-12-01T10:30:00.000Z",
        "content-type": b"application/json",
        "traceparent": trace.encode(),
        "ce_subject": b"VERW-1",
    }
