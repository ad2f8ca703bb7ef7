"""A partition moved in a rebalance while its old owner still held a fetched batch: the new
owner applies that batch's records and newer ones, then the old owner's transaction (held
up by a slow store, retried) commits. Its records are in the processing log by then, so
they are skipped: a stale copy of an older consent never undoes a newer one (found with
two hub processes on PostgreSQL and the embedded broker; here at the pipeline, on one
SQLite store shared by two hubs)."""

from __future__ import annotations

import orjson

from schemas import topics as names
from schemas.messages import InboundRecord
from services.consent.handlers import consent_pipeline
from services.demo.samples import consent_resource, fictional_bsn, referral_bundle, to_bytes
from services.intake.handlers import intake_pipeline
from services.runtime import Hub
from tests.conftest import hub_on

BSN = fictional_bsn(41)


def _consent(offset: int, classes: tuple[str, ...], timestamp_ms: int = 1_000) -> InboundRecord:
    resource = consent_resource("c-st-1", referral_id="R-ST-1", bsn=BSN, classes=classes)
    return InboundRecord(
        names.CONSENT_GRANTED, 0, offset, b"R-ST-1", to_bytes(resource), (), timestamp_ms
    )


def _phones_sent(hub: Hub) -> list[bool]:
    """For each release or update to the welfare organisation: did it carry the phone?"""
    return [
        "phone" in orjson.loads(row.message.value or b"{}").get("client", {})
        for row in hub.store.outbox_rows(topic=hub.topics.welfare_referrals("welzijn-hoogeveen"))
    ]


def test_a_stale_batch_of_the_partitions_old_owner_is_not_applied(store_url: str) -> None:
    url = store_url
    old_owner, new_owner = hub_on(url), hub_on(url)
    referral = to_bytes(referral_bundle("R-ST-1", bsn=BSN))
    intake_pipeline(old_owner).process(
        [InboundRecord(names.REFERRAL_CREATED, 0, 0, b"R-ST-1", referral, (), 500)]
    )
    consent_pipeline(old_owner).process([_consent(9, ("referral",))])
    widened, narrowed = _consent(10, ("referral", "contact-phone")), _consent(11, ("referral",))

    consent_pipeline(new_owner).process([widened, narrowed])  # from the committed offset
    consent_pipeline(old_owner).process([widened])  # fetched before the revoke, late

    assert _phones_sent(new_owner) == [False, True, False], "no phone after the narrowing"
    stored = new_owner.store.run(lambda tx: tx.consent("c-st-1"))
    assert stored is not None and "contact-phone" not in stored.classes
    order = [(topic, offset) for _, topic, _, offset, _ in new_owner.store.processing_order()]
    assert order.count((names.CONSENT_GRANTED, 10)) == 1


def test_a_record_at_a_position_seen_before_but_of_another_time_is_applied(
    store_url: str,
) -> None:
    """A topic made again (a broker that lost its state starts at offset 0 again) reuses
    positions: its records have other timestamps and are applied."""
    hub = hub_on(store_url)
    referral = to_bytes(referral_bundle("R-ST-1", bsn=BSN))
    intake_pipeline(hub).process(
        [InboundRecord(names.REFERRAL_CREATED, 0, 0, b"R-ST-1", referral, (), 500)]
    )
    consent_pipeline(hub).process([_consent(0, ("referral",), timestamp_ms=1_000)])
    consent_pipeline(hub).process([_consent(0, ("referral", "contact-phone"), timestamp_ms=9_000)])
    assert _phones_sent(hub) == [False, True]


def test_a_batch_of_two_partitions_skips_only_the_positions_applied_already(
    store_url: str,
) -> None:
    """Each partition's span is looked up on its own: the same offset on another partition
    of the topic is another record, applied; the record applied already is not."""
    old_owner, new_owner = hub_on(store_url), hub_on(store_url)
    referral = to_bytes(referral_bundle("R-ST-1", bsn=BSN))
    intake_pipeline(old_owner).process(
        [InboundRecord(names.REFERRAL_CREATED, 0, 0, b"R-ST-1", referral, (), 500)]
    )
    consent_pipeline(old_owner).process([_consent(9, ("referral",))])
    widened = _consent(10, ("referral", "contact-phone"))
    consent_pipeline(new_owner).process([widened])
    on_partition_1 = InboundRecord(
        names.CONSENT_GRANTED, 1, 10, b"R-ST-1", _consent(0, ("referral",)).value, (), 1_000
    )
    consent_pipeline(old_owner).process([widened, on_partition_1])

    assert _phones_sent(new_owner) == [False, True, False], "the narrowing on partition 1"
    order = [
        (partition, offset) for _, _, partition, offset, _ in new_owner.store.processing_order()
    ]
    assert order.count((0, 10)) == 1 and order.count((1, 10)) == 1
