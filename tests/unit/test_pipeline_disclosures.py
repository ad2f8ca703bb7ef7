"""What a recipient is sent, through the hub's own pipelines on a real (SQLite) store: every
change of what a consent covers reaches it, in order, even when the content repeats an
earlier message; and a referral id cannot be taken over by another patient or practice."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.participants import load_participants
from adapters.storage.store import Store
from schemas.messages import InboundRecord
from schemas.registration import (
    ContactOverdue,
    MessageDeadLettered,
    ReferralReleased,
    ReferralRevoked,
)
from schemas.topics import Topics
from services.consent.handlers import consent_pipeline
from services.demo.samples import (
    DEMO_BSN,
    consent_resource,
    fictional_bsn,
    referral_bundle,
    to_bytes,
)
from services.feedback.handlers import feedback_pipeline
from services.intake.handlers import intake_pipeline
from services.runtime import Hub
from services.settings import DEMO_PARTICIPANTS, HubSettings

REFERRAL = "VERW-D-1"
WELFARE_TOPIC = "welfare.welzijn-hoogeveen.referrals"


class Pipelines:
    """The hub's pipelines over one store, fed one record at a time."""

    def __init__(self, tmp_path: Path, settings: HubSettings | None = None) -> None:
        store = Store(f"sqlite:///{tmp_path / 'hub.db'}")
        store.migrate()
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
        self.hub = Hub(
            settings=settings or HubSettings(),
            participants=load_participants(DEMO_PARTICIPANTS),
            store=store,
            topics=Topics(""),
            clock=lambda: self.now,
        )
        self.intake = intake_pipeline(self.hub)
        self.feedback = feedback_pipeline(self.hub)
        self.grant = consent_pipeline(self.hub)
        self.withdraw = consent_pipeline(self.hub, withdrawn=True)
        self.offsets = count()

    def send(self, topic: str, resource: Any, key: str = REFERRAL) -> list[Any]:
        pipeline = {
            "referral-created": self.intake,
            "consent-granted": self.grant,
            "consent-withdrawn": self.withdraw,
            "feedback-returned": self.feedback,
        }[topic]
        record = InboundRecord(
            topic=topic,
            partition=0,
            offset=next(self.offsets),
            key=key.encode(),
            value=to_bytes(resource),
            timestamp_ms=1_700_000_000_000,
        )
        return pipeline.process([record])

    def consent(self, consent_id: str, *classes: str, withdrawn: bool = False) -> list[Any]:
        resource = consent_resource(
            consent_id,
            referral_id=REFERRAL,
            classes=("referral", *classes),
            status="inactive" if withdrawn else "active",
        )
        return self.send("consent-withdrawn" if withdrawn else "consent-granted", resource)

    def stored(self) -> Any:
        return self.hub.store.run(lambda tx: tx.referral(REFERRAL))

    def sent_to_welfare(self) -> list[dict[str, Any]]:
        rows = self.hub.store.outbox_rows(topic=WELFARE_TOPIC)
        return [orjson.loads(row.message.value or b"{}") for row in rows]


@pytest.fixture
def pipelines(tmp_path: Path) -> Pipelines:
    return Pipelines(tmp_path)


def _contact(message: dict[str, Any]) -> set[str]:
    client = message.get("client") or {}
    return {field for field in ("phone", "email") if client.get(field)}


def test_an_update_that_repeats_earlier_content_is_sent_again(pipelines: Pipelines) -> None:
    """The organisation's last message must say what the consents in force allow now."""
    pipelines.send("referral-created", referral_bundle(REFERRAL))
    pipelines.consent("c-1")  # the referral only: released without contact details
    pipelines.consent("c-2", "contact-phone")
    pipelines.consent("c-2", "contact-phone", withdrawn=True)
    pipelines.consent("c-3", "contact-phone", "contact-email")
    pipelines.consent("c-3", "contact-phone", "contact-email", withdrawn=True)

    sent = pipelines.sent_to_welfare()
    assert [_contact(m) for m in sent] == [
        set(),
        {"phone"},
        set(),
        {"phone", "email"},
        set(),  # the same content as the third: sent all the same
    ]
    ids = [row.message.message_id for row in pipelines.hub.store.outbox_rows(topic=WELFARE_TOPIC)]
    assert len(set(ids)) == len(ids)


