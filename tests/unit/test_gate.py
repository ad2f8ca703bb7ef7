"""The consent gate's rules, through the real domain code and an in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.fhir.consent import consent_from_fhir
from adapters.fhir.referral import referral_from_fhir
from schemas.consent import Consent
from schemas.participants import Participants
from schemas.referral import Referral
from services.demo.samples import consent_resource, referral_bundle
from services.domain import gate
from services.domain.consent import covers
from tests.unit.fakes import MemoryGateStore

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WELFARE = "welzijn-hoogeveen"


@pytest.fixture
def referral(participants: Participants) -> Referral:
    return referral_from_fhir(referral_bundle("VERW-G-1"), participants)


def _consent(participants: Participants, consent_id: str = "c-1", **kw) -> Consent:  # type: ignore[no-untyped-def]
    kw.setdefault("referral_id", "VERW-G-1")
    return consent_from_fhir(consent_resource(consent_id, **kw), participants)


def test_referral_then_consent_releases_once(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    first = gate.on_referral(store, referral, WELFARE, NOW)
    assert not first.releases
    assert [type(e).__name__ for e in first.events] == [
        "ReferralReceived",
        "ReferralAwaitingConsent",
    ]
    second = gate.on_consent(store, _consent(participants), NOW)
    assert [(r.referral_id, r.recipient_id, r.consent_id) for r, _ in second.releases] == [
        ("VERW-G-1", WELFARE, "c-1")
    ]
    # the same consent again, and the same referral again: nothing new
    assert not gate.on_consent(store, _consent(participants), NOW).releases
    assert not gate.on_referral(store, referral, WELFARE, NOW).releases
    assert len(store.releases) == 1
    assert [s for _, s, _ in store.timeline] == ["received", "waiting-for-consent", "released"]


def test_consent_then_referral_releases_once(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    assert not gate.on_consent(store, _consent(participants), NOW).releases
    result = gate.on_referral(store, referral, WELFARE, NOW)
    assert len(result.releases) == 1
    assert not gate.on_referral(store, referral, WELFARE, NOW).releases
    assert [s for _, s, _ in store.timeline] == ["received", "released"]


def test_no_consent_no_release(referral: Referral) -> None:
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW)
    assert store.releases == []


def test_consent_for_another_recipient_does_not_release(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW)
    result = gate.on_consent(store, _consent(participants, recipient_ura=("23456789",)), NOW)
    assert not result.releases


def test_consent_for_another_patient_does_not_release(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW)
    assert not gate.on_consent(store, _consent(participants, bsn="999900031"), NOW).releases


def test_patient_level_consent_covers_all_that_patients_referrals(
    participants: Participants,
) -> None:
    store = MemoryGateStore()
    for rid in ("VERW-G-1", "VERW-G-2"):
        gate.on_referral(
            store, referral_from_fhir(referral_bundle(rid), participants), WELFARE, NOW
        )
    other = referral_from_fhir(referral_bundle("VERW-G-3", bsn="999900031"), participants)
    gate.on_referral(store, other, WELFARE, NOW)
    result = gate.on_consent(store, _consent(participants, referral_id=None), NOW)
    assert sorted(r.referral_id for r, _ in result.releases) == ["VERW-G-1", "VERW-G-2"]


def test_withdrawn_consent_id_cannot_be_revived(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    gate.on_consent(store, _consent(participants), NOW)
    withdrawn = _consent(participants).model_copy(update={"status": "inactive"})
    gate.on_consent(store, withdrawn, NOW)
    # a late or replayed grant of the same id
    gate.on_consent(store, _consent(participants), NOW)
    assert not gate.on_referral(store, referral, WELFARE, NOW).releases


def test_period_must_cover_the_moment(referral: Referral, participants: Participants) -> None:
    later = _consent(participants, period={"start": "2026-12-02"})
    assert not covers(later, referral, WELFARE, NOW)
    ended = _consent(participants, period={"start": "2026-01-01", "end": "2026-11-30"})
    assert not covers(ended, referral, WELFARE, NOW)
    now = _consent(participants, period={"start": "2026-11-01", "end": "2026-12-01"})
    assert covers(now, referral, WELFARE, NOW + timedelta(hours=11))
    assert covers(_consent(participants), referral, WELFARE, NOW)


def test_consent_naming_the_referral_under_another_system_does_not_cover(
    referral: Referral, participants: Participants
) -> None:
    resource = consent_resource("c-x", referral_id="VERW-G-1")
    resource["provision"]["data"][0]["reference"]["identifier"]["system"] = "urn:other-his"
    consent = consent_from_fhir(resource, participants)
    assert not covers(consent, referral, WELFARE, NOW)
