"""The system under test, as its own process: the real hub (`services.hub.start_hub`), or
the raw aiokafka pipe, or the offline measurements (replay, audit verify, raw reads).

Run by bench/run.py as `python -m bench.sut`; it reads one JSON command per line on stdin
and answers one JSON line on stdout (its logs go to stderr, which the bench sends to a
file). A process of its own gives clean CPU and memory figures: psutil and
`time.process_time()` count only the system under test, and the load generator does not
share its event loop or its GIL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

import services
from adapters.broker.consumer import AssignmentTracker, ConsumerTuning
from adapters.logging import configure_logging
from adapters.storage.store import Store
from bench.clients import FETCH_BYTES, RawPipe

Command = dict[str, Any]
Reply = dict[str, Any]
# Where the hub's code is imported from (the bench checks it is its snapshot).
CODE_ROOT = str(Path(services.__file__ or "").resolve().parents[1])

# When a hub consumer gets its first partitions: the moment the hub can start reading a
# pre-loaded backlog. start_hub returns only after every consumer joined its group, so the
# time is taken where the assignment happens (the hub's own rebalance listener).
_ASSIGNED: list[tuple[float, float]] = []
_original_assigned = AssignmentTracker.on_partitions_assigned


async def _stamped(self: AssignmentTracker, assigned: Any) -> None:
    if assigned:
        _ASSIGNED.append((time.monotonic(), time.process_time()))
    await _original_assigned(self, assigned)


AssignmentTracker.on_partitions_assigned = _stamped  # type: ignore[method-assign]


class State:
    def __init__(self) -> None:
        self.hub: Any = None
        self.pipe: RawPipe | None = None
        self.waiting: set[str] = set()
        self.waiting_grew = asyncio.Event()
        # referral id -> when the hub committed its release to a welfare organisation
        self.commits: dict[str, float] = {}
        self.observer: asyncio.Task[None] | None = None


def _cpu() -> Reply:
    return {"t": time.monotonic(), "cpu": time.process_time()}


async def hub_start(state: State, cmd: Command) -> Reply:
    from schemas.registration import ReferralAwaitingConsent
    from services.hub import start_hub
    from services.settings import DEMO_PARTICIPANTS, HubSettings

    settings = HubSettings(
        kafka_bootstrap_servers=cmd["bootstrap"],
        database_url=cmd["database_url"],
        topic_prefix=cmd["prefix"],
        participants=DEMO_PARTICIPANTS,
        topic_partitions=cmd["partitions"],
        http_enabled=False,
        log_format="json",
    )
    _ASSIGNED.clear()
    called = time.monotonic()
    state.hub = await start_hub(settings)
    await state.hub.wait_assigned(30)
    if cmd.get("count_waiting"):
        queue = state.hub.hub.observers.subscribe()
        state.waiting = set()

        async def observe() -> None:
            while True:
                event = await queue.get()
                if isinstance(event, ReferralAwaitingConsent):
                    state.waiting.add(event.referral_id)
                    state.waiting_grew.set()

        state.observer = asyncio.create_task(observe())
        _stamp_commits(state)
    first = min(_ASSIGNED) if _ASSIGNED else (called, time.process_time())
    return {
        "t0": first[0],
        "cpu0": first[1],
        "called": called,
        "started": time.monotonic(),
        "code": CODE_ROOT,
    }


def _stamp_commits(state: State) -> None:
    """Record when each release to a welfare organisation commits: in `Hub.committed`
    itself, which the pipeline calls right after the commit (an observer's queue is read
    later, when its task gets the event loop). One stamp per commit, shared by its
    releases: `report.transactions` tells the transactions apart by it."""
    from schemas.registration import ReferralReleased, ReferralUpdated

    hub = state.hub.hub
    told = hub.committed
    state.commits = {}

    def committed(events: list[Any]) -> None:
        now = time.monotonic()
        for event in events:
            if (
                isinstance(event, ReferralReleased | ReferralUpdated)
                and event.recipient_kind == "welfare"
            ):
                state.commits.setdefault(event.referral_id, now)
        told(events)

    hub.committed = committed


async def hub_commits(state: State, cmd: Command) -> Reply:
    """When the hub committed each release since it started (see `_stamp_commits`)."""
    return {"commits": state.commits}


async def hub_wait_waiting(state: State, cmd: Command) -> Reply:
    """Until the hub holds `count` referrals waiting for consent (the latency run sends
    the referrals first, then paces the consents)."""
    deadline = time.monotonic() + cmd["timeout"]
    while len(state.waiting) < cmd["count"]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{len(state.waiting)} of {cmd['count']} referrals are waiting")
        state.waiting_grew.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.waiting_grew.wait(), min(left, 1.0))
    if state.observer is not None:
        state.observer.cancel()
        state.observer = None
    return {"waiting": len(state.waiting)}


async def hub_drain(state: State, cmd: Command) -> Reply:
    """Everything in the outbox published (the audit trail too): the end of a run."""
    await state.hub.relay.publish_pending()
    reply = _cpu()
    from sqlalchemy import func, select

    from adapters.storage import tables as t

    with state.hub.hub.store.engine.connect() as conn:
        reply["audit_entries"] = conn.execute(
            select(func.count()).select_from(t.audit_log)
        ).scalar()
    return reply


async def hub_stop(state: State, cmd: Command) -> Reply:
    if state.observer is not None:
        state.observer.cancel()
        state.observer = None
    if state.hub is not None:
        await state.hub.stop()
        state.hub = None
    return _cpu()


async def pipe_start(state: State, cmd: Command) -> Reply:
    tuning = ConsumerTuning(**cmd["tuning"])
    state.pipe = RawPipe(
        cmd["bootstrap"], cmd["source"], cmd["target"], cmd["group"], tuning, cmd["max_records"]
    )
    t0, cpu0 = await state.pipe.start()
    return {"t0": t0, "cpu0": cpu0, "started": time.monotonic()}


async def pipe_stop(state: State, cmd: Command) -> Reply:
    moved = 0
    if state.pipe is not None:
        pipe, state.pipe = state.pipe, None
        moved = pipe.moved
        await pipe.stop()
    return {**_cpu(), "moved": moved}


async def cpu(state: State, cmd: Command) -> Reply:
    if state.pipe is not None:
        state.pipe.check()
    return _cpu()


async def consume(state: State, cmd: Command) -> Reply:
    """A plain consumer reading topics from the start: the raw rate to compare with. It
    reads them again until it has read at least `min_records`, so that a small topic
    gives a steady rate, not the consumer's start-up."""
    started = time.monotonic()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=cmd["bootstrap"],
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=FETCH_BYTES,
        client_id="bench-raw-read",
    )
    await consumer.start()
    records = passes = 0
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in cmd["topics"]
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        deadline = started + cmd["timeout"]
        while passes == 0 or records < cmd.get("min_records", 0):
            await consumer.seek_to_beginning(*partitions)
            passes += 1
            read = 0
            while read < cmd["expected"]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"read {read} of {cmd['expected']} records")
                batch = await consumer.getmany(timeout_ms=200)
                read += sum(len(r) for r in batch.values())
            records += read
    finally:
        await consumer.stop()
    seconds = time.monotonic() - started
    return {"records": records, "passes": passes, "seconds": seconds, "rate": records / seconds}


