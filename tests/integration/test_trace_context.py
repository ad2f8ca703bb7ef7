"""CONTRACT §2: the W3C `traceparent` is continued across every hop, so one referral can be
followed through the hub by its trace id (real broker, real store, the real hub)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
from aiokafka import ConsumerRecord

from adapters.broker.client import inbound_headers
from adapters.broker.cloudevents import continue_trace
from schemas import topics as names
from schemas.export import GENERATED
from schemas.registration import (
    ContactOverdue,
    FeedbackForwarded,
    MessageDeadLettered,
    ReferralAwaitingConsent,
    ReferralReleased,
    ReferralRevoked,
)
from services.demo.samples import fictional_bsn, referral_bundle, to_bytes
from tests.integration.helpers import (
    FakeClock,
    TopicReader,
    gather_events,
    next_event,
    running,
    send,
    send_consent,
    settings_for,
    token,
    unique_prefix,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PRACTICE, WELFARE, CBS = "praktijk-de-linde", "welzijn-hoogeveen", "0118"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


def gp_span(trace: str, span: str) -> str:
    """A GP system's span in trace `trace` (32 hex digits)."""
    return f"00-{trace}-{span}-01"


def trace_of(record: ConsumerRecord[Any, Any]) -> tuple[str, str]:
    """(trace id, span id) of a record's one traceparent."""
    (value,) = [v for k, v in record.headers if k == "traceparent"]
    match = TRACEPARENT.match(value.decode())
    assert match, value
    return match[1], match[2]


def ce_type(record: ConsumerRecord[Any, Any]) -> str:
    return dict(record.headers)["ce_type"].decode()


ASYNCAPI = orjson.loads((GENERATED / "asyncapi.json").read_bytes())


