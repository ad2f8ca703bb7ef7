"""The consent gate (CONTRACT §4, DOMAIN §5).

A referral is held until a consent covers it for a recipient, then released to that
recipient once - whichever arrived first. Recipients are the routed welfare organisation
and every municipality participant a consent in force names. A withdrawal (or the
patient's objection) stops further releases and revokes what the recipients it names
already received, and so does the end of a consent's period where no other consent
covers the pair then; a consent that widens what may be shared, or a re-sent referral that
changes what a recipient sees, updates that recipient under the same registration id.

Runs inside one store transaction; the caller renders `outputs` into outbox messages in
that same transaction, so state and outputs commit together. Consent is checked at the
moment of processing: late or replayed events cannot revive a withdrawn consent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from schemas.consent import Consent
from schemas.disclosure import Disclosure, RecipientKind
from schemas.errors import ReferralConflictError
from schemas.feedback import WelfareFeedback
from schemas.ids import message_id, registration_id_for
from schemas.referral import Referral
from schemas.registration import (
    ConsentRecorded,
    ContactOverdue,
    FeedbackForwarded,
    GateEvent,
    ReferralAwaitingConsent,
    ReferralReceived,
    ReferralRedelivered,
    ReferralReleased,
    ReferralRevoked,
    ReferralUpdated,
    RegistrationStatus,
    ReleaseState,
    RevokeReason,
    StoredReferral,
)
from services.domain.consent import applies, coverage, covers
from services.domain.minimise import disclose
from services.domain.ports import GateStore

HUB = "schakel-hub"


DEFAULT_CONTACT_DAYS = 14
DEFAULT_RETENTION = timedelta(days=20 * 365 + 5)  # WGBO: 20 years (DOMAIN §5)


@dataclass(frozen=True)
class GatePolicy:
    """Facts about participants the rules need: which recipients are municipalities, and
    each welfare organisation's contact term; how long closed registrations are kept."""

    municipalities: frozenset[str] = frozenset()
    contact_days: Mapping[str, int] = field(default_factory=dict)
    retention: timedelta = DEFAULT_RETENTION

    def kind_of(self, recipient_id: str) -> RecipientKind:
        return "municipality" if recipient_id in self.municipalities else "welfare"

    def contact_term(self, recipient_id: str) -> timedelta:
        return timedelta(days=self.contact_days.get(recipient_id, DEFAULT_CONTACT_DAYS))


@dataclass(frozen=True)
class Output:
    """Something to send, decided by the rules."""

    action: Literal["released", "updated", "revoked", "feedback", "overdue"]
    event: ReferralReleased | ReferralUpdated | ReferralRevoked | FeedbackForwarded | ContactOverdue
    disclosure: Disclosure | None = None
    feedback: WelfareFeedback | None = None


@dataclass
class GateResult:
    events: list[GateEvent] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)

    @property
    def releases(self) -> list[ReferralReleased]:
        return [o.event for o in self.outputs if isinstance(o.event, ReferralReleased)]

    @property
    def revocations(self) -> list[ReferralRevoked]:
        return [o.event for o in self.outputs if isinstance(o.event, ReferralRevoked)]


Revokes = Callable[[Referral, str], bool]
"""Whether a recipient that no longer has a covering consent is told so (revoked)."""


def _never(_referral: Referral, _recipient: str) -> bool:
    return False


