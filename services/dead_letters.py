"""Re-driving dead letters (`schakel dlq`, issue #7).

A dead letter is sent once more to the topic it came from - as it was, or fixed by the
operator - with its original headers (the hub's error headers taken off) and lineage
headers naming the dead letter and the original topic/partition/offset. It is re-driven
once (the store records it), and the hub processes a re-driven record once (the pipeline
claims its reprocess id). Both steps are audited.
"""

from __future__ import annotations

from adapters.broker.client import Sender
from adapters.fhir.common import bsn_in
from schemas.ids import message_id
from schemas.messages import OutboundMessage
from schemas.topics import Header
from services.audit_log import record_operator_action
from services.runtime import Hub

_ERROR_HEADERS = {
    Header.ERROR_REASON,
    Header.ERROR_DETAIL,
    Header.ORIGINAL_TOPIC,
    Header.ORIGINAL_PARTITION,
    Header.ORIGINAL_OFFSET,
    Header.REPROCESS_ID,
    Header.REPROCESS_OF,
    Header.DEAD_LETTER_ID,
}


class ReprocessError(Exception):
    pass


def find_dead_letter(hub: Hub, message_id: str) -> OutboundMessage | None:
    for row in hub.store.outbox_rows(topic=hub.topics.dead_letter, message_id=message_id):
        return row.message
    return None


def _header(message: OutboundMessage, name: str) -> str:
    for key, value in reversed(message.headers):
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return ""


def record_dlq_access(hub: Hub, letter: OutboundMessage, action: str, detail: str = "") -> None:
    """An operator read or re-drove a dead letter's original bytes: audited with the patient
    they concern, if known, so the patient's access report shows it. That is the BSN the
    bytes name or, when they name none (feedback carries only the referral id), the
    patient of the referral the record's key names, if the hub holds that referral."""
    referral_id = (letter.key or b"").decode("utf-8", "replace")[:64] or None
    bsn = bsn_in(letter.value)
    if bsn is None and referral_id:
        bsn = hub.store.patient_of_referral(referral_id)
    record_operator_action(
        hub, action, detail, referral_id=referral_id, bsn=bsn, data=("dead-letter",)
    )


async def reprocess(
    hub: Hub, bootstrap: str, letter: OutboundMessage, fixed: bytes | None
) -> tuple[str, str]:
    topic = _header(letter, Header.ORIGINAL_TOPIC)
    origin = f"{topic}/{_header(letter, Header.ORIGINAL_PARTITION)}/{_header(letter, Header.ORIGINAL_OFFSET)}"
    if not topic:
        raise ReprocessError("the dead letter does not say which topic it came from")
    # The same id at every attempt: if a failed attempt's send did reach the broker after
    # all, the pipeline's claim of the id still processes the record once.
    reprocess_id = message_id("reprocess", letter.message_id)
    if not hub.store.run(
        lambda tx: tx.record_reprocess(
            letter.message_id, reprocess_id, hub.clock(), hub.settings.operator_actor
        )
    ):
        raise ReprocessError(
            f"dead letter {letter.message_id} was reprocessed before; it is sent once"
        )
    headers = tuple((k, v) for k, v in letter.headers if k not in _ERROR_HEADERS) + (
        (Header.REPROCESS_ID, reprocess_id.encode()),
        (Header.REPROCESS_OF, origin.encode()),
        (Header.DEAD_LETTER_ID, letter.message_id.encode()),
    )
    try:
        async with Sender(bootstrap) as sender:
            await sender.send(
                topic, fixed if fixed is not None else letter.value, key=letter.key, headers=headers
            )
    except BaseException:
        # Not sent (as far as we know): the dead letter may be re-driven again.
        hub.store.run(lambda tx: tx.forget_reprocess(letter.message_id, reprocess_id))
        raise
    record_dlq_access(
        hub, letter, "dlq-reprocess", f"{origin}{' (fixed)' if fixed is not None else ''}"
    )
    return topic, reprocess_id
