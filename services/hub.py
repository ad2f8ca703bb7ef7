"""The composition root: the one place that picks concrete adapters, creates topics,
and wires the services' FastStream routers into one broker (CONTRACT §8 `schakel run`).

Start-up order matters on the embedded broker, which auto-creates any topic a client so
much as asks about: broker up, then every topic created explicitly, then clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from adapters.broker.admin import (
    BrokerError,
    ClusterInfo,
    TopicReport,
    TopicSpec,
    cluster_info,
    ensure_topics,
)
from adapters.broker.client import Sender
from adapters.broker.consumer import AssignmentTracker, ConsumerTuning
from adapters.broker.embedded import EmbeddedBroker
from adapters.broker.outbox import OutboxRelay, largest_outbound, relay_producer
from adapters.broker.watch import BrokerWatch
from adapters.logging import adopt_library_loggers, get_logger
from adapters.participants import load_participants
from adapters.storage.store import BrokerLoss, Store
from adapters.storage.views import Views
from schemas import topics as topic_names
from schemas.errors import ConfigurationError
from schemas.messages import Headers
from schemas.participants import Participants
from schemas.topics import Topics
from services import collector
from services.api.app import HttpServer, create_app
from services.api.auth import Authenticator
from services.api.context import ApiContext
from services.consent.app import create_router as consent_router
from services.feedback.app import create_router as feedback_router
from services.intake.app import create_router as intake_router
from services.metrics import subscriptions
from services.outputs import disclosure_topics
from services.runtime import Hub, utc_now
from services.settings import DEMO_PARTICIPANTS, HubSettings
from services.timers.handlers import Ticker
from services.timers.settings import TimerSettings

log = get_logger("schakel.hub")


def topic_specs(
    settings: HubSettings, participants: Participants, topics: Topics
) -> list[TopicSpec]:
    """Every fixed topic, and each participant's outbound topics (CONTRACT §2)."""
    names = [topics.name(t) for t in topic_names.FIXED_TOPICS]
    for p in participants:
        if p.kind == "welfare":
            names.append(topics.welfare_referrals(p.id))
        elif p.kind == "gp-practice":
            names.append(topics.his_feedback(p.id))
        elif p.kind == "municipality" and p.cbs_code:
            names.append(topics.wmo_registrations(p.cbs_code))
    # A dead letter is an inbound record with headers added: its topic must take more than
    # the broker's default (Apache Kafka: about 1 MB) for an inbound record near that size.
    # The audit topic anchors the audit chain (`schakel audit verify`): kept for good.
    configs = {
        topics.dead_letter: (("max.message.bytes", largest_outbound(settings.max_message_bytes)),),
        topics.audit: (("retention.ms", -1),),
    }
    specs = [
        TopicSpec(n, settings.topic_partitions, settings.replication_factor, configs.get(n, ()))
        for n in names
    ]
    return [*specs, TopicSpec(topics.hub_epoch, 1, settings.replication_factor)]


def load_configured_participants(settings: HubSettings) -> Participants:
    if settings.participants is None:
        log.warning(
            "SCHAKEL_PARTICIPANTS is not set: using the demo participants file",
            path=str(DEMO_PARTICIPANTS),
        )
        participants = load_participants(DEMO_PARTICIPANTS)
    else:
        participants = load_participants(settings.participants)
    _tokens_distinct(settings, participants)
    return participants


def _tokens_distinct(settings: HubSettings, participants: Participants) -> None:
    """Every bearer token names one viewer: an operator's token that is also a
    participant's, or another operator's, would be taken for either of them."""
    owners = {p.api_token_sha256: f"participant {p.id}" for p in participants if p.api_token_sha256}
    shared = settings.operator_token_sha256
    if shared is not None:
        digest = shared.get_secret_value().strip().lower()
        if digest in owners:
            raise ConfigurationError(
                f"SCHAKEL_OPERATOR_TOKEN_SHA256: the same token as {owners[digest]}'s"
            )
        owners[digest] = "the shared operator token"
    for person, digest in settings.operator_digests.items():
        if digest in owners:
            raise ConfigurationError(
                f"SCHAKEL_OPERATOR_TOKENS_SHA256: {person}'s token is the same as {owners[digest]}'s"
            )
        owners[digest] = f"operator {person}"