OTHER_PRACTICE_AGB = "01054321"  # praktijk-het-anker in the demo participants


@pytest.mark.parametrize(
    "change",
    [
        {"bsn": fictional_bsn(7), "given": "Bert", "family": "Bos"},
        {"practice_agb": OTHER_PRACTICE_AGB},
        {"identifier_system": "urn:oid:2.16.528.1.9999.1"},
    ],
    ids=["another patient", "another practice", "another identifier system"],
)
def test_a_referral_id_is_not_taken_over_by_another_referral(
    pipelines: Pipelines, change: dict[str, str]
) -> None:
    """The same id sent for another patient, by another practice or under another system is
    refused (a dead letter), and the first patient's withdrawal still revokes the release."""
    pipelines.send("referral-created", referral_bundle(REFERRAL))
    pipelines.consent("c-1")
    before = pipelines.stored()
    system = change.pop("identifier_system", None)
    other = referral_bundle(REFERRAL, **change)
    if system:
        request = next(
            e["resource"]
            for e in other["entry"]
            if e["resource"]["resourceType"] == "ServiceRequest"
        )
        request["identifier"][0]["system"] = system

    events = pipelines.send("referral-created", other)

    (dead,) = [e for e in events if isinstance(e, MessageDeadLettered)]
    assert dead.reason == "referral-conflict"
    assert pipelines.stored() == before
    revoked = pipelines.consent("c-1", withdrawn=True)
    assert [e.recipient_id for e in revoked if isinstance(e, ReferralRevoked)] == [
        "welzijn-hoogeveen"
    ]


def test_a_re_sent_referral_with_a_changed_reason_is_still_an_update(pipelines: Pipelines) -> None:
    pipelines.send("referral-created", referral_bundle(REFERRAL))
    pipelines.consent("c-1", "contact-phone")
    events = pipelines.send(
        "referral-created", referral_bundle(REFERRAL, reason="Mantelzorger, overbelast")
    )
    assert not [e for e in events if isinstance(e, MessageDeadLettered)]
    assert [m["reason"] for m in pipelines.sent_to_welfare()][-1] == ("Mantelzorger, overbelast")


def test_each_practice_sees_its_own_referral_in_a_shared_registration(
    pipelines: Pipelines,
) -> None:
    """Two practices refer one patient to one organisation: one registration (CONTRACT §7),
    in which each practice sees its own referral, and only that one, with its feedback."""
    from adapters.storage.views import Views
    from schemas.access import Viewer

    other = "VERW-D-2"
    pipelines.send("referral-created", referral_bundle(REFERRAL))
    pipelines.consent("c-1")
    pipelines.send(
        "referral-created", referral_bundle(other, practice_agb=OTHER_PRACTICE_AGB), key=other
    )
    pipelines.send("consent-granted", consent_resource("c-2", referral_id=other), key=other)
    views = Views(pipelines.hub.store)
    seen = {}
    for practice in ("praktijk-de-linde", "praktijk-het-anker"):
        viewer = Viewer(kind="gp-practice", participant_id=practice)
        (summary,) = views.registrations(viewer)
        detail = views.registration(viewer, summary.registration_id)
        assert detail is not None
        seen[practice] = (summary.referral_id, summary.practice, detail.referral_ids)
    assert seen == {
        "praktijk-de-linde": (REFERRAL, "praktijk-de-linde", [REFERRAL]),
        "praktijk-het-anker": (other, "praktijk-het-anker", [other]),
    }
    operator = views.registration(Viewer(kind="operator"), summary.registration_id)
    assert operator is not None and operator.referral_ids == [REFERRAL, other]
    assert len(views.tasks_of_practice("praktijk-het-anker", other)) == 1
    assert views.tasks_of_practice("praktijk-de-linde", other) == []
    assert views.referring_practices([other], None) == {"praktijk-het-anker"}


