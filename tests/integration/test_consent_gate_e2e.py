"""The walking skeleton, end to end: a real broker, a real store, the real hub."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson

from adapters.broker.admin import _admin
from schemas import topics as names
from schemas.export import GENERATED
from schemas.registration import (
    ConsentRecorded,
    MessageDeadLettered,
    ReferralAwaitingConsent,
    ReferralRedelivered,
    ReferralReleased,
)
from services.demo.samples import DEMO_BSN, consent_resource, referral_bundle, to_bytes
from tests.integration.helpers import (
    TopicReader,
    next_event,
    running,
    send,
    send_consent,
    send_referral,
    settings_for,
    unique_prefix,
)

WELFARE = "welzijn-hoogeveen"
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.db'}"


async def test_referral_then_consent_releases_exactly_once(
    kafka_bootstrap: str, store_url: str
) -> None:
    async with running(settings_for(kafka_bootstrap, store_url, unique_prefix())) as hub:
        topics, events = hub.hub.topics, hub.hub.observers.subscribe()
        await send_referral(hub, "VERW-E-1")
        await next_event(events, ReferralAwaitingConsent, referral_id="VERW-E-1")
        async with TopicReader(kafka_bootstrap, topics.welfare_referrals(WELFARE)) as reader:
            assert await reader.total() == 0, "nothing may be released before consent"
            await send_consent(hub, "c-e-1", "VERW-E-1", traceparent=TRACE)
            await next_event(events, ReferralReleased, referral_id="VERW-E-1")
            (record,) = await reader.read(1)
            # a re-delivered consent and referral change nothing
            await send_consent(hub, "c-e-1", "VERW-E-1")
            await next_event(events, ConsentRecorded, consent_id="c-e-1")
            await send_referral(hub, "VERW-E-1")
            await next_event(events, ReferralRedelivered, referral_id="VERW-E-1")
            await hub.relay.publish_pending()
            assert await reader.total() == 1
            assert hub.hub.store.count("releases") == 1

    assert record.key == b"VERW-E-1"
    headers = dict(record.headers)
    assert headers["ce_type"] == b"nl.schakel.referral-released.v1"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["content-type"] == b"application/json"
    assert headers["traceparent"].decode().split("-")[1] == TRACE.split("-")[1], "trace continued"
    body = orjson.loads(record.value)
    jsonschema.validate(body, json.loads((GENERATED / "welfare-intake.schema.json").read_text()))
    assert body["referral_id"] == "VERW-E-1"
    assert body["consent_id"] == "c-e-1"
    text = record.value.decode()
    assert DEMO_BSN not in text
    assert "sertraline" not in text
    assert "P03" not in text


async def test_consent_first_then_referral_releases_exactly_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with running(settings_for(kafka_bootstrap, _sqlite(tmp_path), unique_prefix())) as hub:
        topics, events = hub.hub.topics, hub.hub.observers.subscribe()
        for _ in range(2):
            await send_consent(hub, "c-e-2", "VERW-E-2")
        await next_event(events, ConsentRecorded, consent_id="c-e-2")
        await next_event(events, ConsentRecorded, consent_id="c-e-2")
        for _ in range(2):
            await send_referral(hub, "VERW-E-2")
        await next_event(events, ReferralReleased, referral_id="VERW-E-2")
        async with TopicReader(kafka_bootstrap, topics.welfare_referrals(WELFARE)) as reader:
            (record,) = await reader.read(1)
            view = hub.hub.store.registration_of_referral("VERW-E-2")
            assert view is not None
            assert [e.status for e in view.timeline] == ["received", "released"]
            await hub.relay.publish_pending()
            assert await reader.total() == 1
    assert orjson.loads(record.value)["referral_id"] == "VERW-E-2"


async def test_bad_inputs_are_dead_lettered_and_the_hub_keeps_going(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    cases = [
        (names.REFERRAL_CREATED, b"\xff\xfe not json", "k-1", "invalid-json"),
        (names.REFERRAL_CREATED, None, "k-null", "invalid-json"),
        (
            names.REFERRAL_CREATED,
            b'{"resourceType": "Patient", "id": "p", "unknownElement": 1}',
            "k-2",
            "invalid-fhir",
        ),
        (
            names.REFERRAL_CREATED,
            to_bytes(referral_bundle("VERW-BAD-BSN", bsn="123456789")),
            "VERW-BAD-BSN",
            "invalid-bsn",
        ),
        (
            names.REFERRAL_CREATED,
            to_bytes(referral_bundle("VERW-BAD-ROUTE", district="Atlantis")),
            "VERW-BAD-ROUTE",
            "no-recipient",
        ),
        (
            names.REFERRAL_CREATED,
            to_bytes(referral_bundle("VERW-BAD-ORG", practice_agb="09999999")),
            "VERW-BAD-ORG",
            "unknown-participant",
        ),
        (
            names.CONSENT_GRANTED,
            to_bytes(consent_resource("c-bad", status="draft")),
            "k-6",
            "invalid-consent",
        ),
        (names.CONSENT_WITHDRAWN, to_bytes(consent_resource("c-bad2")), "k-7", "invalid-consent"),
    ]
    odd_headers = (
        ("x-binary", b"\x00\xff\xfe"),
        ("traceparent", TRACE.encode()),
        ("dup", b"a"),
        ("dup", b"b"),
    )
    async with running(settings_for(kafka_bootstrap, _sqlite(tmp_path), unique_prefix())) as hub:
        topics, events = hub.hub.topics, hub.hub.observers.subscribe()
        for logical, value, key, _ in cases:
            await send(
                kafka_bootstrap,
                topics.name(logical),
                value,
                key,
                logical=logical,
                headers=odd_headers,
            )
        reasons = {}
        for _ in cases:
            event = await next_event(events, MessageDeadLettered)
            reasons[event.key] = event.reason
        assert reasons == {key: reason for _, _, key, reason in cases}

        # a good referral after all that still flows
        await send_consent(hub, "c-good", "VERW-GOOD")
        await send_referral(hub, "VERW-GOOD")
        await next_event(events, ReferralReleased, referral_id="VERW-GOOD")

        async with TopicReader(kafka_bootstrap, topics.dead_letter) as reader:
            letters = await reader.read(len(cases))
    by_key = {r.key.decode(): r for r in letters}
    for logical, value, key, reason in cases:
        letter = by_key[key]
        assert letter.value == value, "original bytes unchanged"
        headers = list(letter.headers)
        assert headers[: len(odd_headers)] == list(odd_headers), (
            "original headers unchanged, in order"
        )
        added = dict(headers[len(odd_headers) :])
        assert added["schakel-error-reason"] == reason.encode()
        assert added["schakel-original-topic"] == topics.name(logical).encode()
        assert int(added["schakel-original-offset"]) >= 0
        assert added["schakel-error-detail"]
        assert DEMO_BSN.encode() not in added["schakel-error-detail"]
        assert not any(k.startswith("ce_") for k, _ in headers[len(odd_headers) :]), (
            "no ce_* of the hub's own"
        )


async def test_referral_without_consent_releases_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with running(settings_for(kafka_bootstrap, _sqlite(tmp_path), unique_prefix())) as hub:
        topics, events = hub.hub.topics, hub.hub.observers.subscribe()
        await send_referral(hub, "VERW-E-3")
        await next_event(events, ReferralAwaitingConsent, referral_id="VERW-E-3")
        # a consent naming this referral, but for another organisation
        await send_consent(hub, "c-other", "VERW-E-3", recipient_ura=("23456789",))
        await next_event(events, ConsentRecorded, consent_id="c-other")
        await hub.relay.publish_pending()
        for participant in ("welzijn-hoogeveen", "welzijn-de-wolden"):
            async with TopicReader(
                kafka_bootstrap, topics.welfare_referrals(participant)
            ) as reader:
                assert await reader.total() == 0
        assert hub.hub.store.count("outbox") == 0


async def test_every_topic_is_created_with_the_prefix_and_partitions(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    async with running(
        settings_for(kafka_bootstrap, _sqlite(tmp_path), prefix, topic_partitions=5)
    ):
        admin = _admin(kafka_bootstrap, 10_000)
        await admin.start()
        try:
            described = {
                t["topic"]: len(t["partitions"])
                for t in await admin.describe_topics()
                if t["topic"].startswith(prefix)
            }
        finally:
            await admin.close()
    expected = {prefix + n for n in names.FIXED_TOPICS} | {
        f"{prefix}welfare.welzijn-hoogeveen.referrals",
        f"{prefix}welfare.welzijn-de-wolden.referrals",
        f"{prefix}his.praktijk-de-linde.feedback",
        f"{prefix}his.praktijk-het-anker.feedback",
        f"{prefix}wmo.0118.registrations",
        f"{prefix}wmo.1690.registrations",
    }
    assert set(described) == expected | {prefix + names.HUB_EPOCH}
    epoch = described.pop(prefix + names.HUB_EPOCH)
    assert (epoch, set(described.values())) == (1, {5})  # the marker needs one partition
