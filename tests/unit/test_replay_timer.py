"""The replay runs the timer where the live hub did: between the records around each
moment something fell due, not once at the end. A live history is made with the real
pipelines and the real timer on SQLite; the replay is fed its records in the live
processing order (what the topic reader hands it, tested with a broker in
tests/integration/test_replay_and_dlq.py) and must rebuild the same state."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.participants import load_participants
from adapters.storage.store import Store
from schemas.messages import InboundRecord
from schemas.topics import Topics
from services import replay as replay_module
from services.consent.handlers import consent_pipeline
from services.demo.samples import consent_resource, referral_bundle
from services.feedback.handlers import feedback_pipeline
from services.intake.handlers import intake_pipeline
from services.runtime import Hub
from services.settings import DEMO_PARTICIPANTS, HubSettings
from services.timers.handlers import tick

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
REFERRAL = "VERW-RT-1"


class Live:
    def __init__(self, tmp_path: Path) -> None:
        store = Store(f"sqlite:///{tmp_path / 'live.db'}")
        store.migrate()
        self.tmp_path = tmp_path
        self.now = T0
        self.hub = Hub(
            settings=HubSettings(),
            participants=load_participants(DEMO_PARTICIPANTS),
            store=store,
            topics=Topics(""),
            clock=lambda: self.now,
        )
        self.pipelines = {
            "referral-created": intake_pipeline(self.hub),
            "consent-granted": consent_pipeline(self.hub),
            "feedback-returned": feedback_pipeline(self.hub),
        }
        self.offsets = count()
        self.records: dict[tuple[str, int, int], InboundRecord] = {}

    def send(self, at: datetime, topic: str, resource: Any) -> None:
        self.now = at
        record = InboundRecord(
            topic=topic,
            partition=0,
            offset=next(self.offsets),
            key=REFERRAL.encode(),
            value=orjson.dumps(resource),
            timestamp_ms=int(at.timestamp() * 1000),
        )
        self.records[(topic, 0, record.offset)] = record
        self.pipelines[topic].process([record])

    def tick(self, at: datetime) -> None:
        self.now = at
        tick(self.hub)

    def replay(
        self, monkeypatch: pytest.MonkeyPatch, span: replay_module.ReplayRange | None = None
    ) -> list[str]:
        async def read(_bootstrap, live, span, handle, _progress=None):  # type: ignore[no-untyped-def]
            counts = dict.fromkeys(span.topics, 0)
            for _seq, topic, partition, offset, _ts in live.store.processing_order():
                handle(topic, [self.records[(topic, partition, offset)]])
                counts[topic] += 1
            return counts, []

        monkeypatch.setattr(replay_module, "read_topics", read)
        into = Store(f"sqlite:///{self.tmp_path / 'rebuilt.db'}")
        result = asyncio.run(
            replay_module.replay(self.hub, "unused:9092", into, span or replay_module.ReplayRange())
        )
        into.dispose()
        return result.differences


def _feedback(status: str, at: datetime) -> dict[str, str]:
    return {
        "referral_id": REFERRAL,
        "organisation": "welzijn-hoogeveen",
        "status": status,
        "occurred_at": at.isoformat(),
        "summary": "Gesprek gehad.",
    }


def test_feedback_after_a_consent_began_is_applied_as_it_was_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = Live(tmp_path)
    live.send(T0, "referral-created", referral_bundle(REFERRAL))
    later = consent_resource("c-RT", referral_id=REFERRAL, period={"start": "2026-12-02"})
    live.send(T0 + timedelta(minutes=1), "consent-granted", later)
    live.tick(T0 + timedelta(days=1))  # the period began: released
    contacted = T0 + timedelta(days=2)
    live.send(contacted, "feedback-returned", _feedback("contacted", contacted))
    live.now = T0 + timedelta(days=3)
    assert live.replay(monkeypatch) == []


def test_not_reached_after_the_contact_term_is_applied_as_it_was_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = Live(tmp_path)
    live.send(T0, "referral-created", referral_bundle(REFERRAL))
    live.send(T0, "consent-granted", consent_resource("c-RT", referral_id=REFERRAL))
    live.tick(T0 + timedelta(days=15))  # the 14-day term passed: overdue
    late = T0 + timedelta(days=16)
    live.send(late, "feedback-returned", _feedback("not-reached", late))
    live.now = T0 + timedelta(days=17)
    assert live.replay(monkeypatch) == []


@pytest.mark.parametrize(
    ("span", "said"),
    [
        (replay_module.ReplayRange(), "from the start to the end"),
        (replay_module.ReplayRange(from_offset=7), "from offset 7 to the end"),
        (
            replay_module.ReplayRange(since=T0, until=T0 + timedelta(days=1)),
            f"since {T0.isoformat()} until {(T0 + timedelta(days=1)).isoformat()}",
        ),
    ],
)
def test_the_replays_audit_entry_says_which_span_it_read(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    span: replay_module.ReplayRange,
    said: str,
) -> None:
    """An auditor reading the trail learns what the replay read, not only that it ran."""
    live = Live(tmp_path)
    live.send(T0, "referral-created", referral_bundle(REFERRAL))
    live.replay(monkeypatch, span)
    entry = live.hub.store.audit_entries()[-1]
    assert entry.action == "replay"
    assert orjson.loads(entry.canonical)["outcomeDesc"] == f"{said}; 1 records; 0 differences"