def test_the_overdue_notice_is_about_the_referral_the_organisation_holds(
    pipelines: Pipelines,
) -> None:
    """A referral never released and one of another practice, released, share a
    registration: the contact term is the released one's, and so is its notice."""
    from services.timers.handlers import tick

    pipelines.send("referral-created", referral_bundle(REFERRAL))  # no consent: never sent
    other = "VERW-D-2"
    pipelines.send(
        "referral-created", referral_bundle(other, practice_agb=OTHER_PRACTICE_AGB), key=other
    )
    pipelines.send("consent-granted", consent_resource("c-2", referral_id=other), key=other)
    pipelines.now += timedelta(days=15)
    (overdue,) = [e for e in tick(pipelines.hub) if isinstance(e, ContactOverdue)]
    assert (overdue.referral_id, overdue.practice_id) == (other, "praktijk-het-anker")
    store = pipelines.hub.store
    assert [r.message.key for r in store.outbox_rows(topic=WELFARE_TOPIC)] == [
        other.encode(),  # the intake
        other.encode(),  # the reminder
    ]
    assert store.outbox_rows(topic="his.praktijk-de-linde.feedback") == []
    assert len(store.outbox_rows(topic="his.praktijk-het-anker.feedback")) == 1
    (entry,) = [e for e in store.audit_entries() if e.action == "overdue-notice"]
    assert (entry.referral_id, entry.recipient, entry.consent_id) == (
        other,
        "praktijk-het-anker",
        "c-2",
    )


def test_after_its_retention_a_closed_trajectory_is_not_reopened_and_its_consents_forget(
    tmp_path: Path,
) -> None:
    """The patient declined; 30 days after the close the personal data goes, the consents'
    BSN included, and a late re-send of the referral reopens nothing (no message)."""
    from sqlalchemy import select

    from adapters.storage import tables as t
    from services.timers.handlers import tick

    pipelines = Pipelines(tmp_path, HubSettings(retention_days=30))
    pipelines.send("referral-created", referral_bundle(REFERRAL))
    pipelines.consent("c-1", "contact-phone")
    declined = {
        "referral_id": REFERRAL,
        "organisation": "welzijn-hoogeveen",
        "status": "declined",
        "occurred_at": "2026-12-02T10:00:00+01:00",
        "summary": "Wil geen begeleiding.",
    }
    pipelines.send("feedback-returned", declined)
    pipelines.now += timedelta(days=31)
    tick(pipelines.hub)
    store = pipelines.hub.store
    with store.engine.connect() as conn:
        held = conn.execute(select(t.consents.c.patient_bsn, t.consents.c.body)).all()
        assert conn.execute(select(t.referrals)).all() == []
    assert [bsn for bsn, _ in held] == [None]
    assert DEMO_BSN not in held[0][1]  # the patient of referral_bundle and consent_resource
    sent = len(store.outbox_rows(topic=WELFARE_TOPIC))

    events = pipelines.send("referral-created", referral_bundle(REFERRAL, phone="06-11112222"))

    assert [type(e).__name__ for e in events] == ["ReferralRedelivered"]
    assert len(store.outbox_rows(topic=WELFARE_TOPIC)) == sent