def assert_documented(record: ConsumerRecord[Any, Any], hub) -> None:  # type: ignore[no-untyped-def]
    """The record is a message the AsyncAPI document names for its topic, and its headers
    and (JSON) payload match the document's schemas."""
    logical = hub.hub.topics.logical(record.topic)
    (channel,) = [
        c
        for c in ASYNCAPI["channels"].values()
        if re.fullmatch(re.sub(r"\\{[a-z_]+\\}", "[^.]+", re.escape(c["address"])), logical)
    ]
    headers = {k: (v or b"").decode() for k, v in record.headers}
    messages = [
        ASYNCAPI["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
        for ref in channel["messages"].values()
    ]
    if logical != names.DEAD_LETTER:  # a dead letter keeps the original's ce_type
        messages = [
            m
            for m in messages
            if m["name"] == headers.get("ce_type") and m["contentType"] == headers["content-type"]
        ]
    (message,) = messages
    components = {"components": ASYNCAPI["components"]}
    jsonschema.validate(headers, {**message["headers"], **components})
    if message["contentType"].endswith("json"):
        jsonschema.validate(orjson.loads(record.value), {**message["payload"], **components})


async def _contacted(hub, referral_id: str, **how: Any) -> None:  # type: ignore[no-untyped-def]
    """The welfare organisation reports contact (`how`: a traceparent, or headers)."""
    body = {
        "referral_id": referral_id,
        "organisation": WELFARE,
        "status": "contacted",
        "occurred_at": "2026-12-02T10:00:00+01:00",
        "summary": "Gebeld.",
    }
    topic = hub.hub.topics.feedback_returned
    await send(
        hub.bootstrap,
        topic,
        orjson.dumps(body),
        referral_id,
        logical=names.FEEDBACK_RETURNED,
        **how,
    )


async def _everything(hub, topic: str) -> list[ConsumerRecord[Any, Any]]:  # type: ignore[no-untyped-def]
    async with TopicReader(hub.bootstrap, topic) as reader:
        return await reader.everything()


async def test_one_referral_is_followed_by_its_trace_id_through_every_hop(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    gp_spans = {"00f067aa0ba902b1", "00f067aa0ba902b2", "00f067aa0ba902b3"}
    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'hub.db'}", unique_prefix())
    async with running(settings) as hub:
        topics, events = hub.hub.topics, hub.hub.observers.subscribe()

        async def consent(span: str, *, withdraw: bool = False) -> None:
            await send_consent(
                hub,
                "c-T-1",
                "VERW-T-1",
                municipality_cbs=(CBS,),
                withdraw=withdraw,
                traceparent=gp_span(trace, span),
            )

        # The GP system sends the referral and then the consent, in its own trace.
        await send(
            kafka_bootstrap,
            topics.referral_created,
            to_bytes(referral_bundle("VERW-T-1")),
            "VERW-T-1",
            logical=names.REFERRAL_CREATED,
            traceparent=gp_span(trace, "00f067aa0ba902b1"),
        )
        await next_event(events, ReferralAwaitingConsent, referral_id="VERW-T-1")
        await consent("00f067aa0ba902b2")
        await gather_events(
            events, lambda seen: sum(isinstance(e, ReferralReleased) for e in seen) == 2
        )
        await hub.relay.publish_pending()
        (intake,) = await _everything(hub, topics.welfare_referrals(WELFARE))
        (registration,) = await _everything(hub, topics.wmo_registrations(CBS))

        # The welfare organisation answers in the trace of the intake it received.
        await _contacted(
            hub,
            "VERW-T-1",
            traceparent=continue_trace(dict(intake.headers)["traceparent"].decode()),
        )
        await next_event(events, FeedbackForwarded, referral_id="VERW-T-1")
        await consent("00f067aa0ba902b3", withdraw=True)
        await gather_events(
            events, lambda seen: sum(isinstance(e, ReferralRevoked) for e in seen) == 2
        )
        await hub.relay.publish_pending()
        (gp_feedback,) = await _everything(hub, topics.his_feedback(PRACTICE))
        welfare_all = await _everything(hub, topics.welfare_referrals(WELFARE))
        municipal_all = await _everything(hub, topics.wmo_registrations(CBS))
        audit = [r for r in await _everything(hub, topics.audit) if r.key == b"VERW-T-1"]

    hops = {
        "release to welfare": intake,
        "municipal registration": registration,
        "feedback to the GP": gp_feedback,
        **{f"{ce_type(r)} on the welfare topic": r for r in welfare_all},
        **{f"{ce_type(r)} on the municipal topic": r for r in municipal_all},
    }
    assert {ce_type(r) for r in welfare_all} == {
        "nl.schakel.referral-released.v1",
        "nl.schakel.referral-revoked.v1",
    }
    assert {ce_type(r) for r in municipal_all} == {
        "nl.schakel.referral-released.v1",
        "nl.schakel.referral-revoked.v1",
    }
    assert ce_type(gp_feedback) == "nl.schakel.feedback-forwarded.v1"
    spans = set()
    for hop, record in hops.items():
        trace_id, span = trace_of(record)
        assert trace_id == trace, f"{hop}: trace not continued"
        assert span not in gp_spans, f"{hop}: a new span, not the cause's"
        spans.add(span)
    for record in [*hops.values(), *audit]:
        assert_documented(record, hub)
    feedback_span = trace_of(intake)[1]
    assert trace_of(gp_feedback)[1] != feedback_span
    assert len(audit) >= 5, [r.value[:60] for r in audit]
    assert {trace_of(r)[0] for r in audit} == {trace}, "the audit trail follows the trace too"


async def test_outputs_without_a_traced_cause_continue_the_referral_trace(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A timer (contact term passed) and feedback sent without a traceparent have no trace
    of their own to continue: what they cause continues the referral's."""
    clock = FakeClock(T0)
    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'hub.db'}", unique_prefix())
    traces = {"VERW-T-2": "a" * 31 + "2", "VERW-T-3": "b" * 31 + "3"}
    async with running(settings, clock) as hub:
        topics, events = hub.hub.topics, hub.hub.observers.subscribe()
        for i, (referral_id, trace) in enumerate(traces.items()):
            bsn = fictional_bsn(20 + i)
            await send_consent(hub, f"c-{referral_id}", referral_id, bsn=bsn)
            await send(
                kafka_bootstrap,
                topics.referral_created,
                to_bytes(referral_bundle(referral_id, bsn=bsn)),
                referral_id,
                logical=names.REFERRAL_CREATED,
                traceparent=gp_span(trace, "0000000000000abc"),
            )
            await next_event(events, ReferralReleased, referral_id=referral_id)
        untraced = tuple(
            h for h in inbound_headers(names.FEEDBACK_RETURNED) if h[0] != "traceparent"
        )
        await _contacted(hub, "VERW-T-2", headers=untraced)
        await next_event(events, FeedbackForwarded, referral_id="VERW-T-2")
        clock.advance(timedelta(days=15))
        await hub.ticker.tick_now()
        await next_event(events, ContactOverdue, referral_id="VERW-T-3")
        await hub.relay.publish_pending()
        gp = await _everything(hub, topics.his_feedback(PRACTICE))
        welfare = await _everything(hub, topics.welfare_referrals(WELFARE))
        (marker,) = await _everything(hub, topics.hub_epoch)

    # The hub's marker record carries the headers of every message the hub writes too.
    marker_headers = {k: (v or b"").decode() for k, v in marker.headers}
    ce_schema = ASYNCAPI["components"]["schemas"]["CloudEventsHeaders"]
    jsonschema.validate(marker_headers, {**ce_schema, "components": ASYNCAPI["components"]})
    assert marker_headers["ce_type"] == "nl.schakel.hub-epoch.v1"
    assert TRACEPARENT.match(marker_headers["traceparent"])

    by_type = {(r.key.decode(), ce_type(r)): r for r in gp + welfare}
    assert set(by_type) == {
        ("VERW-T-2", "nl.schakel.feedback-forwarded.v1"),
        ("VERW-T-3", "nl.schakel.contact-overdue.v1"),
        ("VERW-T-2", "nl.schakel.referral-released.v1"),
        ("VERW-T-3", "nl.schakel.referral-released.v1"),
        ("VERW-T-3", "nl.schakel.contact-reminder.v1"),
    }
    for (referral_id, kind), record in by_type.items():
        assert_documented(record, hub)
        if kind != "nl.schakel.referral-released.v1":  # that one continues the consent's
            assert trace_of(record)[0] == traces[referral_id], (referral_id, kind)
            assert trace_of(record)[1] != "0000000000000abc"


async def test_facade_and_dead_letters_keep_the_callers_trace(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    trace, span = "c" * 31 + "4", "00000000000000f1"
    bad_trace = gp_span("d" * 31 + "5", "00000000000000f2")
    settings = settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'hub.db'}", unique_prefix())
    async with running(settings) as hub:
        topics, events = hub.hub.topics, hub.hub.observers.subscribe()
        async with httpx.AsyncClient(base_url=hub.http_url or "", timeout=10) as client:
            posted = await client.post(
                "/fhir/Bundle",
                content=to_bytes(referral_bundle("VERW-T-4")),
                headers={
                    "Authorization": f"Bearer {token(PRACTICE)}",
                    "Content-Type": "application/fhir+json",
                    "traceparent": gp_span(trace, span),
                },
            )
        assert posted.status_code == 202, posted.text
        await next_event(events, ReferralAwaitingConsent, referral_id="VERW-T-4")
        await send(
            kafka_bootstrap,
            topics.referral_created,
            b"not json",
            "k-bad",
            logical=names.REFERRAL_CREATED,
            traceparent=bad_trace,
        )
        await next_event(events, MessageDeadLettered, key="k-bad")
        await hub.relay.publish_pending()
        (submitted,) = [
            r for r in await _everything(hub, topics.referral_created) if r.key == b"VERW-T-4"
        ]
        (dead,) = await _everything(hub, topics.dead_letter)
        submit_audit = [r for r in await _everything(hub, topics.audit) if r.key == b"VERW-T-4"]

    assert trace_of(submitted)[0] == trace, "the HTTP caller's trace is continued"
    assert trace_of(submitted)[1] != span, "with the facade's own span"
    assert submit_audit and {trace_of(r) for r in submit_audit} == {trace_of(submitted)}
    assert dict(dead.headers)["traceparent"] == bad_trace.encode(), "dead letters add nothing"
    assert_documented(dead, hub)
    assert_documented(submitted, hub)
