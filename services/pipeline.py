"""The batch pipeline every consuming service runs.

For the records of one transaction (a polled batch, in parts of at most `ON_LOOP_RECORDS`):
`prepare` each record (parse, validate, route: CPU only, no store), then apply all of
them in one store transaction. A record that fails with a `SchakelError` (bad input), or
with an unexpected error (a bug), becomes a dead letter in that same transaction, so a poison message never blocks its partition and nothing is
dropped: the batch is first applied without savepoints (the common case, and cheaper);
if a record fails there, the transaction rolls back and the batch is applied again with a
savepoint per record.

Where it runs: on the event loop, in transactions of at most `ON_LOOP_RECORDS` records
with the loop free between them (the consumers' heartbeats, the relay), each a single
attempt that waits for no lock (`Store.run(quick=True)`). A worker thread cost more: with
the event loop's own work (consuming, producing, logging) beside it, the two threads
contended for the GIL, and the hub took 13% more CPU per referral for 11% less throughput
(bench: throughput phase, the two side by side). Anything the store says no to on that
path (a lock, a lost connection, an outage) sends the records to the patient path below,
in a worker thread, and keeps later ones there for `ON_LOOP_PAUSE_SECONDS`: no retry,
backoff or reconnect ever blocks the event loop.

Store failures abort the batch; it is retried with bounded exponential backoff. Then:
- the store does not answer (an outage): the batch goes back to the broker (offsets are
  committed only after the transaction) and is re-delivered, again with backoff, until the
  store is back. Nothing is dead-lettered: the messages are not at fault, and the dead
  letter itself is written through the store.
- the store answers, yet the batch keeps failing: some record is poison for the store
  (a constraint or data error). The records are applied one by one, each with its own
  bounded retries; one that still fails becomes a dead letter `store-rejected`, and the
  others go through.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import DBAPIError

from adapters.broker.dead_letter import dead_letter
from adapters.logging import get_logger
from adapters.redaction import redact
from adapters.storage.store import Store, Tx
from schemas.errors import InternalError, SchakelError, StoreRejectedError
from schemas.messages import InboundRecord
from schemas.registration import HubEvent, MessageDeadLettered, ReprocessIgnored
from schemas.topics import Header
from services.runtime import Hub

P = TypeVar("P")
log = get_logger("schakel.pipeline")

ON_LOOP_RECORDS = 64
"""Records per transaction on the event loop: about 40 ms of the loop here (0.6 ms each)."""
ON_LOOP_PAUSE_SECONDS = 30.0
"""After the store failed on the event loop, how long records take the worker thread."""
STORE_ATTEMPTS = 6
STORE_BACKOFF_START = 0.2
STORE_BACKOFF_MAX = 5.0
SINGLE_ATTEMPTS = 3


class _Isolate(Exception):  # noqa: N818 - a signal, not an error
    """A record failed in a batch applied without savepoints: apply it again with them."""


@dataclass(frozen=True, slots=True)
class Failed:
    error: SchakelError


def _key_text(record: InboundRecord) -> str | None:
    if record.key is None:
        return None
    try:
        return record.key.decode("utf-8")[:64]
    except UnicodeDecodeError:
        return None


class BatchPipeline(Generic[P]):
    def __init__(
        self,
        hub: Hub,
        *,
        event_type: str,
        prepare: Callable[[InboundRecord], P],
        apply: Callable[[Tx, InboundRecord, P], list[HubEvent]],
        prefetch: Callable[[Tx, list[P]], None] | None = None,
    ) -> None:
        self.hub = hub
        self.event_type = event_type
        self._prepare = prepare
        self._apply = apply
        self._prefetch = prefetch
        self._off_loop_until = 0.0

    def _prepared(self, record: InboundRecord) -> P | Failed:
        try:
            return self._prepare(record)
        except SchakelError as exc:
            return Failed(exc)
        except Exception as exc:  # noqa: BLE001 - a bug must not block the partition
            log.exception("unexpected error while reading a record", position=record.position)
            return Failed(
                InternalError(f"unexpected {type(exc).__name__} while reading the message")
            )

    def _dead_letter(self, tx: Tx, record: InboundRecord, error: SchakelError) -> HubEvent:
        tx.add_outbox(dead_letter(record, error, self.hub.topics.dead_letter))
        return MessageDeadLettered(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=_key_text(record),
            reason=error.reason,
            detail=redact(error.detail),
        )

    def _prefetch_for(self, tx: Tx, prepared: list[P]) -> None:
        """What the records will look up, read for all of them at once. Only a saving: if
        it fails for another reason than the store, each record reads its own."""
        assert self._prefetch is not None
        try:
            self._prefetch(tx, prepared)
        except DBAPIError:
            raise
        except Exception:  # noqa: BLE001 - the records' own reads decide, one by one
            log.exception("prefetch failed; records read one by one")

    def _transaction(
        self, tx: Tx, work: list[tuple[InboundRecord, P | Failed]], *, savepoints: bool
    ) -> list[HubEvent]:
        """Apply every record. Without `savepoints` (the first, cheap attempt) a record that
        fails makes the whole transaction roll back (`_Isolate`), and the batch is applied
        again with a savepoint per record, so that record alone becomes a dead letter."""
        events: list[HubEvent] = []
        if self.hub.log_order:
            positions = [(r.topic, r.partition, r.offset, r.timestamp_ms) for r, _ in work]
            done = tx.applied_already(positions)
            if done:
                # Applied already, here or by an instance that had the partition before a
                # rebalance (whose newer records may have followed): never again, so a
                # stale copy of an older record cannot undo a newer one.
                log.warning("records applied already are skipped", records=len(done))
                work = [w for w, p in zip(work, positions, strict=True) if p not in done]
                positions = [p for p in positions if p not in done]
            tx.log_processing(positions)
        if self._prefetch is not None:
            self._prefetch_for(tx, [p for _, p in work if not isinstance(p, Failed)])
        for record, prepared in work:
            if self.hub.before_apply is not None:
                self.hub.before_apply(tx, record)
            reprocess_id = record.header(Header.REPROCESS_ID)
            if reprocess_id is not None and not tx.claim_reprocess(reprocess_id, self.hub.clock()):
                # `schakel dlq reprocess` sent it once; a second delivery is not processed again.
                events.append(
                    ReprocessIgnored(
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        reprocess_id=reprocess_id[:36],
                    )
                )
                continue
            if isinstance(prepared, Failed):
                events.append(self._dead_letter(tx, record, prepared.error))
                continue
            if not savepoints:
                try:
                    events.extend(self._apply(tx, record, prepared))
                except DBAPIError:
                    raise
                except Exception:  # noqa: BLE001 - handled record by record in the second pass
                    raise _Isolate from None
                continue
            try:
                with tx.savepoint():
                    events.extend(self._apply(tx, record, prepared))
            except DBAPIError:
                raise
            except SchakelError as exc:
                events.append(self._dead_letter(tx, record, exc))
            except Exception as exc:  # noqa: BLE001 - a bug must not block the partition
                log.exception("unexpected error while applying a record", position=record.position)
                events.append(
                    self._dead_letter(
                        tx,
                        record,
                        InternalError(
                            f"unexpected {type(exc).__name__} while applying the message"
                        ),
                    )
                )
        return events

    def process(self, records: list[InboundRecord]) -> list[HubEvent]:
        """Blocking, with retries and backoff; run it in a worker thread."""
        return self._process_work([(r, self._prepared(r)) for r in records])

    def _process_work(self, work: list[tuple[InboundRecord, P | Failed]]) -> list[HubEvent]:
        try:
            return self._with_backoff(work, STORE_ATTEMPTS)
        except DBAPIError:
            if not self._store_answers():
                raise  # an outage: the broker re-delivers the batch
            if len(work) == 1:
                return self._store_rejected(work[0][0])
        # The store answers, yet the batch fails: find the record it refuses.
        log.warning("store refuses a batch it can reach; applying its records one by one")
        events: list[HubEvent] = []
        for item in work:
            try:
                events.extend(self._with_backoff([item], SINGLE_ATTEMPTS))
            except DBAPIError:
                if not self._store_answers():
                    raise
                events.extend(self._store_rejected(item[0]))
        return events

    def _with_backoff(
        self, work: list[tuple[InboundRecord, P | Failed]], attempts: int
    ) -> list[HubEvent]:
        delay = STORE_BACKOFF_START
        for attempt in range(1, attempts + 1):
            try:
                return _in_two_passes(
                    self.hub.store,
                    lambda tx, savepoints: self._transaction(tx, work, savepoints=savepoints),
                )
            except DBAPIError as exc:
                if attempt == attempts:
                    raise
                log.warning(
                    "store failed, retrying batch",
                    error=type(exc).__name__,
                    attempt=attempt,
                    retry_in_s=delay,
                    records=len(work),
                )
                time.sleep(delay)
                delay = min(delay * 2, STORE_BACKOFF_MAX)
        raise AssertionError("unreachable")

    def _store_answers(self) -> bool:
        try:
            self.hub.store.ping()
        except Exception:  # noqa: BLE001 - any failure means "not answering"
            return False
        return True

    def _store_rejected(self, record: InboundRecord) -> list[HubEvent]:
        error = StoreRejectedError(
            f"the store refused this message's changes {SINGLE_ATTEMPTS} times "
            "while it accepted others"
        )
        return self.hub.store.run(lambda tx: [self._dead_letter(tx, record, error)])

    async def handle(self, records: list[InboundRecord]) -> list[HubEvent]:
        """A polled batch, in transactions of at most `ON_LOOP_RECORDS` records, each
        committed (relay woken, events told and logged) before the next begins."""
        events: list[HubEvent] = []
        for start in range(0, len(records), ON_LOOP_RECORDS):
            if start:
                await asyncio.sleep(0)  # the loop's own work between two transactions
            chunk = records[start : start + ON_LOOP_RECORDS]
            began = time.perf_counter()
            done = await self._applied(chunk)
            self.hub.metrics.observe_batch(
                self.hub.topics.logical(chunk[0].topic),
                time.perf_counter() - began,
                [r.timestamp_ms for r in chunk],
            )
            self.hub.committed(done)
            for event in done:
                log_event(self.event_type, event)
            events.extend(done)
        return events

    async def _applied(self, records: list[InboundRecord]) -> list[HubEvent]:
        """On the event loop, one attempt that waits for nothing; if the store refuses it,
        the patient path (retries, backoff, outage handling) in a worker thread."""
        if time.monotonic() < self._off_loop_until:
            return await asyncio.to_thread(self.process, records)
        work = [(r, self._prepared(r)) for r in records]
        try:
            return _in_two_passes(
                self.hub.store,
                lambda tx, savepoints: self._transaction(tx, work, savepoints=savepoints),
                quick=True,
            )
        except DBAPIError as exc:
            self._off_loop_until = time.monotonic() + ON_LOOP_PAUSE_SECONDS
            log.warning(
                "store failed on the event loop; records go through the worker thread",
                error=type(exc).__name__,
                records=len(records),
                for_seconds=ON_LOOP_PAUSE_SECONDS,
            )
        return await asyncio.to_thread(self._process_work, work)


def apply_in_order(
    hub: Hub, items: list[tuple[BatchPipeline[Any], InboundRecord]]
) -> list[HubEvent]:
    """Records of several pipelines, in the order given, in one transaction (replay: the
    live hub's processing order interleaves topics record by record). The same two passes
    as `BatchPipeline.process`; no retries (the replay store is the operator's own)."""
    # consecutive records of one pipeline go together, so that its prefetch reads for all
    runs = [
        (pipeline, [(record, pipeline._prepared(record)) for _, record in run])
        for pipeline, run in itertools.groupby(items, key=lambda item: item[0])
    ]

    def run(tx: Tx, savepoints: bool) -> list[HubEvent]:
        events: list[HubEvent] = []
        for pipeline, work in runs:
            events.extend(pipeline._transaction(tx, work, savepoints=savepoints))
        return events

    return _in_two_passes(hub.store, run)


def _in_two_passes(
    store: Store, run: Callable[[Tx, bool], list[HubEvent]], *, quick: bool = False
) -> list[HubEvent]:
    """`run(tx, savepoints)` without savepoints first; if a record failed (`_Isolate`), the
    transaction is rolled back and run again with a savepoint per record."""
    try:
        return store.run(lambda tx: run(tx, False), quick=quick)
    except _Isolate:
        return store.run(lambda tx: run(tx, True), quick=quick)


def log_event(event_type: str, event: HubEvent) -> None:
    if isinstance(event, ReprocessIgnored):
        log.warning(
            "reprocessed message delivered again; not processed twice",
            event_type=event_type,
            outcome="reprocess-ignored",
            topic=event.topic,
            partition=event.partition,
            offset=event.offset,
        )
        return
    if isinstance(event, MessageDeadLettered):
        log.warning(
            "dead-lettered",
            event_type=event_type,
            outcome="dead-lettered",
            reason=event.reason,
            detail=event.detail,
            referral_id=event.key,
            topic=event.topic,
            partition=event.partition,
            offset=event.offset,
        )
        return
    outcome = _OUTCOMES.get(type(event).__name__, type(event).__name__)
    log.info(outcome, event_type=event_type, outcome=outcome, **_logged_fields(event))


def _logged_fields(event: HubEvent) -> dict[str, Any]:
    """`event.model_dump(include=_LOGGED)`. For an event whose logged fields are plain text
    and serialised as they are (every one of the hub's own), read off the event: 5,200
    instructions under cachegrind against 14,100, in a line written four times per
    referral."""
    names = _plain_logged(type(event))
    if not names:
        return event.model_dump(include=_LOGGED)
    return {name: getattr(event, name) for name in names}


@functools.cache
def _plain_logged(kind: type[HubEvent]) -> tuple[str, ...]:
    """The names of `kind`'s logged fields, in its order, if each is `str` or `str | None`
    and nothing of `kind` changes how it is serialised; else (). Worked out once a type."""
    decorators = kind.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers or kind.model_computed_fields:
        return ()
    logged = [(name, f) for name, f in kind.model_fields.items() if name in _LOGGED]
    if not logged or any(f.annotation not in (str, str | None) for _, f in logged):
        return ()
    return tuple(name for name, _ in logged)


_LOGGED = {
    "referral_id",
    "registration_id",
    "recipient_id",
    "consent_id",
    "status",
    "cause",
    "organisation",
    "practice_id",
}
"""The fields of an event its log line carries (ids and outcomes, never personal data)."""
_OUTCOMES = {
    "ReferralReceived": "received",
    "ReferralRedelivered": "duplicate-ignored",
    "ReferralAwaitingConsent": "waiting-for-consent",
    "ConsentRecorded": "consent-recorded",
    "ReferralReleased": "released",
    "ReferralUpdated": "updated",
    "ReferralRevoked": "revoked",
    "FeedbackForwarded": "feedback-forwarded",
    "ContactOverdue": "contact-overdue",
}