def _settle(
    store: GateStore,
    stored: StoredReferral,
    at: datetime,
    policy: GatePolicy,
    result: GateResult,
    *,
    revokes: Revokes = _never,
    cause: str = HUB,
    reason: RevokeReason = "consent-withdrawn",
) -> None:
    """Bring every recipient of one referral in line with the consents in force at `at`."""
    referral = stored.referral
    consents = store.consents_for(referral.referral_id, referral.client.bsn)
    releases = store.releases_of(referral.referral_id)
    registration = store.registration(stored.registration_id)
    if registration is not None and registration.closed and stored.recipient_id not in releases:
        # Its trajectory closed (revoked) while this referral waited: if it goes out now, it
        # starts a new registration rather than updating a closed one.
        stored = stored.model_copy(
            update={
                "registration_id": message_id(
                    "registration",
                    referral.referral_id,
                    stored.recipient_id,
                    registration.registration_id,
                )
            }
        )
        store.put_referral(stored)
        store.add_status(
            stored.registration_id, RegistrationStatus.RECEIVED, at, referral.referrer.practice_id
        )
    targets = {stored.recipient_id, *releases}
    for consent in consents:
        if consent.status == "active" and not consent.is_objection:
            targets.update(r for r in consent.recipients if r in policy.municipalities)

    # Only the routed welfare organisation is a welfare target; a consent naming another
    # one does not send it anything. Municipalities are targets when a consent names them.
    for recipient in sorted(targets):
        kind = policy.kind_of(recipient)
        state = releases.get(recipient)
        cover = coverage(consents, referral, recipient, at)
        if state is None:
            if cover.covered:
                _release(
                    store,
                    stored,
                    recipient,
                    kind,
                    cover.consent_id or "",
                    cover.classes,
                    at,
                    policy,
                    result,
                )
        elif state.revoked_at is None:
            if not cover.covered:
                if revokes(referral, recipient):
                    _revoke(store, stored, recipient, kind, at, cause, reason, policy, result)
            else:
                disclosure = disclose(referral, kind, cover.classes)
                if disclosure.fingerprint() != state.fingerprint:
                    store.set_fingerprint(referral.referral_id, recipient, disclosure.fingerprint())
                    event = ReferralUpdated(
                        referral_id=referral.referral_id,
                        registration_id=stored.registration_id,
                        recipient_id=recipient,
                        recipient_kind=kind,
                        consent_id=cover.consent_id or "",
                        updated_at=at,
                        classes=cover.classes,
                    )
                    result.events.append(event)
                    result.outputs.append(Output("updated", event, disclosure))


def _release(
    store: GateStore,
    stored: StoredReferral,
    recipient: str,
    kind: RecipientKind,
    consent_id: str,
    classes: frozenset,  # type: ignore[type-arg]
    at: datetime,
    policy: GatePolicy,
    result: GateResult,
) -> None:
    disclosure = disclose(stored.referral, kind, classes)
    first = not store.registration_released_before(
        stored.registration_id, recipient, stored.referral.referral_id
    )
    event = ReferralReleased(
        referral_id=stored.referral.referral_id,
        registration_id=stored.registration_id,
        recipient_id=recipient,
        recipient_kind=kind,
        consent_id=consent_id,
        released_at=at,
        classes=classes,
        first_of_registration=first,
    )
    store.record_release(
        ReleaseState(
            referral_id=event.referral_id,
            recipient_id=recipient,
            registration_id=stored.registration_id,
            consent_id=consent_id,
            released_at=at,
            fingerprint=disclosure.fingerprint(),
        )
    )
    if kind == "welfare" and first:
        store.add_status(stored.registration_id, RegistrationStatus.RELEASED, at, HUB)
        store.set_contact_due(stored.registration_id, at + policy.contact_term(recipient))
    result.events.append(event)
    result.outputs.append(Output("released", event, disclosure))


def _revoke(
    store: GateStore,
    stored: StoredReferral,
    recipient: str,
    kind: RecipientKind,
    at: datetime,
    cause: str,
    reason: RevokeReason,
    policy: GatePolicy,
    result: GateResult,
) -> None:
    store.mark_revoked(stored.referral.referral_id, recipient, at)
    if kind == "welfare" and not store.live_releases(stored.registration_id, recipient):
        # Nothing of this trajectory may reach the organisation any more: it is closed.
        store.add_status(stored.registration_id, RegistrationStatus.REVOKED, at, cause)
        store.close_registration(stored.registration_id, at, at + policy.retention)
    event = ReferralRevoked(
        referral_id=stored.referral.referral_id,
        registration_id=stored.registration_id,
        recipient_id=recipient,
        recipient_kind=kind,
        revoked_at=at,
        cause=cause,
        reason=reason,
    )
    result.events.append(event)
    result.outputs.append(Output("revoked", event, None))