def _offline_hub(cmd: Command) -> Any:
    from adapters.participants import load_participants
    from schemas.topics import Topics
    from services.runtime import Hub
    from services.settings import DEMO_PARTICIPANTS, HubSettings

    settings = HubSettings(
        kafka_bootstrap_servers=cmd["bootstrap"],
        database_url=cmd["database_url"],
        topic_prefix=cmd["prefix"],
        participants=DEMO_PARTICIPANTS,
        http_enabled=False,
    )
    return Hub(
        settings=settings,
        participants=load_participants(DEMO_PARTICIPANTS),
        store=Store(settings.database_url),
        topics=Topics(settings.topic_prefix),
    )


async def replay(state: State, cmd: Command) -> Reply:
    """`schakel replay` without its progress bar: the rebuild is timed alone, then the
    rebuilt state is compared with the live store (a replay that differs is no replay)."""
    from services.replay import ReplayRange, compare
    from services.replay import replay as run_replay

    live = _offline_hub(cmd)
    into = Store(cmd["into"])
    result = await run_replay(live, cmd["bootstrap"], into, ReplayRange(), compare_with_live=False)
    differences = await asyncio.to_thread(compare, live.store, into)
    into.dispose()
    live.store.dispose()
    return {
        "records": result.records,
        "seconds": result.seconds,
        "rate": result.rate,
        "per_topic": result.per_topic,
        "differences": len(differences),
        "first_differences": differences[:5],
    }


