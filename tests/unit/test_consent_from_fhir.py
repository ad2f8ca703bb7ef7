from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.fhir.consent import WITHDRAWN, consent_from_bytes
from adapters.fhir.referral import referral_from_fhir
from schemas.consent import CONTACT_CLASSES, DATA_CLASS_SYSTEM, DEFAULT_CLASSES, DataClass
from schemas.errors import SchakelError
from schemas.participants import Participants
from schemas.referral import Referral
from services.demo.samples import (
    DEMO_BSN,
    REFERRAL_SYSTEM,
    consent_resource,
    referral_bundle,
    to_bytes,
)
from services.domain.consent import covers
from tests.unit.mutation import mutate

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
WELFARE = "welzijn-hoogeveen"


def _parse(resource: dict[str, Any], participants: Participants, **kw: Any):  # type: ignore[no-untyped-def]
    return consent_from_bytes(to_bytes(resource), participants, **kw)


def test_reads_patient_recipients_referral_and_period(participants: Participants) -> None:
    consent = _parse(
        consent_resource(
            "c-1",
            recipient_ura=("12345678", "23456789"),
            period={"start": "2026-11-01", "end": "2026-12-31"},
        ),
        participants,
    )
    assert consent.consent_id == "c-1"
    assert consent.status == "active"
    assert consent.patient_bsn == DEMO_BSN
    assert consent.recipients == ("welzijn-hoogeveen", "welzijn-de-wolden")
    assert [(r.system, r.value) for r in consent.referrals] == [(REFERRAL_SYSTEM, "VERW-2026-0001")]
    # dates without a time are Dutch calendar days (CET in winter: +01:00)
    assert consent.period_start == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    # a date-only end includes that whole day, in Amsterdam
    assert consent.period_end is not None
    assert consent.period_end > datetime(2026, 12, 31, 22, 59, tzinfo=UTC)
    assert consent.period_end < datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    assert consent.key == "VERW-2026-0001"


def test_patient_level_consent_is_keyed_by_its_id(participants: Participants) -> None:
    consent = _parse(consent_resource("c-2", referral_id=None), participants)
    assert consent.referrals == ()
    assert consent.key == "c-2"


@pytest.mark.parametrize(
    ("change", "reason", "words"),
    [
        (lambda c: c.update(status="inactive"), "invalid-consent", "status must be active"),
        (
            lambda c: c["scope"]["coding"][0].update(code="research"),
            "invalid-consent",
            "patient-privacy",
        ),
        (
            lambda c: c["provision"].update(type="deny"),
            "invalid-consent",
            "deny provision must name no actor",
        ),
        (
            lambda c: c["provision"]["actor"][0]["reference"]["identifier"].update(
                value="99999999"
            ),
            "unknown-participant",
            "actor[0]",
        ),
        (
            lambda c: c["provision"]["actor"][0]["role"]["coding"][0].update(code="CST"),
            "invalid-consent",
            "IRCP",
        ),
        (
            lambda c: c["provision"]["data"][0].update(reference={"reference": "ServiceRequest/1"}),
            "invalid-consent",
            "by reference.identifier",
        ),
        (lambda c: c["patient"]["identifier"].update(value="123456789"), "invalid-bsn", "11-proef"),
        (lambda c: c.pop("id"), "invalid-consent", "neither id nor identifier"),
    ],
)
def test_unreadable_consents_are_refused(
    change, reason: str, words: str, participants: Participants
) -> None:  # type: ignore[no-untyped-def]
    resource = consent_resource()
    change(resource)
    with pytest.raises(SchakelError) as info:
        _parse(resource, participants)
    assert info.value.reason == reason
    assert words in info.value.detail


def test_consent_for_nobody_is_refused(participants: Participants) -> None:
    with pytest.raises(SchakelError, match="covers nobody"):
        _parse(consent_resource(referral_id=None, bsn=None), participants)


def test_withdrawal_needs_inactive_and_may_omit_the_provision(participants: Participants) -> None:
    resource = consent_resource("c-3", status="inactive")
    del resource["provision"]
    consent = _parse(resource, participants, expected_status=WITHDRAWN)
    assert consent.status == "inactive"
    with pytest.raises(SchakelError, match="status must be inactive or rejected"):
        _parse(consent_resource("c-3"), participants, expected_status=WITHDRAWN)


