"""Helpers for tests that run the hub against a real broker and a real store."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from adapters.broker.admin import TopicSpec, delete_topics, ensure_topics
from adapters.broker.client import Sender, inbound_headers
from adapters.storage.store import Store
from schemas import topics as names
from schemas.registration import HubEvent
from services.demo.samples import consent_resource, fictional_bsn, referral_bundle, to_bytes
from services.hub import RunningHub, start_hub
from services.runtime import Observers
from services.settings import DEMO_PARTICIPANTS, HubSettings

E = TypeVar("E")
FENCE = "x-test-fence"
OPERATOR_TOKEN = "test-operator-token"
OPERATOR_SHA256 = hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()
NAMED_OPERATOR = "j.devries"  # fictional: an operator with a token of their own
NAMED_OPERATOR_TOKEN = "test-token-of-j.devries"


def token(participant_id: str) -> str:
    """The demo participants' tokens (their SHA-256 is in the demo file)."""
    return f"demo-token-{participant_id}"


TIMEOUT = 20.0


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


def settings_for(bootstrap: str, database_url: str, prefix: str, **kw: Any) -> HubSettings:
    return HubSettings(
        kafka_bootstrap_servers=bootstrap,
        database_url=database_url,
        topic_prefix=prefix,
        participants=DEMO_PARTICIPANTS,
        topic_partitions=kw.pop("topic_partitions", 3),
        http_port=kw.pop("http_port", 0),
        operator_token_sha256=kw.pop("operator_token_sha256", OPERATOR_SHA256),
        operator_tokens_sha256=kw.pop(
            "operator_tokens_sha256",
            f"{NAMED_OPERATOR}={hashlib.sha256(NAMED_OPERATOR_TOKEN.encode()).hexdigest()}",
        ),
        **kw,
    )


@contextlib.asynccontextmanager
async def running(
    settings: HubSettings, clock: Callable[[], datetime] | None = None, *, keep_topics: bool = False
) -> AsyncIterator[RunningHub]:
    hub = await start_hub(settings, clock=clock) if clock else await start_hub(settings)
    try:
        await hub.wait_assigned(TIMEOUT)
        yield hub
        await hub.relay.publish_pending()
        check_audit(hub)
    finally:
        await hub.stop()
        if not keep_topics:
            with contextlib.suppress(Exception):
                names = [s for s in await _topics_with_prefix(settings)]
                await delete_topics(settings.kafka_bootstrap_servers or "", names)


_AUDITED_TYPES = {
    b"nl.schakel.referral-released.v1": {"release", "registration"},
    b"nl.schakel.referral-updated.v1": {"update", "release"},
    b"nl.schakel.referral-revoked.v1": {"revoke-notice"},
    b"nl.schakel.feedback-forwarded.v1": {"feedback-forwarded"},
    b"nl.schakel.contact-overdue.v1": {"overdue-notice"},
}


def check_audit(hub: RunningHub) -> None:
    """After every integration test: every disclosure left an AuditEvent, every AuditEvent
    validates with fhir.resources R4B, and the chain verifies."""
    from fhir.resources.R4B.auditevent import AuditEvent

    from adapters.storage import tables as t
    from services.audit_reports import verify_store

    entries = hub.hub.store.audit_entries()
    for entry in entries:
        AuditEvent.model_validate(orjson.loads(entry.canonical))
    verdict = verify_store(hub.hub.store, participants=hub.hub.participants).verdict
    assert verdict.ok, verdict
    audited = {(e.action, e.referral_id, e.recipient) for e in entries}
    recipient_of = {}
    for p in hub.hub.participants:
        topic = {
            "welfare": hub.hub.topics.welfare_referrals(p.id),
            "municipality": hub.hub.topics.wmo_registrations(p.cbs_code or ""),
            "gp-practice": hub.hub.topics.his_feedback(p.id),
        }[p.kind]
        recipient_of[topic] = p.id
    with hub.hub.store.engine.connect() as conn:
        rows = conn.execute(t.outbox.select()).all()
    for row in rows:
        headers = dict((k, v) for k, v in orjson.loads(row.headers))
        ce = headers.get("ce_type")
        if ce is None:
            continue
        import base64

        ce_type = base64.b64decode(ce)
        if ce_type not in _AUDITED_TYPES:
            continue
        referral = row.key.decode()
        recipient = recipient_of[row.topic]
        assert any((a, referral, recipient) in audited for a in _AUDITED_TYPES[ce_type]), (
            f"no audit entry for {ce_type!r} of {referral} to {recipient}"
        )


