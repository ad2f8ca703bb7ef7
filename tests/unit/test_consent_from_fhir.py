from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.fhir.consent import WITHDRAWN, consent_from_bytes
from schemas.consent import CONTACT_CLASSES, DATA_CLASS_SYSTEM, DEFAULT_CLASSES, DataClass
from schemas.errors import SchakelError
from schemas.participants import Participants
from services.demo.samples import DEMO_BSN, REFERRAL_SYSTEM, consent_resource, to_bytes
from tests.unit.mutation import mutate


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
    assert consent.period_start == datetime(2026, 11, 1, tzinfo=UTC)
    # a date-only end includes that whole day
    assert consent.period_end is not None
    assert consent.period_end > datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert consent.period_end < datetime(2027, 1, 1, tzinfo=UTC)
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
