"""Turning gate results into outbox messages; shared by every service that can release."""

from __future__ import annotations

from adapters.broker.cloudevents import continue_trace
from adapters.storage.store import Tx
from adapters.welfare.intake import release_message
from schemas.messages import InboundRecord
from schemas.topics import Header
from services.domain.gate import GateResult
from services.runtime import Hub


def releases_to_outbox(hub: Hub, tx: Tx, result: GateResult, cause: InboundRecord) -> None:
    """One welfare intake message per release. The trace continues from the record that
    completed the referral+consent pair."""
    if not result.releases:
        return
    traceparent = continue_trace(cause.header(Header.TRACEPARENT))
    for release, referral in result.releases:
        recipient = hub.participants.by_id[release.recipient_id]
        tx.add_outbox(
            release_message(
                release,
                referral,
                topic=hub.topics.welfare_referrals(recipient.id),
                contact_within_days=recipient.contact_within_days,
                traceparent=traceparent,
            )
        )