@settings(max_examples=600, deadline=None)
@given(data=st.data())
def test_mutated_consents_raise_only_schakel_errors(
    data: st.DataObject, participants: Participants
) -> None:
    try:
        consent = _parse(mutate(consent_resource(), data), participants)
    except SchakelError as exc:
        assert exc.detail
        assert DEMO_BSN not in exc.detail
    else:
        assert consent.status == "active"
        assert consent.recipients


def _class(code: str, system: str = DATA_CLASS_SYSTEM) -> dict[str, str]:
    return {"system": system, "code": code}


def test_data_classes_restrict_what_is_shared(participants: Participants) -> None:
    resource = consent_resource("c-cls")
    assert _parse(resource, participants).classes == DEFAULT_CLASSES
    resource["provision"]["class"] = [_class("referral"), _class("contact-phone")]
    assert _parse(resource, participants).classes == {DataClass.REFERRAL, DataClass.CONTACT_PHONE}
    resource["provision"]["class"] = [_class("contact")]
    assert _parse(resource, participants).classes == CONTACT_CLASSES
    resource["provision"]["class"] = [_class("referral"), _class("reason")]
    assert _parse(resource, participants).classes == {DataClass.REFERRAL, DataClass.REASON}


@pytest.mark.parametrize(
    ("classes", "words"),
    [
        ([_class("diagnosis")], "unknown data class"),
        ([{"system": "http://hl7.org/fhir/resource-types", "code": "Patient"}], "must use system"),
    ],
)
def test_unreadable_classes_are_refused_not_ignored(
    classes, words: str, participants: Participants
) -> None:  # type: ignore[no-untyped-def]
    resource = consent_resource()
    resource["provision"]["class"] = classes
    with pytest.raises(SchakelError, match=words):
        _parse(resource, participants)


def test_objection_is_a_deny_without_actors(participants: Participants) -> None:
    resource = consent_resource("bezwaar-1", referral_id=None)
    resource["provision"] = {"type": "deny"}
    objection = _parse(resource, participants)
    assert objection.is_objection
    assert objection.patient_bsn == DEMO_BSN
    assert objection.recipients == ()
    resource["patient"] = {"reference": "Patient/pat-1"}
    with pytest.raises(SchakelError, match="must name the patient by BSN"):
        _parse(resource, participants)


def test_nested_provisions_are_refused(participants: Participants) -> None:
    resource = consent_resource()
    resource["provision"]["provision"] = [{"type": "deny", "class": [_class("contact")]}]
    with pytest.raises(SchakelError, match="nested"):
        _parse(resource, participants)


# --- Period dates without a time are calendar days in Europe/Amsterdam ------------------


@pytest.fixture
def referral(participants: Participants) -> Referral:
    return referral_from_fhir(referral_bundle(), participants)


def _covered(
    period: dict[str, str], at: datetime, referral: Referral, participants: Participants
) -> bool:
    consent = _parse(consent_resource("c-period", period=period), participants)
    return bool(covers(consent, referral, WELFARE, at))


def test_date_only_end_stops_at_midnight_in_amsterdam_summer(
    referral: Referral, participants: Participants
) -> None:
    # 31 March 2026 is CEST (+02:00): the day ends at 2026-03-31T22:00:00Z
    period = {"end": "2026-03-31"}
    assert _covered(period, datetime(2026, 3, 31, 21, 30, tzinfo=UTC), referral, participants)
    # 00:30 on 1 April in Amsterdam: the consent has ended
    assert not _covered(period, datetime(2026, 3, 31, 22, 30, tzinfo=UTC), referral, participants)
    consent = _parse(consent_resource("c-period", period=period), participants)
    assert consent.period_end == datetime(2026, 3, 31, 21, 59, 59, 999999, tzinfo=UTC)


def test_date_only_end_stops_at_midnight_in_amsterdam_winter(
    referral: Referral, participants: Participants
) -> None:
    # 15 January is CET (+01:00): the day ends at 2026-01-15T23:00:00Z
    period = {"end": "2026-01-15"}
    assert _covered(period, datetime(2026, 1, 15, 22, 30, tzinfo=UTC), referral, participants)
    assert not _covered(period, datetime(2026, 1, 15, 23, 30, tzinfo=UTC), referral, participants)