@dataclass
class RunningHub:
    hub: Hub
    bootstrap: str
    cluster: ClusterInfo
    topic_report: TopicReport
    broker: KafkaBroker
    relay: OutboxRelay
    trackers: list[AssignmentTracker]
    ticker: Ticker
    tuning: ConsumerTuning
    specs: list[TopicSpec]
    embedded: EmbeddedBroker | None = None
    http: HttpServer | None = None
    sender: Sender | None = None
    watch: BrokerWatch | None = None
    losses: list[BrokerLoss] = field(default_factory=list)
    """What each recovery from a broker's loss found (also logged)."""
    _stopped: bool = field(default=False, repr=False)

    @property
    def http_url(self) -> str | None:
        return self.http.url if self.http is not None else None

    async def wait_assigned(self, timeout: float = 30.0) -> None:
        """Until every consumer has its first partition assignment."""
        await asyncio.wait_for(asyncio.gather(*(t.assigned.wait() for t in self.trackers)), timeout)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        began = asyncio.get_running_loop().time()
        if self.watch is not None:
            await self.watch.stop()
        if self.http is not None:
            await self.http.stop()
        await self.ticker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.broker.stop(), 15)
        if self.sender is not None:
            with contextlib.suppress(Exception):
                await self.sender.__aexit__(None, None, None)
        await self.relay.stop()
        self.hub.store.dispose()
        if self.embedded is not None:
            self.embedded.stop()
        collector.restore()
        log.info("hub stopped", stop_seconds=round(asyncio.get_running_loop().time() - began, 2))

    async def recover_from_broker_loss(self, last_good: datetime) -> None:
        """The broker lost every topic, record and offset (see adapters/broker/watch.py):
        stop the consumers, create the topics again, hand the outbox what may not have
        reached the old broker, say what cannot be recovered, and rejoin."""
        async with self.relay.paused():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.broker.stop(), 15)
            report = await ensure_topics(self.bootstrap, self.specs)
            _warn_topic_report(
                report,
                "topic came back with another partition count (a client re-created it "
                "before the hub did); keeping it",
            )
            loss = await asyncio.to_thread(
                self.hub.store.broker_lost, last_good, disclosure_topics(self.hub)
            )
            self.losses.append(loss)
            for lost in loss.lost:
                log.error(
                    "lost with the broker: messages the hub had published are no longer on "
                    "it; recipients that had not read them yet have not got them. "
                    "`schakel outbox requeue --since FIRST_PUBLISHED --topic TOPIC` sends "
                    "them again (same ce_id)",
                    topic=lost.topic,
                    messages=lost.messages,
                    first_published=lost.first_published.isoformat(),
                    last_published=lost.last_published.isoformat(),
                )
            if loss.withheld:
                log.warning(
                    "published after the broker was last seen intact, not sent again: "
                    "releases and updates whose consent was withdrawn since",
                    messages=loss.withheld,
                )
            for topic, count in sorted(loss.requeued.items()):
                log.warning(
                    "published after the broker was last seen intact: sent again unless the "
                    "new broker holds it",
                    topic=topic,
                    messages=count,
                )
            log.error(
                "records on the inbound topics that the hub had not read yet are gone with "
                "the broker and cannot be known to the hub; their senders must send them "
                "again (what the hub already has is recognised and changes nothing)"
            )
            await self.relay.replace_producer(
                relay_producer(self.bootstrap, self.hub.settings.max_message_bytes)
            )
            if self.sender is not None:  # the FHIR facade's producer
                await self.sender.renew()
            self.broker, self.trackers = _consumers(self.hub, self.bootstrap, self.tuning)
            await _start_concurrently(self.broker)
        await self.wait_assigned()
        log.warning(
            "recovered from the broker's loss: topics re-created, consumers joined",
            topics_created=len(report.created),
            lost_messages=sum(lost.messages for lost in loss.lost),
            resent_messages=sum(loss.requeued.values()),
        )


async def _start_concurrently(broker: KafkaBroker) -> None:
    """`KafkaBroker.start()` starts subscribers one after another, and each consumer waits
    for its group join (about a second on the embedded broker): start them together."""
    await broker.connect()
    await asyncio.gather(*(sub.start() for sub in broker.subscribers))
    broker.running = True


