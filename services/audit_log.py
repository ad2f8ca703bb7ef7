"""Appending to the audit trail (issue #7), inside the transaction of what it records.

Every entry is a FHIR R4 AuditEvent, chained by SHA-256 to the one before it, stored
append-only and published on the `audit` topic through the outbox. The client is named by
a keyed pseudonym of the BSN (HMAC-SHA256 with a key kept in the store), so neither the
store's audit rows nor the topic carry the BSN; `schakel audit subject-access BSN`
computes the same pseudonym to find a patient's entries.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from adapters.broker.cloudevents import ce_headers, continue_trace
from adapters.fhir.audit_event import audit_event, canonical, published
from adapters.storage.store import Tx
from schemas.access import OPERATOR_ROLE
from schemas.audit import AuditEntry, AuditRecord
from schemas.ids import message_id
from schemas.messages import OutboundMessage
from schemas.topics import ce_type
from services.domain.audit_chain import GENESIS, entry_hash
from services.runtime import Hub

CE_AUDIT_RECORDED = ce_type("audit-recorded")
_KEY = "audit-pseudonym-key"


def pseudonym(tx: Tx, bsn: str | None) -> str | None:
    if not bsn:
        return None
    key = tx.secret(_KEY, lambda: secrets.token_hex(32))
    return hmac.new(bytes.fromhex(key), str(bsn).encode(), hashlib.sha256).hexdigest()[:32]


def append(hub: Hub, tx: Tx, record: AuditRecord, traceparent: str | None = None) -> AuditEntry:
    seq, last = tx.last_audit()
    seq += 1
    prev = last or GENESIS
    event = audit_event(record, seq=seq, prev_hash=prev, participants=hub.participants)
    form = canonical(event)
    entry = AuditEntry(
        seq=seq,
        recorded=record.recorded,
        action=record.action,
        actor=record.actor,
        recipient=record.recipient,
        referral_id=record.referral_id,
        registration_id=record.registration_id,
        patient=record.patient,
        consent_id=record.consent_id,
        canonical=form,
        hash=entry_hash(form),
        prev_hash=prev,
    )
    tx.insert_audit(entry)
    ce_id = message_id("audit", str(seq), entry.hash)
    key = record.referral_id or record.registration_id or "audit"
    tx.add_outbox(
        OutboundMessage(
            message_id=ce_id,
            topic=hub.topics.audit,
            key=key.encode(),
            value=published(event, entry.hash),
            headers=ce_headers(
                ce_id=ce_id,
                ce_type=CE_AUDIT_RECORDED,
                time=record.recorded,
                traceparent=traceparent or continue_trace(None),
                subject=key,
                content_type="application/fhir+json",
            ),
        )
    )
    return entry


def record_operator_action(
    hub: Hub,
    action: str,
    detail: str = "",
    *,
    referral_id: str | None = None,
    bsn: str | None = None,
    data: tuple[str, ...] = (),
) -> None:
    """An operator command, audited in its own transaction, with the patient it concerns
    (by `bsn`) if any, so the patient's access report shows it."""

    def work(tx: Tx) -> None:
        append(
            hub,
            tx,
            AuditRecord(
                action=action,  # type: ignore[arg-type]
                recorded=hub.clock(),
                actor=hub.settings.operator_actor,
                actor_role=OPERATOR_ROLE,
                referral_id=referral_id,
                patient=pseudonym(tx, bsn),
                data=data,
                detail=detail,
            ),
        )

    hub.store.run(work)
