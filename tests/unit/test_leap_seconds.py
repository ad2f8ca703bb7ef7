"""A leap second (`...T23:59:60Z`): FHIR R4's dateTime and instant allow second 60, and
fhir.resources accepts it on the lean and the full path alike. The hub reads it as the last
microsecond of its minute (`23:59:59.999999`, `adapters.fhir.common.parse_time_of`) wherever
it reads a dateTime (ServiceRequest.authoredOn, Consent.dateTime, provision.period) and in
the Period order rule (per-1), instead of refusing the message as unreadable."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from adapters.fhir import lean, validate
from adapters.fhir.common import parse_time_of
from adapters.fhir.consent import consent_from_bytes
from adapters.fhir.referral import referral_from_bytes
from adapters.fhir.validate import validate_resource
from schemas.errors import InvalidFhirError, SchakelError
from schemas.messages import InboundRecord
from schemas.participants import Participants
from schemas.registration import (
    ConsentRecorded,
    MessageDeadLettered,
    ReferralAwaitingConsent,
    ReferralReleased,
)
from services.consent.handlers import consent_pipeline
from services.demo.samples import consent_resource, fictional_bsn, referral_bundle, to_bytes
from services.intake.handlers import intake_pipeline
from tests.conftest import hub_on

Json = dict[str, Any]

LAST_OF_2016 = datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

# (as sent, as read): the last microsecond of the minute the leap second ends, in UTC.
LEAP_SECONDS = [
    ("2016-12-31T23:59:60Z", LAST_OF_2016),
    ("2016-12-31T23:59:60.5Z", LAST_OF_2016),  # the fraction of the leap second is dropped
    ("2016-12-31T23:59:60.123456789+00:00", LAST_OF_2016),
    ("2016-12-31T23:59:60+01:00", datetime(2016, 12, 31, 22, 59, 59, 999999, tzinfo=UTC)),
    ("2015-06-30T19:59:60-04:00", datetime(2015, 6, 30, 23, 59, 59, 999999, tzinfo=UTC)),
]


def _service_request(bundle: Json) -> Json:
    return next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )


def _outcome(check: Any) -> tuple[str, str]:
    try:
        return "ok", str(check())
    except SchakelError as exc:
        return exc.reason, exc.detail


def _both_paths(data: Json) -> tuple[tuple[str, str], tuple[str, str]]:
    """(`validate_resource`, which takes the lean models where they accept, and the full
    path alone: fhir.resources' R4B model, then the hub's own rules)."""

    def full() -> str:
        validate._validate_full(data, data["resourceType"])
        validate._check_rules(data, data["resourceType"])
        return data["resourceType"]

    return _outcome(lambda: validate_resource(data)), _outcome(full)


@pytest.mark.parametrize(("sent", "read"), LEAP_SECONDS, ids=[s for s, _ in LEAP_SECONDS])
def test_a_leap_second_is_the_last_microsecond_of_its_minute(sent: str, read: datetime) -> None:
    assert parse_time_of(sent) == read


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("2016-12-31T23:59:61Z", "second must be in 0..59"),
        ("2016-02-30T23:59:60Z", "day is out of range for month"),
        ("2016-12-31T24:00:60Z", "hour must be in 0..23"),
        ("23:59:60", "Invalid isoformat string"),
    ],
)
def test_what_is_no_time_stays_unreadable(value: str, error: str) -> None:
    """Only second 60 of a valid minute is read; the rest is as datetime has it."""
    with pytest.raises(ValueError, match=error):
        parse_time_of(value)


@pytest.mark.parametrize(("sent", "read"), LEAP_SECONDS, ids=[s for s, _ in LEAP_SECONDS])
def test_a_referral_authored_in_a_leap_second_is_accepted_on_both_paths(
    sent: str, read: datetime, participants: Participants
) -> None:
    bundle = referral_bundle("VERW-LEAP-1")
    _service_request(bundle)["authoredOn"] = sent
    assert lean.accepts(bundle)  # the fast path takes it ...
    assert _both_paths(bundle) == (("ok", "Bundle"), ("ok", "Bundle"))  # ... and both accept
    referral = referral_from_bytes(to_bytes(bundle), participants)
    assert referral.authored_on == read


@pytest.mark.parametrize(("sent", "read"), LEAP_SECONDS, ids=[s for s, _ in LEAP_SECONDS])
def test_a_consent_with_leap_seconds_is_accepted_on_both_paths(
    sent: str, read: datetime, participants: Participants
) -> None:
    consent = consent_resource("c-leap-1", period={"start": sent, "end": sent})
    consent["dateTime"] = sent
    assert lean.accepts(consent)
    assert _both_paths(consent) == (("ok", "Consent"), ("ok", "Consent"))
    parsed = consent_from_bytes(to_bytes(consent), participants)
    assert (parsed.recorded_at, parsed.period_start, parsed.period_end) == (read, read, read)


def test_a_period_ending_in_a_leap_second_stays_in_its_year(participants: Participants) -> None:
    """Not the next minute's :00: a consent ending at 31 December 23:59:60 does not reach
    into the new year, and one starting then has not begun before it."""
    period = {"start": "2016-12-31T23:59:60Z", "end": "2016-12-31T23:59:60Z"}
    consent = consent_from_bytes(
        to_bytes(consent_resource("c-leap-2", period=period)), participants
    )
    assert consent.period_end is not None and consent.period_start is not None
    assert consent.period_end.year == 2016
    assert consent.period_end < datetime(2017, 1, 1, tzinfo=UTC)
    assert consent.period_start > datetime(2016, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "ordered"),
    [
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59Z", False),
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.5Z", False),
        ("2016-12-31T23:59:60+01:00", "2016-12-31T22:59:59Z", False),
        ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z", True),
        ("2016-12-31T23:59:59Z", "2016-12-31T23:59:60Z", True),
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:60Z", True),
        ("2016-12-31T23:59:60Z", "2017-01-01T00:59:59+01:00", False),  # 23:59:59Z
        ("2016-12-31T23:59:60Z", "2017-01-01T01:00:00+01:00", True),  # 00:00:00Z
    ],
)
def test_period_order_is_judged_with_a_leap_second_too(
    start: str, end: str, ordered: bool, participants: Participants
) -> None:
    """per-1 (start not after end): a leap second comes after every other time of its
    minute and before the next minute. Before, such a Period was taken as ordered whatever
    its end, on both paths."""
    consent = consent_resource("c-leap-3", period={"start": start, "end": end})
    hub, full = _both_paths(consent)
    assert hub == full
    if ordered:
        assert hub == ("ok", "Consent")
        assert consent_from_bytes(to_bytes(consent), participants).period_start is not None
    else:
        assert hub == (
            "invalid-fhir",
            "Consent.provision.period: per-1: period start must not be after its end",
        )
        with pytest.raises(InvalidFhirError, match="per-1"):
            consent_from_bytes(to_bytes(consent), participants)


def test_the_hub_takes_a_leap_second_referral_and_consent_and_releases(tmp_path: Path) -> None:
    """Through the intake and consent pipelines: nothing is dead-lettered unreadable."""
    hub = hub_on(
        f"sqlite:///{tmp_path / 'hub.db'}", clock=lambda: datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    )
    offsets = count()

    def record(topic: str, key: str, resource: Json) -> list[InboundRecord]:
        value = to_bytes(resource)
        return [InboundRecord(topic, 0, next(offsets), key.encode(), value, (), 1_700_000_000_000)]

    bundle = referral_bundle("VERW-LEAP-2", bsn=fictional_bsn(3))
    _service_request(bundle)["authoredOn"] = "2016-12-31T23:59:60+01:00"
    events = intake_pipeline(hub).process(record("referral-created", "VERW-LEAP-2", bundle))
    assert not [e for e in events if isinstance(e, MessageDeadLettered)]
    waiting = [e.referral_id for e in events if isinstance(e, ReferralAwaitingConsent)]
    assert waiting == ["VERW-LEAP-2"]

    consent = consent_resource("c-leap-4", referral_id="VERW-LEAP-2", bsn=fictional_bsn(3))
    consent["dateTime"] = "2016-12-31T23:59:60Z"
    consent["provision"]["period"] = {"start": "2016-12-31T23:59:60Z"}
    events = consent_pipeline(hub).process(record("consent-granted", "VERW-LEAP-2", consent))
    assert not [e for e in events if isinstance(e, MessageDeadLettered)]
    assert [e.consent_id for e in events if isinstance(e, ConsentRecorded)] == ["c-leap-4"]
    assert [e.referral_id for e in events if isinstance(e, ReferralReleased)] == ["VERW-LEAP-2"]