async def audit_verify(state: State, cmd: Command) -> Reply:
    """`schakel audit verify` over a store: the hub's own chain, or (with `fill`) one filled
    with that many entries by bench/audit_verify.py."""
    from adapters.participants import load_participants
    from bench.audit_verify import fill
    from services.audit_reports import verify_store
    from services.settings import DEMO_PARTICIPANTS

    with tempfile.TemporaryDirectory() as tmp:
        url = cmd.get("database_url") or f"sqlite:///{Path(tmp) / 'audit.db'}"
        store = Store(url)
        filled = None
        if cmd.get("fill"):
            store.migrate()
            filled = await asyncio.to_thread(fill, store, cmd["fill"])
        participants = load_participants(DEMO_PARTICIPANTS)  # as `schakel audit verify`
        report = await asyncio.to_thread(verify_store, store, participants=participants)
        store.dispose()
    if not report.verdict.ok:
        raise RuntimeError(f"the audit chain does not verify: {report.verdict}")
    return {
        "entries": report.verdict.checked,
        "seconds": report.seconds,
        "rate": report.rate,
        "fill_seconds": filled,
    }


async def pipeline(state: State, cmd: Command) -> Reply:
    """`python -m bench.pipeline` here: the hub's pipelines in-process, their log lines to
    /dev/null as there (the machine's speed for the hub's Python, for the bench's notes)."""
    from bench.pipeline import measure

    with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - /dev/null never blocks
        configure_logging("INFO", "json", stream=devnull)  # a fixed load, whatever the run's
        try:
            figures = await measure(cmd["referrals"], cmd["runs"], cmd["batch"], sys.stderr)
        finally:
            configure_logging(os.environ.get("SCHAKEL_LOG_LEVEL", "INFO"), "json", sys.stderr)
    return {
        "referrals": cmd["referrals"],
        "batch": cmd["batch"],
        "ms_per_referral": figures,
        "median_ms": statistics.median(figures),
    }


HANDLERS: dict[str, Callable[[State, Command], Awaitable[Reply]]] = {
    "hub-start": hub_start,
    "hub-wait-waiting": hub_wait_waiting,
    "hub-drain": hub_drain,
    "hub-commits": hub_commits,
    "hub-stop": hub_stop,
    "pipe-start": pipe_start,
    "pipe-stop": pipe_stop,
    "cpu": cpu,
    "consume": consume,
    "replay": replay,
    "audit-verify": audit_verify,
    "pipeline": pipeline,
}


async def serve(out: Any) -> None:
    state = State()
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            break
        cmd = orjson.loads(line)
        if cmd["cmd"] == "exit":
            break
        try:
            reply = await HANDLERS[cmd["cmd"]](state, cmd)
        except Exception as exc:  # noqa: BLE001 - reported to the bench, which stops
            traceback.print_exc()
            reply = {"error": f"{cmd['cmd']}: {type(exc).__name__}: {exc}"}
        out.write(orjson.dumps(reply).decode() + "\n")
        out.flush()
    if state.pipe is not None:
        await state.pipe.stop()
    if state.hub is not None:
        await state.hub.stop()


def main() -> int:
    # Replies go to the real stdout; anything else that prints lands in the log (stderr).
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    configure_logging(os.environ.get("SCHAKEL_LOG_LEVEL", "INFO"), "json", stream=sys.stderr)
    asyncio.run(serve(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
