"""The consent gate's rules, through the real domain code and an in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.fhir.consent import consent_from_fhir
from adapters.fhir.referral import referral_from_fhir
from schemas.consent import Consent, DataClass
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
    assert [(r.referral_id, r.recipient_id, r.consent_id) for r in second.releases] == [
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
    assert store.releases == {}


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
    assert sorted(r.referral_id for r in result.releases) == ["VERW-G-1", "VERW-G-2"]


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
    # "2026-12-01" is a Dutch calendar day: it ends at midnight in Amsterdam (23:00 UTC)
    assert covers(now, referral, WELFARE, NOW + timedelta(hours=10))
    assert not covers(now, referral, WELFARE, NOW + timedelta(hours=11))
    assert covers(_consent(participants), referral, WELFARE, NOW)


def test_consent_naming_the_referral_under_another_system_does_not_cover(
    referral: Referral, participants: Participants
) -> None:
    resource = consent_resource("c-x", referral_id="VERW-G-1")
    resource["provision"]["data"][0]["reference"]["identifier"]["system"] = "urn:other-his"
    consent = consent_from_fhir(resource, participants)
    assert not covers(consent, referral, WELFARE, NOW)


POLICY = gate.GatePolicy(municipalities=frozenset({"gemeente-hoogeveen"}))
MUNICIPALITY_CBS = "0118"


def _both(participants: Participants, consent_id: str = "c-both", **kw) -> Consent:  # type: ignore[no-untyped-def]
    resource = consent_resource(consent_id, referral_id=kw.pop("referral_id", "VERW-G-1"), **kw)
    resource["provision"]["actor"].append(
        {
            "role": resource["provision"]["actor"][0]["role"],
            "reference": {
                "identifier": {"system": "urn:schakel:cbs-gemeentecode", "value": MUNICIPALITY_CBS}
            },
        }
    )
    return consent_from_fhir(resource, participants)


def _with_classes(consent: Consent, *classes: DataClass) -> Consent:
    return consent.model_copy(update={"classes": frozenset(classes)})


def test_one_consent_several_recipients(referral: Referral, participants: Participants) -> None:
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW, POLICY)
    result = gate.on_consent(store, _both(participants), NOW, POLICY)
    assert sorted((r.recipient_id, r.recipient_kind) for r in result.releases) == [
        ("gemeente-hoogeveen", "municipality"),
        (WELFARE, "welfare"),
    ]
    by_kind = {o.event.recipient_kind: o.disclosure for o in result.outputs}
    assert by_kind["municipality"].bsn == referral.client.bsn, (
        "the municipal format is keyed on the BSN"
    )
    assert by_kind["welfare"].bsn is None, "never a BSN to a welfare organisation"
    assert by_kind["municipality"].reason is None, (
        "no reason text to the municipality without the reason class"
    )
    assert by_kind["municipality"].phone is None


def test_the_municipality_alone_can_be_named(
    referral: Referral, participants: Participants
) -> None:
    consent = _both(participants).model_copy(update={"recipients": ("gemeente-hoogeveen",)})
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW, POLICY)
    result = gate.on_consent(store, consent, NOW, POLICY)
    assert [r.recipient_id for r in result.releases] == ["gemeente-hoogeveen"]


def test_contact_data_consented_separately(referral: Referral, participants: Participants) -> None:
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW, POLICY)
    first = gate.on_consent(
        store, _with_classes(_consent(participants, "c-ref"), DataClass.REFERRAL), NOW, POLICY
    )
    (release,) = first.outputs
    assert release.disclosure.phone is None
    assert release.disclosure.email is None
    assert release.disclosure.address is None
    # a contact-only consent releases nothing by itself ...
    contact_only = _with_classes(
        _consent(participants, "c-contact"), DataClass.CONTACT_PHONE, DataClass.CONTACT_ADDRESS
    )
    assert not covers(contact_only, referral, WELFARE, NOW)
    # ... but next to a referral consent it widens what the organisation gets: an update
    second = gate.on_consent(store, contact_only, NOW, POLICY)
    (update,) = second.outputs
    assert update.action == "updated"
    assert update.event.registration_id == release.event.registration_id
    assert update.disclosure.phone == referral.client.phone
    assert update.disclosure.address == referral.client.address
    assert update.disclosure.email is None
    assert not gate.on_consent(store, contact_only, NOW, POLICY).outputs, (
        "no second update for the same view"
    )


def test_contact_consent_first_then_referral_consent(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    gate.on_consent(
        store,
        _with_classes(_consent(participants, "c-contact"), DataClass.CONTACT_EMAIL),
        NOW,
        POLICY,
    )
    assert not gate.on_referral(store, referral, WELFARE, NOW, POLICY).releases
    result = gate.on_consent(
        store, _with_classes(_consent(participants, "c-ref"), DataClass.REFERRAL), NOW, POLICY
    )
    (release,) = result.outputs
    assert release.disclosure.email == referral.client.email
    assert release.disclosure.phone is None


def _objection(participants: Participants, status: str = "active") -> Consent:
    resource = consent_resource("bezwaar-1", referral_id=None, status=status)
    resource["provision"] = {"type": "deny"}
    return consent_from_fhir(resource, participants, expected_status=frozenset({status}))


def test_objection_blocks_every_release_and_revokes_what_was_sent(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW, POLICY)
    gate.on_consent(store, _both(participants), NOW, POLICY)
    objected = gate.on_consent(store, _objection(participants), NOW, POLICY)
    assert sorted(r.recipient_id for r in objected.revocations) == ["gemeente-hoogeveen", WELFARE]
    other = referral_from_fhir(referral_bundle("VERW-G-9"), participants)
    gate.on_consent(store, _consent(participants, "c-9", referral_id="VERW-G-9"), NOW, POLICY)
    assert not gate.on_referral(store, other, WELFARE, NOW, POLICY).releases, (
        "objection blocks new releases"
    )
    # lifting the objection lets held referrals go; revoked ones stay revoked
    lifted = gate.on_consent(store, _objection(participants, status="inactive"), NOW, POLICY)
    assert [(r.referral_id, r.recipient_id) for r in lifted.releases] == [("VERW-G-9", WELFARE)]


def test_withdrawal_revokes_once_and_nothing_flows_after(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW, POLICY)
    gate.on_consent(store, _both(participants), NOW, POLICY)
    withdrawal = _both(participants).model_copy(update={"status": "inactive"})
    result = gate.on_consent(store, withdrawal, NOW, POLICY)
    assert sorted(r.recipient_id for r in result.revocations) == ["gemeente-hoogeveen", WELFARE]
    assert {r.cause for r in result.revocations} == {"c-both"}
    assert ("revoked", "c-both") in [(s, b) for _, s, b in store.timeline]
    # replays: the withdrawal again, the grant again, the referral again - nothing
    assert not gate.on_consent(store, withdrawal, NOW, POLICY).outputs
    assert not gate.on_consent(store, _both(participants), NOW, POLICY).outputs
    assert not gate.on_referral(store, referral, WELFARE, NOW, POLICY).outputs


def test_withdrawal_keeps_what_another_consent_still_covers(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW, POLICY)
    gate.on_consent(store, _consent(participants, "c-a"), NOW, POLICY)
    gate.on_consent(store, _consent(participants, "c-b"), NOW, POLICY)
    result = gate.on_consent(
        store, _consent(participants, "c-a").model_copy(update={"status": "inactive"}), NOW, POLICY
    )
    assert not result.revocations


def test_consent_starting_later_releases_at_its_start(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW, POLICY)
    later = _consent(participants, period={"start": "2026-12-03"})
    assert not gate.on_consent(store, later, NOW, POLICY).releases
    assert not gate.on_tick(store, NOW + timedelta(days=1), POLICY).releases
    (release,) = gate.on_tick(store, NOW + timedelta(days=2), POLICY).releases
    assert release.referral_id == "VERW-G-1"
    assert not gate.on_tick(store, NOW + timedelta(days=3), POLICY).outputs, (
        "a start is handled once"
    )


def test_expired_consent_releases_nothing_and_revokes_nothing(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    gate.on_consent(store, _consent(participants, period={"end": "2026-11-30"}), NOW, POLICY)
    assert not gate.on_referral(store, referral, WELFARE, NOW, POLICY).outputs


def test_the_end_of_a_consents_period_revokes_what_nothing_else_covers(
    referral: Referral, participants: Participants
) -> None:
    """The end of a period stops the flow as a withdrawal does: the recipient is told
    (`consent-expired`, on the consent that ended) and its release stands no more."""
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW, POLICY)
    until_2nd = _consent(participants, period={"end": "2026-12-02"})  # the whole day, local
    (release,) = gate.on_consent(store, until_2nd, NOW, POLICY).releases
    last_moment = datetime(2026, 12, 2, 22, 59, 59, 999999, tzinfo=UTC)  # 23:59:59 CET
    assert not gate.on_tick(store, last_moment, POLICY).outputs, "in force to its end"

    ended = gate.on_tick(store, last_moment + timedelta(microseconds=1), POLICY)

    (revoked,) = ended.revocations
    assert (revoked.referral_id, revoked.recipient_id) == ("VERW-G-1", WELFARE)
    assert (revoked.reason, revoked.cause) == ("consent-expired", "c-1")
    assert revoked.registration_id == release.registration_id
    assert store.releases[("VERW-G-1", WELFARE)].revoked_at == last_moment + timedelta(
        microseconds=1
    )
    assert store.timeline[-1] == (release.registration_id, "revoked", "c-1")
    assert not gate.on_tick(store, NOW + timedelta(days=5), POLICY).outputs, "handled once"
    withdrawn = until_2nd.model_copy(update={"status": "inactive"})
    assert not gate.on_consent(store, withdrawn, NOW + timedelta(days=6), POLICY).outputs, (
        "told once: a withdrawal after the end tells nobody again"
    )
    late = _consent(participants, "c-2")
    assert not gate.on_consent(store, late, NOW + timedelta(days=7), POLICY).outputs, (
        "as after a withdrawal, a later consent does not reopen the trajectory"
    )


@pytest.mark.parametrize(
    "renewal",
    [
        {},  # granted before the first one ends, open-ended
        {"start": "2026-12-03"},  # begins the moment the first one ends
    ],
)
def test_a_renewal_in_force_when_a_consent_ends_keeps_the_release(
    referral: Referral, participants: Participants, renewal: dict[str, str]
) -> None:
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW, POLICY)
    gate.on_consent(store, _consent(participants, "c-1", period={"end": "2026-12-02"}), NOW, POLICY)
    renewed = _consent(participants, "c-2", period=renewal or None)
    assert not gate.on_consent(store, renewed, NOW, POLICY).outputs, "released already"

    assert not gate.on_tick(store, NOW + timedelta(days=3), POLICY).outputs
    assert store.releases[("VERW-G-1", WELFARE)].revoked_at is None


def test_a_consent_granted_after_its_period_ended_changes_nothing(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW, POLICY)
    gate.on_consent(store, _consent(participants, "c-1"), NOW, POLICY)
    late = _consent(participants, "c-old", period={"end": "2026-11-30"})
    assert not gate.on_consent(store, late, NOW, POLICY).outputs
    assert not gate.on_tick(store, NOW + timedelta(minutes=1), POLICY).outputs, (
        "c-1 still covers the release"
    )
    assert store.consents_ending(NOW + timedelta(days=365)) == [], "ended once, at that tick"


def test_resent_referral_with_a_changed_reason_updates_the_recipient(
    referral: Referral, participants: Participants
) -> None:
    store = MemoryGateStore()
    gate.on_referral(store, referral, WELFARE, NOW, POLICY)
    (release,) = gate.on_consent(store, _consent(participants), NOW, POLICY).outputs
    changed = referral_from_fhir(
        referral_bundle("VERW-G-1", reason="Schulden; zoekt hulp bij administratie"), participants
    )
    result = gate.on_referral(store, changed, WELFARE, NOW, POLICY)
    (update,) = result.outputs
    assert update.action == "updated"
    assert update.event.registration_id == release.event.registration_id
    assert update.disclosure.reason == "Schulden; zoekt hulp bij administratie"
    assert not gate.on_referral(store, changed, WELFARE, NOW, POLICY).outputs
