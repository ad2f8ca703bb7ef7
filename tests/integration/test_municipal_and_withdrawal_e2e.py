"""Issue #4 end to end: a consent naming the municipality yields an XSD-valid iWmo-style
registration with the GP as Verwijzer; a withdrawal revokes on both topics and nothing
flows after it."""

from __future__ import annotations

from pathlib import Path

import orjson
from lxml import etree

from adapters.municipal.iwmo import NAMESPACE, SAFE_PARSER, validate
from schemas.registration import (
    ConsentRecorded,
    ReferralAwaitingConsent,
    ReferralRedelivered,
    ReferralReleased,
    ReferralRevoked,
)
from services.demo.samples import DEMO_BSN
from tests.integration.helpers import (
    TopicReader,
    next_event,
    running,
    send_consent,
    send_referral,
    settings_for,
    unique_prefix,
)

WELFARE, MUNICIPALITY = "welzijn-hoogeveen", "gemeente-hoogeveen"
NS = {"w": NAMESPACE}


async def test_municipal_registration_then_withdrawal(kafka_bootstrap: str, store_url: str) -> None:
    async with running(settings_for(kafka_bootstrap, store_url, unique_prefix())) as hub:
        topics, events = hub.hub.topics, hub.hub.observers.subscribe()
        await send_referral(hub, "VERW-W-1")
        await next_event(events, ReferralAwaitingConsent, referral_id="VERW-W-1")
        await send_consent(
            hub,
            "c-w-1",
            "VERW-W-1",
            municipality_cbs=("0118",),
            classes=("referral", "contact-phone"),
        )
        released = {
            (await next_event(events, ReferralReleased, referral_id="VERW-W-1")).recipient_id
            for _ in range(2)
        }
        assert released == {WELFARE, MUNICIPALITY}

        async with (
            TopicReader(kafka_bootstrap, topics.welfare_referrals(WELFARE)) as welfare,
            TopicReader(kafka_bootstrap, topics.wmo_registrations("0118")) as wmo,
        ):
            (intake,) = await welfare.read(1)
            (registration,) = await wmo.read(1)

            await send_consent(hub, "c-w-1", "VERW-W-1", withdraw=True)
            revoked = {
                (await next_event(events, ReferralRevoked, referral_id="VERW-W-1")).recipient_id
                for _ in range(2)
            }
            assert revoked == {WELFARE, MUNICIPALITY}
            (welfare_notice,) = await welfare.read(1)
            (wmo_notice,) = await wmo.read(1)

            # replays cannot revive it: the grant again, the referral again
            await send_consent(hub, "c-w-1", "VERW-W-1", municipality_cbs=("0118",))
            await next_event(events, ConsentRecorded, consent_id="c-w-1", status="inactive")
            await send_referral(hub, "VERW-W-1", reason="Nieuwe reden, zelfde verwijzing")
            await next_event(events, ReferralRedelivered, referral_id="VERW-W-1")
            await send_consent(hub, "c-w-2-other-referral", "VERW-OTHER")
            await next_event(events, ConsentRecorded, consent_id="c-w-2-other-referral")
            await hub.relay.publish_pending()
            assert await welfare.total() == 2
            assert await wmo.total() == 2

        view = hub.hub.store.registration_of_referral("VERW-W-1")
        assert view is not None
        assert [e.status for e in view.timeline][-1] == "revoked"
        assert view.timeline[-1].by == "c-w-1"

    body = orjson.loads(intake.value)
    assert body["client"].get("phone") == "06-98765432", "phone was consented"
    assert "email" not in body["client"] and "address" not in body["client"], "not consented"

    headers = dict(registration.headers)
    assert headers["ce_type"] == b"nl.schakel.referral-released.v1"
    assert headers["content-type"] == b"application/xml"
    validate(registration.value)
    tree = etree.fromstring(registration.value, SAFE_PARSER)
    assert tree.findtext("w:Verwijzer/w:Type", namespaces=NS) == "02"
    assert tree.findtext("w:Verwijzer/w:ZorgverlenerCode", namespaces=NS) == "01234567"
    assert tree.findtext("w:Client/w:Bsn", namespaces=NS) == DEMO_BSN
    assert tree.find("w:Registratie/w:Reden", NS) is None, "no reason without the reason class"
    assert not registration.value.startswith(b"\xef\xbb\xbf")

    for notice in (welfare_notice, wmo_notice):
        assert dict(notice.headers)["ce_type"] == b"nl.schakel.referral-revoked.v1"
        payload = orjson.loads(notice.value)
        assert set(payload) == {"referral_id", "registration_id", "revoked_at", "reason"}
        assert payload["referral_id"] == "VERW-W-1"
        assert payload["reason"] == "consent-withdrawn"
        assert payload["registration_id"] == body["registration_id"]
        assert DEMO_BSN.encode() not in notice.value


async def test_objection_blocks_release(kafka_bootstrap: str, tmp_path: Path) -> None:
    from schemas import topics as names
    from services.demo.samples import consent_resource, to_bytes
    from tests.integration.helpers import send

    async with running(
        settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'h.db'}", unique_prefix())
    ) as hub:
        topics, events = hub.hub.topics, hub.hub.observers.subscribe()
        objection = consent_resource("bezwaar-1", referral_id=None)
        objection["provision"] = {"type": "deny"}
        await send(
            kafka_bootstrap,
            topics.consent_granted,
            to_bytes(objection),
            "bezwaar-1",
            logical=names.CONSENT_GRANTED,
        )
        await next_event(events, ConsentRecorded, consent_id="bezwaar-1")
        await send_consent(hub, "c-o-1", "VERW-O-1")
        await next_event(events, ConsentRecorded, consent_id="c-o-1")
        await send_referral(hub, "VERW-O-1")
        await next_event(events, ReferralAwaitingConsent, referral_id="VERW-O-1")
        assert hub.hub.store.count("releases") == 0, "the objection holds it back"
        await hub.relay.publish_pending()
        async with TopicReader(kafka_bootstrap, topics.welfare_referrals(WELFARE)) as welfare:
            assert await welfare.total() == 0
            objection["status"] = "inactive"
            await send(
                kafka_bootstrap,
                topics.consent_withdrawn,
                to_bytes(objection),
                "bezwaar-1",
                logical=names.CONSENT_WITHDRAWN,
            )
            await next_event(events, ReferralReleased, referral_id="VERW-O-1")
            (record,) = await welfare.read(1)
    assert orjson.loads(record.value)["referral_id"] == "VERW-O-1"
