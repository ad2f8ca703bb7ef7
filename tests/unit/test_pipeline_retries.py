"""Store failures in the batch pipeline: bounded retries, then either back to the broker
(the store is down) or a dead letter for the one record the store keeps refusing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from adapters.participants import load_participants
from adapters.storage.store import Store
from schemas.messages import InboundRecord
from schemas.registration import MessageDeadLettered, ReferralAwaitingConsent
from schemas.topics import Topics
from services import pipeline as pipeline_module
from services.demo.samples import fictional_bsn, referral_bundle, to_bytes
from services.intake.handlers import intake_pipeline
from services.runtime import Hub
from services.settings import DEMO_PARTICIPANTS, HubSettings


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    monkeypatch.setattr(pipeline_module, "STORE_BACKOFF_START", 0.001)
    store = Store(f"sqlite:///{tmp_path / 'hub.db'}")
    store.migrate()
    return Hub(
        settings=HubSettings(),
        participants=load_participants(DEMO_PARTICIPANTS),
        store=store,
        topics=Topics(""),
    )


def _referral(i: int) -> InboundRecord:
    referral_id = f"VERW-R-{i}"
    return InboundRecord(
        topic="referral-created",
        partition=0,
        offset=i,
        key=referral_id.encode(),
        value=to_bytes(referral_bundle(referral_id, bsn=fictional_bsn(i))),
        headers=(),
        timestamp_ms=1_700_000_000_000,
    )


def _fail_for(key: bytes, error: Exception, calls: list[bytes | None]):  # type: ignore[no-untyped-def]
    def before_apply(record: InboundRecord) -> None:
        calls.append(record.key)
        if record.key == key:
            raise error

    return before_apply


def _data_error() -> IntegrityError:
    return IntegrityError("INSERT ...", {}, Exception("CHECK constraint failed"))


def test_a_record_the_store_refuses_becomes_a_dead_letter_and_the_rest_go_through(
    hub: Hub,
) -> None:
    calls: list[bytes | None] = []
    hub.before_apply = _fail_for(b"VERW-R-2", _data_error(), calls)
    events = intake_pipeline(hub).process([_referral(i) for i in range(1, 5)])

    waiting = sorted(e.referral_id for e in events if isinstance(e, ReferralAwaitingConsent))
    assert waiting == ["VERW-R-1", "VERW-R-3", "VERW-R-4"]
    dead = [e for e in events if isinstance(e, MessageDeadLettered)]
    assert [(d.key, d.reason) for d in dead] == [("VERW-R-2", "store-rejected")]
    # bounded: the batch STORE_ATTEMPTS times, then the refused record SINGLE_ATTEMPTS times
    assert (
        calls.count(b"VERW-R-2") == pipeline_module.STORE_ATTEMPTS + pipeline_module.SINGLE_ATTEMPTS
    )
    rows = hub.store.outbox_rows(topic="dead-letter")
    assert len(rows) == 1
    headers = dict(rows[0].message.headers)
    assert headers["schakel-error-reason"] == b"store-rejected"
    assert rows[0].message.value == _referral(2).value  # the original bytes, unchanged


def test_an_unreachable_store_sends_the_batch_back_to_the_broker(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes | None] = []
    outage = OperationalError("SELECT 1", {}, Exception("connection refused"))
    hub.before_apply = _fail_for(b"VERW-R-1", outage, calls)

    def store_down() -> None:
        raise outage

    monkeypatch.setattr(hub.store, "ping", store_down)
    with pytest.raises(OperationalError):
        intake_pipeline(hub).process([_referral(1), _referral(2)])
    assert calls.count(b"VERW-R-1") == pipeline_module.STORE_ATTEMPTS  # bounded, then given back
    assert hub.store.outbox_rows(topic="dead-letter") == []  # not the messages' fault


def test_a_record_failing_mid_apply_is_dead_lettered_and_its_writes_undone(hub: Hub) -> None:
    """The batch is applied without savepoints first; a record failing half-way rolls it
    all back, and the second pass (a savepoint per record) keeps the others."""
    from schemas.errors import InvalidReferralError

    pipeline = intake_pipeline(hub)
    apply = pipeline._apply

    def fails_after_writing(tx, record, prepared):  # type: ignore[no-untyped-def]
        events = apply(tx, record, prepared)  # the referral is written ...
        if record.key == b"VERW-R-3":
            raise InvalidReferralError("refused half-way")  # ... then the record fails
        return events

    pipeline._apply = fails_after_writing
    events = pipeline.process([_referral(i) for i in range(1, 5)])

    dead = [(e.key, e.reason) for e in events if isinstance(e, MessageDeadLettered)]
    assert dead == [("VERW-R-3", "invalid-referral")]
    waiting = sorted(e.referral_id for e in events if isinstance(e, ReferralAwaitingConsent))
    assert waiting == ["VERW-R-1", "VERW-R-2", "VERW-R-4"]
    assert hub.store.run(lambda tx: tx.referral("VERW-R-3")) is None  # its write undone
    assert hub.store.run(lambda tx: tx.referral("VERW-R-4")) is not None
