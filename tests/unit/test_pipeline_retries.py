"""Store failures in the batch pipeline: bounded retries, then either back to the broker
(the store is down) or a dead letter for the one record the store keeps refusing."""

from __future__ import annotations

import asyncio
import threading
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
from tests.conftest import HeldWriteLock, LoopTurns


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
    def before_apply(_tx: object, record: InboundRecord) -> None:
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


async def test_a_batch_is_applied_on_the_event_loop_in_transactions_of_bounded_size(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker thread while the store answers; each transaction commits (and wakes the
    relay) before the next starts, and the loop runs other tasks between them."""
    monkeypatch.setattr(pipeline_module, "ON_LOOP_RECORDS", 2)
    forbidden = _Forbidden()  # the patient path must not be taken
    monkeypatch.setattr(pipeline_module.asyncio, "to_thread", forbidden)
    committed: list[list[str]] = []
    hub.committed = lambda events: committed.append(  # type: ignore[method-assign]
        [e.referral_id for e in events if isinstance(e, ReferralAwaitingConsent)]
    )
    between: list[int] = []

    async def other_task() -> None:
        while True:
            between.append(len(committed))
            await asyncio.sleep(0)

    task = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    events = await intake_pipeline(hub).handle([_referral(i) for i in range(1, 6)])
    task.cancel()
    assert committed == [["VERW-R-1", "VERW-R-2"], ["VERW-R-3", "VERW-R-4"], ["VERW-R-5"]]
    assert [e.referral_id for e in events if isinstance(e, ReferralAwaitingConsent)] == [
        f"VERW-R-{i}" for i in range(1, 6)
    ]
    assert {1, 2} <= set(between), "the loop ran other work between the transactions"
    assert forbidden.calls == 0


class _Forbidden:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, *_args: object, **_kwargs: object) -> object:
        self.calls += 1
        raise AssertionError("went to a worker thread")


LOCKED_TIMEOUT = 20.0
"""Generous: on a correct pipeline each wait ends within milliseconds of its cause."""


async def test_a_locked_store_sends_the_records_to_the_worker_thread_and_none_are_lost(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the event loop nothing waits for a lock: the store is locked by another writer,
    so the records take the patient path (a thread that waits), and the next batch does too
    until the pause is over. The loop itself stays free while the lock is held: it runs
    other tasks, and it is the loop that lets the other writer go."""
    loop = asyncio.get_running_loop()
    main = threading.current_thread()
    lock = HeldWriteLock(tmp_path / "hub.db", LOCKED_TIMEOUT)  # another writer holds it

    patient: list[threading.Thread] = []  # threads that began a waiting (non-quick) attempt
    in_patient_path = asyncio.Event()
    run = hub.store.run

    def spying_run(work, *, quick=False):  # type: ignore[no-untyped-def]
        if not quick:
            patient.append(threading.current_thread())
            loop.call_soon_threadsafe(in_patient_path.set)
        return run(work, quick=quick)

    monkeypatch.setattr(hub.store, "run", spying_run)
    applied: list[tuple[threading.Thread, bool]] = []  # (thread, lock released by then)
    hub.before_apply = lambda _tx, _record: applied.append(
        (threading.current_thread(), lock.released.is_set())
    )
    turns = LoopTurns()  # another task on the loop
    pipeline = intake_pipeline(hub)
    handling = asyncio.create_task(pipeline.handle([_referral(1), _referral(2)]))
    try:
        await asyncio.wait_for(in_patient_path.wait(), LOCKED_TIMEOUT)
        assert patient and patient[0] is not main, "the patient path ran on the event loop"
        assert not lock.released.is_set() and not handling.done(), "applied while the lock was held"
        before = turns.count
        await asyncio.wait_for(turns.wait(50), LOCKED_TIMEOUT)  # the loop runs other tasks ...
        assert turns.count >= before + 50
        assert not handling.done() and applied == [], "... while the records wait for the lock"
        lock.release("event loop")
        events = await asyncio.wait_for(handling, LOCKED_TIMEOUT)
    finally:
        turns.stop()
        handling.cancel()  # no-op once done
        lock.close()
    assert lock.released_by == ["event loop"], "the event loop let the other writer go"
    assert sorted(e.referral_id for e in events if isinstance(e, ReferralAwaitingConsent)) == [
        "VERW-R-1",
        "VERW-R-2",
    ]
    assert applied == [(patient[0], True), (patient[0], True)], (
        "applied in the worker thread, once the other writer let go"
    )
    assert hub.store.run(lambda tx: tx.referral("VERW-R-2")) is not None
    # later records keep to the worker thread for a while
    threads: list[threading.Thread] = []
    hub.before_apply = lambda _tx, _record: threads.append(threading.current_thread())
    await asyncio.wait_for(pipeline.handle([_referral(3)]), LOCKED_TIMEOUT)
    assert threads and threads[0] is not main


async def test_a_record_the_store_refuses_on_the_event_loop_is_dead_lettered_as_before(
    hub: Hub,
) -> None:
    calls: list[bytes | None] = []
    hub.before_apply = _fail_for(b"VERW-R-2", _data_error(), calls)
    events = await intake_pipeline(hub).handle([_referral(i) for i in range(1, 4)])
    assert [(e.key, e.reason) for e in events if isinstance(e, MessageDeadLettered)] == [
        ("VERW-R-2", "store-rejected")
    ]
    waiting = sorted(e.referral_id for e in events if isinstance(e, ReferralAwaitingConsent))
    assert waiting == ["VERW-R-1", "VERW-R-3"]
    # once on the event loop, then the patient path's bounded attempts
    assert calls.count(b"VERW-R-2") == (
        1 + pipeline_module.STORE_ATTEMPTS + pipeline_module.SINGLE_ATTEMPTS
    )