def on_referral(
    store: GateStore,
    referral: Referral,
    recipient_id: str,
    at: datetime,
    policy: GatePolicy = GatePolicy(),
    *,
    trace: str | None = None,
) -> GateResult:
    """A referral arrived (already validated and routed to `recipient_id`); `trace` is
    its inbound traceparent, kept with the referral (its first one stays)."""
    result = GateResult()
    existing = store.referral(referral.referral_id)
    if existing is None and store.releases_of(referral.referral_id):
        # Released before, and deleted with its closed registration's personal data when
        # the retention passed: a late re-send of a closed trajectory, never reopened.
        result.events.append(ReferralRedelivered(referral_id=referral.referral_id, at=at))
        return result
    if existing is not None:
        before = existing.referral
        if (
            before.client.bsn != referral.client.bsn
            or before.referrer.practice_id != referral.referrer.practice_id
            or before.identifier_system != referral.identifier_system
        ):
            # Not a re-send of the same referral: taking it as one would hand the
            # releases, consents and feedback of one patient's referral to another's.
            raise ReferralConflictError(
                "this referral id is already held for another patient, practice or "
                "identifier system; a new referral needs an id of its own"
            )
        registration = store.registration(existing.registration_id)
        if existing.referral == referral or (registration is not None and registration.closed):
            # A duplicate, or a late re-send for a closed trajectory: never reopened.
            result.events.append(ReferralRedelivered(referral_id=referral.referral_id, at=at))
            return result

    if existing is not None and existing.recipient_id in store.releases_of(referral.referral_id):
        # Released already: it stays with the organisation that has it; a change reaches
        # that organisation as an update under the same registration.
        recipient_id = existing.recipient_id
    if existing is not None and existing.recipient_id == recipient_id:
        registration_id = existing.registration_id
    else:
        # One registration per patient x organisation: a new referral for a patient with an
        # open trajectory there joins it.
        registration_id = store.open_registration(
            referral.client.bsn, recipient_id
        ) or registration_id_for(referral.referral_id, recipient_id)
    stored = StoredReferral(
        referral=referral,
        recipient_id=recipient_id,
        registration_id=registration_id,
        received_at=existing.received_at if existing is not None else at,
        trace=existing.trace if existing is not None and existing.trace else trace,
    )
    new_registration = store.registration(registration_id) is None
    store.put_referral(stored)
    if new_registration:
        store.add_status(
            stored.registration_id, RegistrationStatus.RECEIVED, at, referral.referrer.practice_id
        )
    if existing is None or existing.registration_id != stored.registration_id:
        result.events.append(
            ReferralReceived(
                referral_id=referral.referral_id,
                registration_id=stored.registration_id,
                recipient_id=recipient_id,
                at=at,
            )
        )
    _settle(store, stored, at, policy, result)
    arrived = existing is None or existing.registration_id != stored.registration_id
    if arrived and recipient_id not in store.releases_of(referral.referral_id):
        if new_registration:
            store.add_status(
                stored.registration_id, RegistrationStatus.WAITING_FOR_CONSENT, at, HUB
            )
        result.events.append(
            ReferralAwaitingConsent(
                referral_id=referral.referral_id,
                registration_id=stored.registration_id,
                recipient_id=recipient_id,
                at=at,
            )
        )
    return result


def _affected(store: GateStore, consent: Consent) -> Iterable[StoredReferral]:
    if consent.referrals and not consent.is_objection:
        found = (store.referral(ref.value) for ref in consent.referrals)
        return [s for s in found if s is not None]
    if consent.patient_bsn is not None:
        return store.referrals_of_patient(consent.patient_bsn)
    return []


def _revokes(consent: Consent, before: Consent | None, at: datetime) -> Revokes:
    """An objection revokes everything; a withdrawal revokes what the consent was in force
    for until now (a pair whose coverage had already ended, say by expiry, is not told
    again), and so does a grant of the same id sent again with less in it, for what it no
    longer names; anything else revokes nothing. (Only where no consent covers the pair
    any more: `_settle` asks that first.)"""
    if consent.is_objection and consent.status == "active":
        return lambda _referral, _recipient: True
    if consent.is_objection or before is None or before.status != "active":
        return _never
    if consent.status == "active":  # sent again: what it covered and covers no longer
        return lambda referral, recipient: (
            bool(covers(before, referral, recipient, at))
            and not covers(consent, referral, recipient, at)
        )
    return lambda referral, recipient: bool(applies(before, referral, recipient, at))


