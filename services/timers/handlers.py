"""`on_tick`: releases what consents whose period has begun now cover, and revokes what
consents whose period has ended covered where nothing else covers it now. Durable by
construction: the work left to do is in the store (consents not yet marked started or
ended), so a hub that was down across a start or an end catches up on its first tick.
Each tick also ends what is kept past its time: personal data of closed registrations
past their retention, and the outbox's copies of messages published more than
`SCHAKEL_OUTBOX_KEEP_DAYS` ago."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.exc import DBAPIError

from adapters.logging import get_logger
from adapters.storage.store import Tx
from schemas.consent import Consent
from schemas.errors import SchakelError
from schemas.registration import HubEvent
from services.domain import gate
from services.domain.gate import GatePolicy, GateResult
from services.outputs import gate_policy, outputs_to_outbox
from services.pipeline import log_event
from services.runtime import Hub

log = get_logger("schakel.timers")


def tick(hub: Hub) -> list[HubEvent]:
    """One tick, in one transaction (blocking; run it in a worker thread)."""
    policy = gate_policy(hub)

    def work(tx: Tx) -> list[HubEvent]:
        events = tick_in(hub, tx, hub.clock(), policy)
        pruned = tx.prune_outbox(
            timedelta(days=hub.settings.outbox_keep_days), hub.topics.dead_letter
        )
        if pruned:
            log.info("published messages past their keep time deleted from the outbox", rows=pruned)
        return events

    return hub.store.run(work)


def tick_in(hub: Hub, tx: Tx, now: datetime, policy: GatePolicy) -> list[HubEvent]:
    """What the timer decides at `now`, in the transaction `tx` (the replay runs it between
    records): consents whose period began, then those whose period ended (a renewal that
    begins as its predecessor ends keeps what it covers), contact terms passed, retentions
    ended."""
    events = _each_consent(
        hub,
        tx,
        tx.consents_starting(now),
        lambda consent: gate.on_consent_start(tx, consent, now, policy),
        tx.mark_started,
        "a consent whose period began could not be applied; it is left out",
    )
    events += _each_consent(
        hub,
        tx,
        tx.consents_ending(now),
        lambda consent: gate.on_consent_end(tx, consent, now, policy),
        tx.mark_ended,
        "a consent whose period ended could not be applied; it is left out",
    )
    result = gate.on_contact_due(tx, now, policy)
    outputs_to_outbox(hub, tx, result, None)
    events.extend(result.events)
    purged = tx.purge_expired(now)
    if purged:
        log.info(
            "retention ended: personal data of closed registrations deleted",
            registrations=purged,
        )
    return events


def _each_consent(
    hub: Hub,
    tx: Tx,
    consents: list[Consent],
    apply: Callable[[Consent], GateResult],
    mark: Callable[[str], None],
    failed: str,
) -> list[HubEvent]:
    """`apply` to each consent on its own: one whose outputs cannot be made must not stop
    the rest, or every later tick (the overdue notices, the retention, other patients'
    starts and ends). That one is marked done (not tried again: as a dead letter) and
    logged with `failed`."""
    events: list[HubEvent] = []
    for consent in consents:
        try:
            with tx.savepoint():
                result = apply(consent)
                outputs_to_outbox(hub, tx, result, None)
        except DBAPIError:
            raise  # the store's trouble: the whole tick is tried again
        except Exception as exc:  # noqa: BLE001 - bad data or a bug, in this one only
            mark(consent.consent_id)
            log.error(
                failed,
                consent_id=consent.consent_id,
                reason=exc.reason if isinstance(exc, SchakelError) else "internal-error",
                error=type(exc).__name__,
            )
            continue
        events.extend(result.events)
    return events


class Ticker:
    def __init__(self, hub: Hub, interval_seconds: float) -> None:
        self.hub = hub
        self.interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def tick_now(self) -> list[HubEvent]:
        events = await asyncio.to_thread(tick, self.hub)
        if events:
            self.hub.committed(events)
            for event in events:
                log_event("nl.schakel.tick.v1", event)
        return events

    async def _run(self) -> None:
        while True:
            try:
                await self.tick_now()
            except Exception:  # noqa: BLE001 - the next tick retries; say so
                log.exception("timer tick failed; retrying at the next tick")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="schakel-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
