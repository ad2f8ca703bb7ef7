"""`schakel replay`: rebuild registration and consent state from the topics into a separate
store, with the hub's own pipelines, and compare it with the live store (issue #7).

Nothing is published: the replay hub has no outbox relay (its outbox fills, and stays in
the replay store), and it never connects a producer. Records are applied in the order
the live hub applied them (its processing log; cross-topic order decides outcomes such as
a withdrawal that overtook its grant), then any the live hub never saw, by timestamp. The
clock of each record is its broker timestamp. The timer runs at every moment something
falls due (a consent's period begins or ends, a contact term passes, a retention ends), between
the records around it and in the same transaction, and after the last record up to the
end moment: decisions that depend on it (feedback after a consent started, `not-reached`
after an overdue notice) come out as they did live. (The live timer runs every
`SCHAKEL_TIMERS_INTERVAL_SECONDS`, so live a due moment takes effect up to that much
later; a record inside that window can be decided differently, and shows as a
difference.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from adapters.broker.consumer import inbound
from adapters.broker.reading import PartitionReader, TopicPartition
from adapters.storage import tables as t
from adapters.storage.store import Store, Tx
from schemas import topics as names
from schemas.access import OPERATOR_ROLE
from schemas.audit import AuditRecord
from schemas.messages import InboundRecord
from services import collector
from services.audit_log import append
from services.consent.handlers import consent_pipeline
from services.domain.gate import GatePolicy
from services.feedback.handlers import feedback_pipeline
from services.intake.handlers import intake_pipeline
from services.outputs import gate_policy
from services.pipeline import BatchPipeline, apply_in_order
from services.runtime import Hub
from services.timers.handlers import tick_in

REPLAYABLE = (
    names.REFERRAL_CREATED,
    names.CONSENT_GRANTED,
    names.CONSENT_WITHDRAWN,
    names.FEEDBACK_RETURNED,
)
CHUNK = 500


@dataclass
class ReplayRange:
    topics: tuple[str, ...] = REPLAYABLE
    from_offset: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def described(self) -> str:
        """The span in words, for the audit trail: where it started and where it ended."""
        if self.from_offset is not None:
            start = f"from offset {self.from_offset}"
        elif self.since is not None:
            start = f"since {self.since.isoformat()}"
        else:
            start = "from the start"
        end = f"until {self.until.isoformat()}" if self.until is not None else "to the end"
        return f"{start} {end}"


@dataclass
class ReplayResult:
    records: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def identical(self) -> bool:
        return not self.differences

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


class _RecordClock:
    def __init__(self, default: datetime) -> None:
        self.now = default

    def __call__(self) -> datetime:
        return self.now

    def follow(self, record: InboundRecord) -> bool:
        """The record's time, when it has one (True)."""
        if record.timestamp_ms is not None and record.timestamp_ms >= 0:
            self.now = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
            return True
        return False


_MAX_TICKS = 100_000
"""Timer runs between two records at most (a guard: each run settles what was due)."""


def run_due(hub: Hub, tx: Tx, clock: _RecordClock, until: datetime, policy: GatePolicy) -> None:
    """The timer at every moment something fell due up to `until`, in order, in `tx`."""
    for _ in range(_MAX_TICKS):
        due = tx.next_due()
        if due is None or due > until:
            break
        clock.now = due
        tick_in(hub, tx, due, policy)
        tx.forget_due()
    clock.now = until


def replay_hub(live: Hub, into: Store, as_of: datetime) -> tuple[Hub, _RecordClock]:
    clock = _RecordClock(as_of)
    hub = Hub(
        settings=live.settings,
        participants=live.participants,
        store=into,
        topics=live.topics,
        clock=clock,
    )

    policy = gate_policy(hub)

    def before_apply(tx: Tx, record: InboundRecord) -> None:
        if clock.follow(record):
            run_due(hub, tx, clock, clock.now, policy)

    hub.before_apply = before_apply  # relay stays None: nothing is ever published
    hub.log_order = False
    return hub, clock


async def read_topics(
    bootstrap: str,
    live: Hub,
    span: ReplayRange,
    handle: Callable[[str, list[InboundRecord]], None],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, int], list[str]]:
    """Every chosen record in the order the live hub applied it (its processing log), then
    any record the live hub never applied, in timestamp order. Records the log names but
    the topic no longer holds are reported."""
    counts = {name: 0 for name in span.topics}
    missing: list[str] = []
    async with PartitionReader(bootstrap, "schakel-replay") as reader:
        partitions = reader.partitions(live.topics.name(name) for name in span.topics)
        await reader.assign(partitions)
        if span.since is not None:
            starts = await reader.offsets_at(span.since)
        elif span.from_offset is not None:
            starts = {tp: min(span.from_offset, end) for tp, end in reader.ends.items()}
        else:
            starts = await reader.beginnings()
        reader.seek(starts)
        total = sum(max(0, reader.ends[tp] - starts[tp]) for tp in partitions)
        until_ms = int(span.until.timestamp() * 1000) if span.until else None
        done: dict[TopicPartition, int] = {}
        seen = 0

        def emit(record: Any) -> None:
            nonlocal seen
            logical = live.topics.logical(record.topic)
            handle(logical, inbound([record]))
            counts[logical] += 1
            seen += 1
            if progress is not None and seen % 100 == 0:
                progress(seen, max(total, seen))

        for _seq, topic, partition, offset, ts in live.store.processing_order():
            tp = TopicPartition(topic, partition)
            if tp not in reader.buffers or offset < starts[tp] or offset <= done.get(tp, -1):
                continue  # not chosen, before the range, or applied twice live (idempotent)
            if until_ms is not None and ts is not None and ts > until_ms:
                continue
            record = await reader.take(tp, offset)
            if record is None:
                missing.append(
                    f"record {topic}/{partition}/{offset} was applied live but is gone from the topic"
                )
                continue
            done[tp] = offset
            emit(record)
        rest = [
            r for tp in partitions for r in await reader.rest(tp) if r.offset > done.get(tp, -1)
        ]
        for record in sorted(rest, key=lambda r: (r.timestamp, r.topic, r.partition, r.offset)):
            if until_ms is None or record.timestamp <= until_ms:
                emit(record)
        if progress is not None:
            progress(seen, max(total, seen))
    return counts, missing