def test_date_only_start_begins_at_midnight_in_amsterdam(
    referral: Referral, participants: Participants
) -> None:
    summer = {"start": "2026-04-01"}  # CEST: 00:00 local is 2026-03-31T22:00:00Z
    assert not _covered(summer, datetime(2026, 3, 31, 21, 30, tzinfo=UTC), referral, participants)
    assert _covered(summer, datetime(2026, 3, 31, 22, 30, tzinfo=UTC), referral, participants)
    winter = {"start": "2026-01-15"}  # CET: 00:00 local is 2026-01-14T23:00:00Z
    assert not _covered(winter, datetime(2026, 1, 14, 22, 30, tzinfo=UTC), referral, participants)
    assert _covered(winter, datetime(2026, 1, 14, 23, 30, tzinfo=UTC), referral, participants)


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        # a month: its first day 00:00 to its last day 24:00, local (March changes to CEST)
        (
            {"start": "2026-03", "end": "2026-03"},
            datetime(2026, 3, 1, tzinfo=AMSTERDAM),
            datetime(2026, 4, 1, tzinfo=AMSTERDAM),
        ),
        # a leap February
        (
            {"start": "2028-02", "end": "2028-02"},
            datetime(2028, 2, 1, tzinfo=AMSTERDAM),
            datetime(2028, 3, 1, tzinfo=AMSTERDAM),
        ),
        # a year
        (
            {"start": "2026", "end": "2026"},
            datetime(2026, 1, 1, tzinfo=AMSTERDAM),
            datetime(2027, 1, 1, tzinfo=AMSTERDAM),
        ),
        # the day summer time ends (25 hours long)
        (
            {"start": "2026-10-25", "end": "2026-10-25"},
            datetime(2026, 10, 25, tzinfo=AMSTERDAM),
            datetime(2026, 10, 26, tzinfo=AMSTERDAM),
        ),
    ],
)
def test_partial_dates_span_their_month_or_year_in_amsterdam(
    period: dict[str, str], start: datetime, end: datetime, participants: Participants
) -> None:
    consent = _parse(consent_resource("c-partial", period=period), participants)
    assert consent.period_start == start.astimezone(UTC)
    assert consent.period_start.tzinfo is UTC
    assert consent.period_end == end.astimezone(UTC) - timedelta(microseconds=1)
    assert consent.period_end.tzinfo is UTC


def test_period_with_a_time_keeps_its_own_offset(participants: Participants) -> None:
    period = {"start": "2026-03-31T08:00:00+02:00", "end": "2026-03-31T23:59:59Z"}
    consent = _parse(consent_resource("c-time", period=period), participants)
    assert consent.period_start == datetime(2026, 3, 31, 6, 0, tzinfo=UTC)
    assert consent.period_end == datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    "period",
    [
        {"start": "0001"},
        {"start": "0001-01-01T00:00:00+14:00"},
        {"end": "9999-12-31T23:00:00-12:00"},
    ],
)
def test_periods_beyond_the_calendar_are_refused_not_crashed(
    period: dict[str, str], participants: Participants
) -> None:
    with pytest.raises(SchakelError, match="unreadable consent"):
        _parse(consent_resource("c-far", period=period), participants)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        # fhir.resources takes its Python names as keys too; read as no class at all, the
        # consent would have covered every class
        (
            {"class_fhir": [{"system": DATA_CLASS_SYSTEM, "code": "referral"}]},
            "'class_fhir' is not an element of FHIR R4 JSON",
        ),
        (
            {"modifierExtension": [{"url": "urn:x", "valueBoolean": True}]},
            "element.modifierExtension: not understood",
        ),
    ],
)
def test_a_provision_the_hub_cannot_read_as_written_is_refused(
    change: dict[str, Any], words: str, participants: Participants
) -> None:
    resource = consent_resource("c-p", referral_id="VERW-2026-0001", classes=("referral",))
    resource["provision"].update(change)
    with pytest.raises(SchakelError, match=words):
        _parse(resource, participants)