def _one_consent_poisoned(
    pipelines: Pipelines,
    monkeypatch: pytest.MonkeyPatch,
    prefix: str,
    first_bsn: int,
    period: dict[str, str],
) -> tuple[str, str, Callable[..., None]]:
    """Two patients' referrals, each with a consent of `period`; the timer's outputs about
    the first one fail (made to). Returns (its referral id, the other's, the real
    `outputs_to_outbox`, to put back)."""
    from adapters.municipal.iwmo import InvalidOutputError
    from services.timers import handlers as timers

    poison, other = f"{prefix}-P", f"{prefix}-O"
    for referral_id, i in ((poison, first_bsn), (other, first_bsn + 1)):
        bsn = fictional_bsn(i)
        pipelines.send("referral-created", referral_bundle(referral_id, bsn=bsn), key=referral_id)
        consent = consent_resource(
            f"c-{referral_id}", referral_id=referral_id, bsn=bsn, period=period
        )
        pipelines.send("consent-granted", consent, key=referral_id)
    real = timers.outputs_to_outbox

    def failing(hub, tx, result, cause):  # type: ignore[no-untyped-def]
        if any(o.event.referral_id == poison for o in result.outputs):
            raise InvalidOutputError("made to fail")
        real(hub, tx, result, cause)

    monkeypatch.setattr(timers, "outputs_to_outbox", failing)
    return poison, other, real


def test_a_consent_start_that_cannot_be_applied_does_not_stop_the_timer(
    pipelines: Pipelines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One consent whose outputs fail (here made to) is left out, as a dead letter would
    be; the other patient's consent that starts at the same tick is released."""
    from services.timers import handlers as timers

    _, other, real = _one_consent_poisoned(
        pipelines, monkeypatch, "VERW-D", 31, {"start": "2026-12-02"}
    )
    pipelines.now += timedelta(days=1)
    released = [
        e.referral_id for e in timers.tick(pipelines.hub) if isinstance(e, ReferralReleased)
    ]
    assert released == [other]
    keys = [r.message.key for r in pipelines.hub.store.outbox_rows(topic=WELFARE_TOPIC)]
    assert keys == [other.encode()]
    monkeypatch.setattr(timers, "outputs_to_outbox", real)  # it would go through now
    assert timers.tick(pipelines.hub) == []  # the left-out one is not tried again


def test_a_consent_end_that_cannot_be_applied_does_not_stop_the_timer(
    pipelines: Pipelines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for the ends of consents' periods: the poisoned one is left out (not tried
    again), the other patient's organisation is told at the same tick."""
    from services.timers import handlers as timers

    _, other, real = _one_consent_poisoned(
        pipelines, monkeypatch, "VERW-E", 33, {"end": "2026-12-02"}
    )
    pipelines.now += timedelta(days=3)
    revoked = [
        (e.referral_id, e.reason)
        for e in timers.tick(pipelines.hub)
        if isinstance(e, ReferralRevoked)
    ]
    assert revoked == [(other, "consent-expired")]
    monkeypatch.setattr(timers, "outputs_to_outbox", real)  # it would go through now
    assert timers.tick(pipelines.hub) == []  # the left-out one is not tried again


def test_a_consent_sent_again_with_less_in_it_revokes_what_it_no_longer_covers(
    pipelines: Pipelines,
) -> None:
    """c-1 named the welfare organisation and the municipality; sent again without the
    municipality, the municipality is told (and its withdrawal then tells the rest)."""
    municipal = "wmo.0118.registrations"
    pipelines.send("referral-created", referral_bundle(REFERRAL))
    both = consent_resource("c-1", referral_id=REFERRAL, municipality_cbs=("0118",))
    pipelines.send("consent-granted", both)
    narrower = consent_resource("c-1", referral_id=REFERRAL)
    events = pipelines.send("consent-granted", narrower)
    assert [(e.referral_id, e.recipient_id) for e in events if isinstance(e, ReferralRevoked)] == [
        (REFERRAL, "gemeente-hoogeveen")
    ]
    store = pipelines.hub.store
    types = [dict(r.message.headers)["ce_type"] for r in store.outbox_rows(topic=municipal)]
    assert types == [b"nl.schakel.referral-released.v1", b"nl.schakel.referral-revoked.v1"]
    events = pipelines.send("consent-withdrawn", {**narrower, "status": "inactive"})
    assert [e.recipient_id for e in events if isinstance(e, ReferralRevoked)] == [
        "welzijn-hoogeveen"
    ]