def _state(store: Store) -> dict[str, Any]:
    """What must be the same after a replay: registrations, releases, consents, feedback.
    Times are left out (the replay's clock is the broker's timestamps)."""
    with store.engine.connect() as conn:
        registrations = {
            r.registration_id: (r.status, r.recipient_id, r.practice_id, r.closed_at is not None)
            for r in conn.execute(select(t.registrations))
        }
        referrals = {r.referral_id: r.registration_id for r in conn.execute(select(t.referrals))}
        releases = {
            (r.referral_id, r.recipient_id): (
                r.registration_id,
                r.consent_id,
                r.revoked_at is not None,
                r.fingerprint[:12],  # what the recipient was last sent of it
            )
            for r in conn.execute(select(t.releases))
        }
        consents = {r.consent_id: (r.status, r.kind) for r in conn.execute(select(t.consents))}
        feedback = {r.message_id for r in conn.execute(select(t.feedback.c.message_id))}
    return {
        "registration": registrations,
        "referral": referrals,
        "release": releases,
        "consent": consents,
        "feedback": feedback,
    }


def compare(live: Store, rebuilt: Store, limit: int = 50) -> list[str]:
    a, b = _state(live), _state(rebuilt)
    differences: list[str] = []
    for kind in a:
        left, right = a[kind], b[kind]
        if isinstance(left, set):
            for item in sorted(left - right)[:limit]:
                differences.append(f"{kind} {item}: only in the live store")
            for item in sorted(right - left)[:limit]:
                differences.append(f"{kind} {item}: only in the replay")
            continue
        for key in sorted(set(left) | set(right), key=str):
            if key not in right:
                differences.append(f"{kind} {key}: only in the live store")
            elif key not in left:
                differences.append(f"{kind} {key}: only in the replay")
            elif left[key] != right[key]:
                differences.append(f"{kind} {key}: live {left[key]} != replay {right[key]}")
            if len(differences) >= limit:
                return differences
    return differences


async def replay(
    live: Hub,
    bootstrap: str,
    into: Store,
    span: ReplayRange,
    *,
    operator: str = OPERATOR_ROLE,
    progress: Callable[[int, int], None] | None = None,
    compare_with_live: bool = True,
) -> ReplayResult:
    started = asyncio.get_running_loop().time()
    as_of = span.until or live.clock()
    await asyncio.to_thread(into.migrate)
    hub, clock = replay_hub(live, into, as_of)
    pipelines: dict[str, BatchPipeline[Any]] = {
        names.REFERRAL_CREATED: intake_pipeline(hub),
        names.CONSENT_GRANTED: consent_pipeline(hub),
        names.CONSENT_WITHDRAWN: consent_pipeline(hub, withdrawn=True),
        names.FEEDBACK_RETURNED: feedback_pipeline(hub),
    }
    pending: list[tuple[str, InboundRecord]] = []

    def flush() -> None:
        # one transaction per chunk, records in order, whatever their topics
        items = [(pipelines[topic], record) for topic, record in pending]
        pending.clear()
        if items:
            apply_in_order(hub, items)

    def handle(topic: str, records: list[InboundRecord]) -> None:
        pending.extend((topic, r) for r in records)
        if len(pending) >= CHUNK:
            flush()

    with collector.tuned():
        counts, missing = await read_topics(bootstrap, live, span, handle, progress)
        await asyncio.to_thread(flush)
        policy = gate_policy(hub)
        await asyncio.to_thread(into.run, lambda tx: run_due(hub, tx, clock, as_of, policy))
    result = ReplayResult(records=sum(counts.values()), per_topic=counts)
    if compare_with_live:
        result.differences = missing + await asyncio.to_thread(compare, live.store, into)
    result.seconds = asyncio.get_running_loop().time() - started

    def audit(tx: Any) -> None:
        append(
            live,
            tx,
            AuditRecord(
                action="replay",
                recorded=live.clock(),
                actor=operator,
                actor_role=OPERATOR_ROLE,
                data=tuple(span.topics),
                # the span first: the AuditEvent keeps 200 characters of this
                detail=f"{span.described}; {result.records} records; "
                f"{len(result.differences)} differences",
            ),
        )

    await asyncio.to_thread(live.store.run, audit)
    return result