class FakeClock:
    """The hub's clock, moved by the test: deadlines without waiting for them."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


async def _topics_with_prefix(settings: HubSettings) -> list[str]:
    from adapters.broker.admin import _admin

    admin = _admin(settings.kafka_bootstrap_servers or "", 10_000)
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
    finally:
        await admin.close()


async def send(
    bootstrap: str,
    topic: str,
    value: bytes | None,
    key: str | bytes | None,
    *,
    logical: str,
    headers: tuple[tuple[str, bytes | None], ...] | None = None,
    traceparent: str | None = None,
) -> None:
    async with Sender(bootstrap) as sender:
        await sender.send(
            topic,
            value,
            key=key.encode() if isinstance(key, str) else key,
            headers=headers
            if headers is not None
            else inbound_headers(logical, traceparent=traceparent),
        )


async def next_event(
    queue: asyncio.Queue[HubEvent], kind: type[E], timeout: float = TIMEOUT, **match: Any
) -> E:
    return await Observers.next(queue, kind, timeout, **match)


async def gather_events(
    queue: asyncio.Queue[HubEvent], done: Callable[[list[HubEvent]], bool], timeout: float = TIMEOUT
) -> list[HubEvent]:
    """Every event until `done(seen)` holds: for outcomes whose order is not fixed."""
    seen: list[HubEvent] = []

    async def wait() -> list[HubEvent]:
        while not done(seen):
            seen.append(await queue.get())
        return seen

    return await asyncio.wait_for(wait(), timeout)


async def send_referral(hub: RunningHub, referral_id: str, **bundle: Any) -> None:
    await send(
        hub.bootstrap,
        hub.hub.topics.referral_created,
        to_bytes(referral_bundle(referral_id, **bundle)),
        referral_id,
        logical=names.REFERRAL_CREATED,
    )


async def send_feedback(
    hub: RunningHub,
    referral_id: str,
    status: str,
    *,
    organisation: str = "welzijn-hoogeveen",
    occurred_at: str = "2026-12-02T10:00:00+01:00",
    summary: str = "Contact gehad.",
) -> None:
    body = {
        "referral_id": referral_id,
        "organisation": organisation,
        "status": status,
        "occurred_at": occurred_at,
        "summary": summary,
    }
    await send(
        hub.bootstrap,
        hub.hub.topics.feedback_returned,
        orjson.dumps(body),
        referral_id,
        logical=names.FEEDBACK_RETURNED,
    )


async def send_consent(
    hub: RunningHub,
    consent_id: str,
    referral_id: str | None,
    *,
    traceparent: str | None = None,
    withdraw: bool = False,
    **consent: Any,
) -> None:
    """A grant on consent-granted, or with `withdraw` the same Consent, inactive, on
    consent-withdrawn."""
    if withdraw:
        consent.setdefault("status", "inactive")
    topics = hub.hub.topics
    await send(
        hub.bootstrap,
        topics.consent_withdrawn if withdraw else topics.consent_granted,
        to_bytes(consent_resource(consent_id, referral_id=referral_id, **consent)),
        referral_id or consent_id,
        logical=names.CONSENT_WITHDRAWN if withdraw else names.CONSENT_GRANTED,
        traceparent=traceparent,
    )


class TopicReader:
    """Reads a topic from the beginning, as a recipient would (no group)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        self.partitions: list[TopicPartition] = []

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        parts = self.consumer.partitions_for_topic(self.topic) or set()
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def read(self, count: int, timeout: float = TIMEOUT) -> list[ConsumerRecord[Any, Any]]:
        got: list[ConsumerRecord[Any, Any]] = []

        async def loop() -> None:
            while len(got) < count:
                batch = await self.consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    got.extend(r for r in records if not any(k == FENCE for k, _ in r.headers))

        await asyncio.wait_for(loop(), timeout)
        return got

    async def total(self) -> int:
        return len(await self.everything())

    async def everything(self, timeout: float = TIMEOUT) -> list[ConsumerRecord[Any, Any]]:
        """Every record on the topic now. A fence record is written to each partition and
        the topic read from the start up to the fences: what is before a fence was written
        before it. (The embedded broker's ListOffsets undercounts when the last batch holds
        several records, so end offsets cannot be used for this.)"""
        fence = uuid.uuid4().hex.encode()
        async with Sender(self.bootstrap) as sender:
            for tp in self.partitions:
                await sender.producer.send_and_wait(
                    self.topic, b"", partition=tp.partition, headers=[(FENCE, fence)]
                )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        await consumer.start()
        records: list[ConsumerRecord[Any, Any]] = []
        try:
            consumer.assign(self.partitions)
            await consumer.seek_to_beginning(*self.partitions)
            fenced: set[int] = set()

            async def loop() -> None:
                while len(fenced) < len(self.partitions):
                    for tp, batch in (await consumer.getmany(timeout_ms=200)).items():
                        for record in batch:
                            if tp.partition in fenced:
                                continue
                            if dict(record.headers).get(FENCE) == fence:
                                fenced.add(tp.partition)
                            elif not any(k == FENCE for k, _ in record.headers):
                                records.append(record)

            await asyncio.wait_for(loop(), timeout)
        finally:
            await consumer.stop()
        return records


