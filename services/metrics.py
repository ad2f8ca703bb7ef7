"""Prometheus metrics of one hub (issue #10), served as text on `GET /metrics`.

Each `Hub` has its own `CollectorRegistry` (never the process-wide default), so several
hubs in one process (the tests, a replay) keep separate counts. Labels hold only bounded,
non-personal values: recipient kinds, logical topic names, dead-letter reasons, feedback
statuses, group ids. Never a referral id, a registration id or a BSN.

Counters count what committed: an event is counted after the store transaction that
decided it (and wrote its outbound message to the outbox) committed. Gauges that describe
the store or the broker (overdue registrations, pending outbox rows, consumer lag) are
measured when `/metrics` is scraped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from adapters.broker.lag import consumer_lag
from adapters.logging import get_logger
from adapters.storage.views import Views
from schemas.registration import (
    ContactOverdue,
    FeedbackForwarded,
    HubEvent,
    MessageDeadLettered,
    ReferralReceived,
    ReferralReleased,
    ReferralRevoked,
    ReferralUpdated,
)
from schemas.topics import Topics

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
LAG_TIMEOUT_SECONDS = 5.0
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

log = get_logger("schakel.metrics")


class HubMetrics:
    def __init__(self, *, wall_clock: Callable[[], float] = time.time) -> None:
        """`wall_clock`: seconds since the epoch, as the broker's record timestamps are."""
        self._wall_clock = wall_clock
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.lag_source: tuple[str, list[tuple[str, str]]] | None = None
        """(bootstrap, [(topic, group)]): set by the composition root when consumers run."""
        self._scrape = asyncio.Lock()

        self.referrals_received = Counter(
            "schakel_referrals_received",
            "Referrals taken in (re-deliveries with nothing new not counted).",
            registry=r,
        )
        self.releases = Counter(
            "schakel_releases",
            "Referrals released to a recipient, written to the outbox in the deciding "
            "transaction; recipient_kind municipality is the municipal registration.",
            ["recipient_kind"],
            registry=r,
        )
        self.updates = Counter(
            "schakel_updates",
            "referral-updated messages to recipients that already had the registration.",
            ["recipient_kind"],
            registry=r,
        )
        self.revoke_notices = Counter(
            "schakel_revoke_notices",
            "referral-revoked notices after a withdrawal or objection.",
            ["recipient_kind"],
            registry=r,
        )
        self.feedback_forwarded = Counter(
            "schakel_feedback_forwarded",
            "Welfare feedback forwarded to the GP's system, by feedback status.",
            ["status"],
            registry=r,
        )
        self.overdue_notices = Counter(
            "schakel_overdue_notices",
            "Contact terms that passed without contact (GP notice + organisation reminder).",
            registry=r,
        )
        self.dead_letters = Counter(
            "schakel_dead_letters",
            "Inbound messages dead-lettered, by reason and logical origin topic.",
            ["reason", "topic"],
            registry=r,
        )
        self.outbox_refused = Counter(
            "schakel_outbox_refused_too_large",
            "Outbound messages the broker refused as too large, not sent (`schakel outbox "
            "refused` lists those still unsent, `schakel outbox requeue --refused` sends them).",
            registry=r,
        )
        self.records = Counter(
            "schakel_records_processed",
            "Inbound records applied (including dead-lettered ones), by logical topic.",
            ["topic"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "schakel_handler_batch_seconds",
            "Time to handle one store transaction of a polled batch (parse, validate, apply).",
            ["topic"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.record_seconds = Histogram(
            "schakel_record_latency_seconds",
            "Per record: from its broker timestamp to the commit of the transaction that "
            "applied it (waiting in the topic included).",
            ["topic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overdue = Gauge(
            "schakel_overdue_registrations",
            "Open registrations past their contact term without contact (measured at scrape).",
            registry=r,
        )
        self.outbox_pending = Gauge(
            "schakel_outbox_pending",
            "Outbox rows not yet published (measured at scrape).",
            registry=r,
        )
        self.outbox_refused_unsent = Gauge(
            "schakel_outbox_refused_unsent",
            "Outbox rows the broker refused as too large and nobody has queued again since "
            "(measured at scrape; also after a restart, unlike the counter).",
            registry=r,
        )
        self.lag = Gauge(
            "schakel_consumer_lag",
            "Records not yet committed by the hub's consumer group, summed over the topic's "
            "partitions, each clamped at 0 (the embedded broker's end offsets can undercount).",
            ["topic", "group"],
            registry=r,
        )
        self.lag_ok = Gauge(
            "schakel_consumer_lag_check_success",
            "1 when the last scrape could read offsets from the broker, else 0 (and no lag).",
            registry=r,
        )

    # --- counted where things happen -------------------------------------------------
    def count(self, events: Iterable[HubEvent], topics: Topics) -> None:
        """Events of a transaction that committed."""
        for event in events:
            if isinstance(event, ReferralReceived):
                self.referrals_received.inc()
            elif isinstance(event, ReferralReleased):
                self.releases.labels(event.recipient_kind).inc()
            elif isinstance(event, ReferralUpdated):
                self.updates.labels(event.recipient_kind).inc()
            elif isinstance(event, ReferralRevoked):
                self.revoke_notices.labels(event.recipient_kind).inc()
            elif isinstance(event, FeedbackForwarded):
                self.feedback_forwarded.labels(event.status).inc()
            elif isinstance(event, ContactOverdue):
                self.overdue_notices.inc()
            elif isinstance(event, MessageDeadLettered):
                self.dead_letters.labels(event.reason, topics.logical(event.topic)).inc()

    def observe_batch(
        self, topic: str, seconds: float, timestamps_ms: Sequence[int | None]
    ) -> None:
        """One transaction of a consumer's records (`topic` is the logical name), just after
        its commit."""
        self.batch_seconds.labels(topic).observe(seconds)
        self.records.labels(topic).inc(len(timestamps_ms))
        now_ms = self._wall_clock() * 1000
        latency = self.record_seconds.labels(topic)
        for ts in timestamps_ms:
            if ts is not None and ts > 0:
                latency.observe(max(0.0, (now_ms - ts) / 1000))

    # --- measured when scraped ---------------------------------------------------------
    async def render(self, views: Views) -> bytes:
        """Refresh the gauges, then the text exposition format (`CONTENT_TYPE`)."""
        async with self._scrape:
            counts = await asyncio.to_thread(views.operations_counts)
            self.overdue.set(counts["overdue_registrations"])
            self.outbox_pending.set(counts["outbox_pending"])
            self.outbox_refused_unsent.set(counts["outbox_refused"])
            await self._refresh_lag()
            return generate_latest(self.registry)

    async def _refresh_lag(self) -> None:
        if self.lag_source is None:
            return
        bootstrap, subscriptions = self.lag_source
        try:
            measured = await consumer_lag(bootstrap, subscriptions, LAG_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - the scrape still answers, without lag
            log.warning("consumer lag not measured", error=type(exc).__name__)
            self.lag.clear()
            self.lag_ok.set(0)
            return
        self.lag.clear()
        for item in measured:
            self.lag.labels(item.topic, item.group).set(item.lag)
        self.lag_ok.set(1)


def subscriptions(broker: object) -> list[tuple[str, str]]:
    """(topic, group id) of every subscriber of a FastStream KafkaBroker."""
    return [
        (topic, sub.group_id)
        for sub in getattr(broker, "subscribers", ())
        if getattr(sub, "group_id", None)
        for topic in sub.topic_names_for_subscribe
    ]
