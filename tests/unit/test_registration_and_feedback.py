"""Issue #5 rules: one registration per patient x organisation, feedback, the contact term."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.fhir.consent import consent_from_fhir
from adapters.fhir.referral import referral_from_fhir
from schemas.errors import SchakelError
from schemas.feedback import WelfareFeedback
from schemas.participants import Participants
from schemas.registration import ContactOverdue, FeedbackForwarded
from services.demo.samples import consent_resource, referral_bundle
from services.domain import gate
from services.domain.feedback import on_feedback
from tests.unit.fakes import MemoryGateStore

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
W = "welzijn-hoogeveen"
POLICY = gate.GatePolicy(
    municipalities=frozenset({"gemeente-hoogeveen"}),
    contact_days={"welzijn-hoogeveen": 14, "welzijn-de-wolden": 10},
)


def _released(
    participants: Participants,
    rid: str = "VERW-F-1",
    store: MemoryGateStore | None = None,
    **bundle,
):  # type: ignore[no-untyped-def]
    store = store or MemoryGateStore()
    referral = referral_from_fhir(referral_bundle(rid, **bundle), participants)
    gate.on_referral(store, referral, W, NOW, POLICY)
    gate.on_consent(
        store,
        consent_from_fhir(consent_resource(f"c-{rid}", referral_id=rid), participants),
        NOW,
        POLICY,
    )
    return store, store.referrals[rid].registration_id


def _feedback(
    status: str, rid: str = "VERW-F-1", org: str = W, minutes: int = 60, summary: str = ""
) -> WelfareFeedback:
    return WelfareFeedback(
        referral_id=rid,
        organisation=org,
        status=status,
        occurred_at=NOW + timedelta(minutes=minutes),
        summary=summary or f"Status {status}",
    )


def test_feedback_moves_the_registration_and_reaches_the_gp(participants: Participants) -> None:
    store, reg = _released(participants)
    for i, status in enumerate(("not-reached", "contacted", "in-progress", "completed")):
        result = on_feedback(store, _feedback(status, minutes=60 * (i + 1)), NOW, POLICY)
        (output,) = result.outputs
        assert isinstance(output.event, FeedbackForwarded)
        assert output.event.practice_id == "praktijk-de-linde"
        assert output.feedback is not None
        assert output.feedback.status == status
    assert [s for r, s, _ in store.timeline if r == reg] == [
        "received",
        "waiting-for-consent",
        "released",
        "not-reached",
        "contacted",
        "in-progress",
        "completed",
    ]
    assert [b for r, _, b in store.timeline if r == reg][-4:] == [W] * 4, "who caused each change"
    state = store.registration(reg)
    assert state.closed
    assert state.contact_made_at == NOW + timedelta(minutes=120), (
        "contacted, not not-reached, met the term"
    )


def test_spoofed_feedback_is_refused(participants: Participants) -> None:
    store, _ = _released(participants)
    for feedback in (
        _feedback("completed", org="welzijn-de-wolden"),  # another organisation
        _feedback("completed", org="gemeente-hoogeveen"),  # not a welfare organisation
        _feedback("completed", rid="VERW-NOT-THERE"),  # no such referral: same answer
    ):
        with pytest.raises(SchakelError) as info:
            on_feedback(store, feedback, NOW, POLICY)
        assert info.value.reason == "not-authorised"
    assert store.feedback == {}


def test_feedback_after_withdrawal_is_refused(participants: Participants) -> None:
    store, _ = _released(participants)
    withdrawal = consent_from_fhir(
        consent_resource("c-VERW-F-1", referral_id="VERW-F-1"), participants
    )
    gate.on_consent(store, withdrawal.model_copy(update={"status": "inactive"}), NOW, POLICY)
    with pytest.raises(SchakelError, match="no consent covers this organisation any more"):
        on_feedback(store, _feedback("contacted"), NOW, POLICY)


def test_the_same_feedback_twice_counts_once(participants: Participants) -> None:
    store, _ = _released(participants)
    assert on_feedback(store, _feedback("contacted"), NOW, POLICY).outputs
    assert not on_feedback(store, _feedback("contacted"), NOW, POLICY).outputs


def test_closed_registration_is_never_reopened(participants: Participants) -> None:
    store, reg = _released(participants)
    on_feedback(store, _feedback("declined"), NOW, POLICY)
    assert store.registration(reg).closed
    late = on_feedback(store, _feedback("in-progress", minutes=500), NOW, POLICY)
    assert late.outputs, "the GP still hears it"
    assert store.registration(reg).status == "declined", "but the registration stays closed"
    # a late duplicate or changed re-send of the referral changes nothing
    changed = referral_from_fhir(referral_bundle("VERW-F-1", reason="Andere reden"), participants)
    assert not gate.on_referral(store, changed, W, NOW, POLICY).outputs
    # a new referral for the same patient starts a new trajectory
    _, reg2 = _released(participants, "VERW-F-2", store)
    assert reg2 != reg


def test_a_new_referral_joins_the_open_registration(participants: Participants) -> None:
    store, reg = _released(participants)
    referral2 = referral_from_fhir(referral_bundle("VERW-F-2", reason="Ook schulden"), participants)
    gate.on_referral(store, referral2, W, NOW, POLICY)
    assert store.referrals["VERW-F-2"].registration_id == reg
    result = gate.on_consent(
        store,
        consent_from_fhir(consent_resource("c-2", referral_id="VERW-F-2"), participants),
        NOW,
        POLICY,
    )
    (release,) = result.releases
    assert release.registration_id == reg
    assert not release.first_of_registration, "sent as referral-updated, not a second intake"
    assert len(store.registrations) == 1
    assert [s for r, s, _ in store.timeline if r == reg].count("released") == 1


def test_contact_term_fires_once_per_registration(participants: Participants) -> None:
    store, reg = _released(participants)
    assert not gate.on_tick(store, NOW + timedelta(days=13, hours=23), POLICY).outputs
    result = gate.on_tick(store, NOW + timedelta(days=14, minutes=1), POLICY)
    (output,) = result.outputs
    assert isinstance(output.event, ContactOverdue)
    assert output.event.due_at == NOW + timedelta(days=14)
    assert output.event.practice_id == "praktijk-de-linde"
    assert not gate.on_tick(store, NOW + timedelta(days=30), POLICY).outputs
    assert store.registration(reg).status == "overdue"
    # contact after the deadline is still recorded
    on_feedback(store, _feedback("contacted", minutes=60 * 24 * 20), NOW, POLICY)
    assert store.registration(reg).status == "contacted"


def test_contact_in_time_means_no_overdue(participants: Participants) -> None:
    store, _ = _released(participants)
    on_feedback(store, _feedback("contacted"), NOW, POLICY)
    assert not gate.on_tick(store, NOW + timedelta(days=60), POLICY).outputs


def test_not_reached_does_not_meet_the_term(participants: Participants) -> None:
    store, _ = _released(participants)
    on_feedback(store, _feedback("not-reached"), NOW, POLICY)
    assert gate.on_tick(store, NOW + timedelta(days=15), POLICY).outputs


def test_the_term_is_per_organisation(participants: Participants) -> None:
    store = MemoryGateStore()
    referral = referral_from_fhir(
        referral_bundle("VERW-F-9", performer_ura="23456789"), participants
    )
    gate.on_referral(store, referral, "welzijn-de-wolden", NOW, POLICY)
    consent = consent_from_fhir(
        consent_resource("c-9", referral_id="VERW-F-9", recipient_ura=("23456789",)), participants
    )
    gate.on_consent(store, consent, NOW, POLICY)
    assert not gate.on_tick(store, NOW + timedelta(days=10, minutes=-1), POLICY).outputs
    assert gate.on_tick(store, NOW + timedelta(days=10, minutes=1), POLICY).outputs


def test_a_referral_waiting_in_a_closed_registration_starts_a_new_one(
    participants: Participants,
) -> None:
    store, reg = _released(participants)
    waiting = referral_from_fhir(referral_bundle("VERW-F-3"), participants)
    gate.on_referral(store, waiting, W, NOW, POLICY)
    assert store.referrals["VERW-F-3"].registration_id == reg, "joined the open registration"
    withdrawal = consent_from_fhir(
        consent_resource("c-VERW-F-1", referral_id="VERW-F-1"), participants
    )
    gate.on_consent(store, withdrawal.model_copy(update={"status": "inactive"}), NOW, POLICY)
    assert store.registration(reg).closed
    result = gate.on_consent(
        store,
        consent_from_fhir(consent_resource("c-3", referral_id="VERW-F-3"), participants),
        NOW,
        POLICY,
    )
    (release,) = result.releases
    assert release.registration_id != reg
    assert release.first_of_registration, (
        "an intake of the new trajectory, not an update of the closed one"
    )
    assert not store.registration(release.registration_id).closed