async def until(
    condition: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition"
) -> None:
    """Polls a state the test cannot be notified of (another process's store). Bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


SCHAKEL_RUN = [sys.executable, "-m", "services.cli", "run"]
PROCESS_TIMEOUT = 30.0
ROOT = Path(__file__).resolve().parents[2]


def process_env(bootstrap: str, database_url: str, prefix: str) -> dict[str, str]:
    """Environment for a `schakel run` process on an external broker, with small batches
    (many commits, so a kill or SIGTERM finds work in hand) and no HTTP server."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SCHAKEL_DATABASE_URL": database_url,
        "SCHAKEL_TOPIC_PREFIX": prefix,
        "SCHAKEL_PARTICIPANTS": str(DEMO_PARTICIPANTS),
        "SCHAKEL_TOPIC_PARTITIONS": "3",
        "SCHAKEL_LOG_FORMAT": "json",
        "SCHAKEL_HTTP_ENABLED": "false",
        "SCHAKEL_INTAKE_MAX_RECORDS": "20",
        "SCHAKEL_CONSENT_MAX_RECORDS": "20",
        "SCHAKEL_FEEDBACK_MAX_RECORDS": "20",
    }


class HubProcess:
    """`schakel run` as a child process. Its output is drained all the time (into its log
    file and an in-memory list), so a chatty hub never blocks on a full pipe."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log_path = env, log
        log.write_bytes(b"")
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self._new_line = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *SCHAKEL_RUN,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=ROOT,
        )
        self._reader = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.log_path.open("ab") as log:
            while raw := await self.proc.stdout.readline():
                log.write(raw)
                log.flush()
                try:
                    self.lines.append(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    continue
                self._new_line.set()
        self._new_line.set()

    async def wait_for(self, **fields: Any) -> dict[str, Any]:
        """Until a JSON log line of the process has all `fields`."""

        async def wait() -> dict[str, Any]:
            checked = 0
            while True:
                for line in self.lines[checked:]:
                    if all(line.get(k) == v for k, v in fields.items()):
                        return line
                checked = len(self.lines)
                if self._reader is not None and self._reader.done():
                    raise AssertionError(
                        f"hub exited ({self.proc.returncode if self.proc else None}); log in {self.log_path}"
                    )
                self._new_line.clear()
                await self._new_line.wait()

        return await asyncio.wait_for(wait(), PROCESS_TIMEOUT)

    async def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), PROCESS_TIMEOUT)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, PROCESS_TIMEOUT)

    async def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), PROCESS_TIMEOUT)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, PROCESS_TIMEOUT)
        return self.proc.returncode or 0


def revoked_count(store: Any) -> int:
    """Releases whose consent was withdrawn (each gets a revoke notice)."""
    from sqlalchemy import func, select

    from adapters.storage import tables as t

    with store.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(t.releases.c.revoked_at.is_not(None))
            ).scalar_one()
        )


async def produce(sender: Sender, prefix: str, logical: str, value: bytes, key: str) -> None:
    """One inbound message as a GP system or welfare organisation writes it (CloudEvents
    headers, a fresh trace), produced without waiting for the acknowledgement."""
    await sender.producer.send(
        prefix + logical, value, key=key.encode(), headers=list(inbound_headers(logical))
    )


async def send_referrals_with_consent(
    sender: Sender, prefix: str, series: str, numbers: range
) -> list[str]:
    """Referral `VERW-<series>-NNNN` and its consent `c-<series>-N` for each number (BSN
    `fictional_bsn(N)`), produced without waiting, then flushed; returns the referral ids."""
    ids = []
    for i in numbers:
        rid = f"VERW-{series}-{i:04d}"
        ids.append(rid)
        bsn = fictional_bsn(i)
        await produce(
            sender, prefix, names.REFERRAL_CREATED, to_bytes(referral_bundle(rid, bsn=bsn)), rid
        )
        consent = consent_resource(f"c-{series}-{i}", referral_id=rid, bsn=bsn)
        await produce(sender, prefix, names.CONSENT_GRANTED, to_bytes(consent), rid)
    await sender.producer.flush()
    return ids


async def relay_topic_and_store(bootstrap: str, folder: Path) -> tuple[str, Store]:
    """For the outbox relay's tests: a fresh welfare topic of 3 partitions and a migrated
    SQLite store in `folder`."""
    topic = f"t{uuid.uuid4().hex[:10]}.welfare.x.referrals"
    await ensure_topics(bootstrap, [TopicSpec(topic, 3)])
    store = Store(f"sqlite:///{folder / 'outbox.db'}")
    store.migrate()
    return topic, store