def on_consent(
    store: GateStore, consent: Consent, at: datetime, policy: GatePolicy = GatePolicy()
) -> GateResult:
    """A consent arrived: granted (active), withdrawn (inactive/rejected), or an objection.

    A consent id once withdrawn stays withdrawn: a late or replayed grant of the same id
    cannot revive it (DOMAIN §5)."""
    result = GateResult()
    existing = store.consent(consent.consent_id)
    if existing is not None and existing.status != "active" and consent.status == "active":
        result.events.append(
            ConsentRecorded(
                consent_id=consent.consent_id,
                status=existing.status,
                recipients=existing.recipients,
                at=at,
            )
        )
        return result
    if existing is not None and consent.status != "active":
        # A withdrawal need not repeat the provision: it ends the consent as recorded.
        consent = existing.model_copy(update={"status": consent.status})
    store.put_consent(consent, at)
    result.events.append(
        ConsentRecorded(
            consent_id=consent.consent_id,
            status=consent.status,
            recipients=consent.recipients,
            at=at,
        )
    )

    revokes = _revokes(consent, existing, at)
    affected = {s.referral.referral_id: s for s in _affected(store, consent)}
    if existing is not None and existing.status == "active" and not existing.is_objection:
        # What the version it replaces named too: a narrower grant must settle those.
        for stored in _affected(store, existing):
            affected.setdefault(stored.referral.referral_id, stored)
    for stored in affected.values():
        _settle(store, stored, at, policy, result, revokes=revokes, cause=consent.consent_id)
    return result


def on_tick(store: GateStore, at: datetime, policy: GatePolicy = GatePolicy()) -> GateResult:
    """Time passed: consents whose period has begun now cover what they name, those whose
    period has ended no longer do, and registrations past their contact term without
    contact are overdue (each once: the state is in the store, so a hub that was down
    across the moment still acts exactly once). Starts before ends: a renewal that begins
    as its predecessor ends keeps the pair covered, and nothing is revoked."""
    result = GateResult()
    for consent in store.consents_starting(at):
        started = on_consent_start(store, consent, at, policy)
        result.events.extend(started.events)
        result.outputs.extend(started.outputs)
    for consent in store.consents_ending(at):
        ended = on_consent_end(store, consent, at, policy)
        result.events.extend(ended.events)
        result.outputs.extend(ended.outputs)
    due = on_contact_due(store, at, policy)
    result.events.extend(due.events)
    result.outputs.extend(due.outputs)
    return result


def on_consent_start(
    store: GateStore, consent: Consent, at: datetime, policy: GatePolicy = GatePolicy()
) -> GateResult:
    """A consent's period began: it now covers what it names."""
    result = GateResult()
    store.mark_started(consent.consent_id)
    for stored in _affected(store, consent):
        _settle(store, stored, at, policy, result)
    return result


def on_consent_end(
    store: GateStore, consent: Consent, at: datetime, policy: GatePolicy = GatePolicy()
) -> GateResult:
    """A consent's period ended: it covers nothing any more. Each recipient it was in
    force for at its last moment, and that no other consent covers now, is told
    (`consent-expired`) and loses access, as after a withdrawal: earlier disclosures stay
    lawful, nothing more flows. An objection whose period ended blocks nothing any more:
    what is covered is released."""
    result = GateResult()
    store.mark_ended(consent.consent_id)
    end = consent.period_end
    revokes: Revokes = (
        _never
        if consent.is_objection or end is None
        else lambda referral, recipient: bool(applies(consent, referral, recipient, end))
    )
    for stored in _affected(store, consent):
        _settle(
            store,
            stored,
            at,
            policy,
            result,
            revokes=revokes,
            cause=consent.consent_id,
            reason="consent-expired",
        )
    return result


def on_contact_due(store: GateStore, at: datetime, policy: GatePolicy = GatePolicy()) -> GateResult:
    """Registrations past their contact term without contact are overdue (once)."""
    result = GateResult()
    for registration in store.registrations_due(at):
        store.mark_overdue(registration.registration_id, at)
        # About a referral the organisation holds, told to the practice that sent it: the
        # registration's first referral may never have reached it, or been revoked, or be
        # another practice's.
        release = store.first_live_release(registration.registration_id, registration.recipient_id)
        stored = store.referral(release.referral_id) if release is not None else None
        if release is None or stored is None:
            continue  # nothing of it reaches the organisation any more: nobody to remind
        store.add_status(registration.registration_id, RegistrationStatus.OVERDUE, at, HUB)
        event = ContactOverdue(
            referral_id=release.referral_id,
            registration_id=registration.registration_id,
            recipient_id=registration.recipient_id,
            practice_id=stored.referral.referrer.practice_id,
            due_at=registration.contact_due_at or at,
            at=at,
        )
        result.events.append(event)
        result.outputs.append(Output("overdue", event))
    return result