async def start_hub(
    settings: HubSettings,
    *,
    participants: Participants | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> RunningHub:
    """Start everything; raises `ConfigurationError` or `BrokerError` with a clear message."""
    adopt_library_loggers()  # FastStream, imported with this module, has a handler again
    participants = participants or load_configured_participants(settings)
    embedded: EmbeddedBroker | None = None
    cleanup: list[Callable[[], Awaitable[object]]] = []
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        embedded = EmbeddedBroker(
            port=settings.embedded_broker_port, log_dir=settings.embedded_broker_log_dir
        )
        bootstrap = await asyncio.to_thread(embedded.start)
        log.info(
            "embedded broker started",
            bootstrap=bootstrap,
            pid=embedded.proc.pid if embedded.proc else None,
            broker_log=str(embedded.log_path),
        )
    try:
        cluster = await cluster_info(bootstrap)
        topics = Topics(settings.topic_prefix)
        specs = topic_specs(settings, participants, topics)
        report = await ensure_topics(bootstrap, specs)
        _warn_topic_report(report, "topic has another partition count than configured; keeping it")
        log.info(
            "topics ready",
            created=len(report.created),
            existing=len(report.existing),
            prefix=settings.topic_prefix,
        )

        store = Store(settings.database_url)
        await asyncio.to_thread(store.migrate)
        refused = await asyncio.to_thread(store.refused_count)
        if refused:
            log.warning(
                "outbound messages the broker refused as too large are still unsent: "
                "`schakel outbox refused` lists them, `schakel outbox requeue --refused` "
                "sends them once their topics take them",
                messages=refused,
            )
        hub = Hub(
            settings=settings, participants=participants, store=store, topics=topics, clock=clock
        )
        relay = OutboxRelay(
            store,
            relay_producer(bootstrap, settings.max_message_bytes),
            bootstrap=bootstrap,
            on_refused=lambda _row: hub.metrics.outbox_refused.inc(),
        )
        hub.relay = relay

        tuning = ConsumerTuning.choose(
            embedded=cluster.is_embedded,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            max_message_bytes=settings.max_message_bytes,
        )
        broker, trackers = _consumers(hub, bootstrap, tuning)
        await relay.start()
        cleanup.append(relay.stop)
        cleanup.append(broker.stop)
        await _start_concurrently(broker)
        watch = BrokerWatch(
            bootstrap,
            topics.hub_epoch,
            interval_seconds=settings.broker_watch_seconds,
            embedded=embedded,
        )
        await watch.mark()
        ticker = Ticker(hub, TimerSettings().interval_seconds)
        ticker.start()
        cleanup.append(ticker.stop)
        http = sender = None
        if settings.http_enabled:
            sender = await Sender(bootstrap).__aenter__()
            cleanup.append(lambda: sender.__aexit__(None, None, None))  # type: ignore[union-attr]
            http = HttpServer(
                create_app(_api_context(hub, bootstrap, sender)),
                settings.http_host,
                settings.http_port,
            )
            await http.start()
            log.info("http api and console listening", url=http.url)
    except BaseException:
        # Undo what started, in reverse order, then report the original failure.
        for undo in cleanup[::-1]:
            with contextlib.suppress(Exception):
                await undo()
        if embedded is not None:
            embedded.stop()
        raise
    collector.tune()  # until stop()
    log.info(
        "hub started",
        bootstrap=bootstrap,
        database=store.dialect,
        participants=len(participants.by_id),
        embedded=embedded is not None,
    )
    running = RunningHub(
        hub,
        bootstrap,
        cluster,
        report,
        broker,
        relay,
        trackers,
        ticker,
        tuning,
        specs,
        embedded,
        http,
        sender,
        watch,
    )
    watch.on_lost = running.recover_from_broker_loss
    watch.start()
    return running


def _warn_topic_report(report: TopicReport, message: str) -> None:
    """What `ensure_topics` found kept as it was: partition counts (`message` says why) and
    configs below what the hub needs."""
    for name, wanted, actual in report.partition_mismatch:
        log.warning(message, topic=name, wanted=wanted, actual=actual)
    for name, key, wanted, actual in report.config_too_low:
        log.warning(
            "topic config lower than the hub needs (dead-letter: room for a dead letter of "
            "an inbound record near its size; audit: kept for good, -1); raise it with "
            "kafka-configs --alter",
            topic=name,
            config=key,
            wanted=wanted,
            actual=actual,
        )


def _consumers(
    hub: Hub, bootstrap: str, tuning: ConsumerTuning
) -> tuple[KafkaBroker, list[AssignmentTracker]]:
    """The FastStream broker with every service's subscribers (not started)."""
    trackers = [
        AssignmentTracker(n) for n in ("intake", "consent-granted", "consent-withdrawn", "feedback")
    ]
    broker = KafkaBroker(
        bootstrap,
        client_id="schakel-hub",
        logger=logging.getLogger("schakel.faststream"),
        log_level=logging.DEBUG,
        apply_types=False,  # handlers take the raw records (`raw_records`); no injection
    )
    broker.include_router(intake_router(hub, tuning, trackers[0]))
    broker.include_router(consent_router(hub, tuning, trackers[1], trackers[2]))
    broker.include_router(feedback_router(hub, tuning, trackers[3]))
    hub.metrics.lag_source = (bootstrap, subscriptions(broker))
    return broker, trackers


def _api_context(hub: Hub, bootstrap: str, sender: Sender) -> ApiContext:
    settings = hub.settings
    operator = (
        settings.operator_token_sha256.get_secret_value()
        if settings.operator_token_sha256
        else None
    )
    secret = settings.session_secret.get_secret_value() if settings.session_secret else None
    checked: dict[str, object] = {"at": 0.0, "state": {}}

    async def publish(topic: str, value: bytes, key: bytes, headers: Headers) -> None:
        """Hand a FHIR facade submission to the broker; `BrokerError` when it did not take
        it (the caller is told to send it again)."""
        try:
            await sender.send(topic, value, key=key, headers=headers)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerError(type(exc).__name__) from exc

    async def ready() -> dict[str, str]:
        loop = asyncio.get_running_loop()
        if loop.time() - float(checked["at"]) < 2.0:  # type: ignore[arg-type]
            return dict(checked["state"])  # type: ignore[call-overload]
        state = {"store": "ok", "broker": "ok"}
        try:
            await asyncio.to_thread(hub.store.ping)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            state["store"] = type(exc).__name__
        try:
            await cluster_info(bootstrap, timeout_ms=2_000)
        except Exception as exc:  # noqa: BLE001
            state["broker"] = type(exc).__name__
        checked.update(at=loop.time(), state=state)
        return state

    return ApiContext(
        hub=hub,
        views=Views(hub.store),
        auth=Authenticator(hub.participants, operator, secret, settings.operator_digests),
        publish=publish,
        ready=ready,
    )
