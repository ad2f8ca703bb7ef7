"""Issue #6: the HTTP API and the FHIR facade on a running hub (real broker, real store).

Every cross-organisation read is tried and must be refused (404, so existence does not
leak); a referral POSTed as FHIR is released like one sent on Kafka."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
from fhir.resources.R4B.bundle import Bundle

from schemas.audit import AuditEntry
from schemas.registration import FeedbackForwarded, MessageDeadLettered, ReferralReleased
from services.audit_log import pseudonym
from services.demo.samples import DEMO_BSN, consent_resource, referral_bundle, to_bytes
from services.hub import RunningHub
from services.settings import DEMO_PARTICIPANTS
from tests.integration.helpers import (
    NAMED_OPERATOR,
    NAMED_OPERATOR_TOKEN,
    OPERATOR_TOKEN,
    TopicReader,
    next_event,
    send_feedback,
    send_referral,
    token,
)

PATIENT_B = "999900031"
VIEWERS = {
    "praktijk-de-linde": {"VERW-A", "VERW-C"},
    "praktijk-het-anker": {"VERW-B"},
    "welzijn-hoogeveen": {"VERW-A"},
    "welzijn-de-wolden": {"VERW-B"},
    "gemeente-hoogeveen": {"VERW-A"},
    "gemeente-de-wolden": set(),
}


def _client(hub: RunningHub, who: str | None) -> httpx.AsyncClient:
    headers = {}
    if who:
        headers["Authorization"] = f"Bearer {OPERATOR_TOKEN if who == 'operator' else token(who)}"
    return httpx.AsyncClient(base_url=hub.http_url or "", headers=headers, timeout=10)


async def test_answers_with_personal_data_are_not_cached(hub: RunningHub) -> None:
    async with _client(hub, "praktijk-de-linde") as practice:
        for path in ("/api/v1/registrations", "/fhir/Task?based-on=VERW-A", "/console"):
            answer = await practice.get(path)
            assert answer.headers["cache-control"] == "no-store", path
            assert answer.headers["x-frame-options"] == "DENY", path
        assert "cache-control" not in (await practice.get("/healthz")).headers


async def test_health_and_missing_tokens(hub: RunningHub) -> None:
    async with _client(hub, None) as anon:
        assert (await anon.get("/healthz")).json() == {"status": "ok"}
        ready = await anon.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"store": "ok", "broker": "ok"}
        assert (await anon.get("/api/v1/registrations")).status_code == 401
        wrong = await anon.get(
            "/api/v1/registrations", headers={"Authorization": "Bearer not-a-token"}
        )
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        assert (await anon.get("/openapi.json")).json()["info"]["title"] == "Schakel"


async def test_each_party_sees_exactly_its_own_registrations(hub: RunningHub) -> None:
    async with _client(hub, "operator") as operator:
        everything = {
            r["referral_id"]: r for r in (await operator.get("/api/v1/registrations")).json()
        }
    assert set(everything) == {"VERW-A", "VERW-B", "VERW-C"}
    for who, visible in VIEWERS.items():
        async with _client(hub, who) as client:
            listed = (await client.get("/api/v1/registrations")).json()
            assert {r["referral_id"] for r in listed} == visible, who
            for referral_id, registration in everything.items():
                response = await client.get(
                    f"/api/v1/registrations/{registration['registration_id']}"
                )
                if referral_id in visible:
                    assert response.status_code == 200, (who, referral_id)
                    body = response.json()
                    assert [e["status"] for e in body["timeline"]][:1] == ["received"]
                    assert DEMO_BSN not in response.text
                else:
                    assert response.status_code == 404, (who, referral_id)
            assert (
                await client.get("/api/v1/registrations/00000000-0000-0000-0000-000000000000")
            ).status_code == 404
            assert (await client.get("/api/v1/dead-letters")).status_code == 403
    reads = [e for e in hub.hub.store.audit_entries() if e.action == "read"]
    assert {e.actor for e in reads} >= set(VIEWERS) | {"operator"}, "every read is audited"
    shown = {(e.actor, e.referral_id) for e in reads if e.patient}
    for who, visible in VIEWERS.items():
        assert {r for a, r in shown if a == who} == visible, f"{who}: one entry per client it saw"
    outcomes = {orjson.loads(e.canonical)["outcome"] for e in reads}
    assert outcomes == {"0", "4"}, "refusals and not-found reads are audited too"


async def test_filters(hub: RunningHub) -> None:
    async with _client(hub, "operator") as operator:
        waiting = (
            await operator.get("/api/v1/registrations", params={"status": "waiting-for-consent"})
        ).json()
        assert [r["referral_id"] for r in waiting] == ["VERW-C"]
        wolden = (
            await operator.get(
                "/api/v1/registrations", params={"organisation": "welzijn-de-wolden"}
            )
        ).json()
        assert [r["referral_id"] for r in wolden] == ["VERW-B"]
        assert (
            await operator.get("/api/v1/registrations", params={"overdue": "true"})
        ).json() == []
        assert (
            await operator.get("/api/v1/registrations", params={"limit": "0"})
        ).status_code == 422


async def test_bad_moments_and_cookies_are_refused_not_server_errors(hub: RunningHub) -> None:
    async with _client(hub, "praktijk-de-linde") as practice:
        for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
            for name in ("since", "until"):
                answer = await practice.get("/api/v1/registrations", params={name: moment})
                assert answer.status_code == 422, (name, moment, answer.text)
    async with _client(hub, None) as anon:
        for cookie in ("x|1|\u00e9", "operator|99999999999|\u00e9\u00e9"):
            answer = await anon.get(
                "/console", headers={"Cookie": f"schakel_session={cookie}".encode()}
            )
            assert answer.status_code < 500, (cookie, answer.status_code)
            assert "<h1>Registraties</h1>" not in answer.text  # not signed in


async def test_a_signed_out_session_cookie_no_longer_signs_in_even_copied(
    hub: RunningHub,
) -> None:
    """The session cookie is HttpOnly, SameSite=Strict and Secure; signing out ends the
    session in the store, so a copy of the cookie taken before is refused from then on."""
    async with _client(hub, None) as browser:
        signed_in = await browser.post("/console/login", data={"token": token("praktijk-de-linde")})
        assert signed_in.status_code == 303
        set_cookie = signed_in.headers["set-cookie"]
        attributes = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
        assert {"httponly", "secure", "samesite", "max-age"} <= attributes, set_cookie
        cookie = set_cookie.split(";")[0]  # "schakel_session=..."
        copied = {"Cookie": cookie}

        page = await browser.get("/console", headers=copied)
        assert "<h1>Registraties</h1>" in page.text
        other = await browser.post("/console/login", data={"token": token("praktijk-het-anker")})
        other_cookie = {"Cookie": other.headers["set-cookie"].split(";")[0]}

        signed_out = await browser.post("/console/logout", headers=copied)
        assert signed_out.status_code == 303
        assert signed_out.headers["location"] == "/console/login"

        again = await browser.get("/console", headers=copied)
        assert again.status_code == 303 and again.headers["location"] == "/console/login"
        assert (await browser.post("/console/logout", headers=copied)).status_code == 303
        still = await browser.get("/console", headers=other_cookie)
        assert "<h1>Registraties</h1>" in still.text, "another session stays signed in"


async def test_a_named_operators_reads_are_audited_under_their_name(hub: RunningHub) -> None:
    """An operator with a token of their own (`SCHAKEL_OPERATOR_TOKENS_SHA256`) sees what the
    shared operator token sees, over the API and in a console session, and every read
    names them."""
    named = {"Authorization": f"Bearer {NAMED_OPERATOR_TOKEN}"}
    async with _client(hub, "operator") as shared, _client(hub, None) as browser:
        everything = (await shared.get("/api/v1/registrations")).json()
        listed = (await browser.get("/api/v1/registrations", headers=named)).json()
        assert listed == everything and len(listed) == 3
        one = listed[0]["registration_id"]
        assert (await browser.get(f"/api/v1/registrations/{one}", headers=named)).status_code == 200
        assert (await browser.get("/api/v1/dead-letters", headers=named)).status_code == 200

        signed_in = await browser.post("/console/login", data={"token": NAMED_OPERATOR_TOKEN})
        assert signed_in.status_code == 303
        cookie = {"Cookie": signed_in.headers["set-cookie"].split(";")[0]}
        page = await browser.get("/console/dead-letters", headers=cookie)
        assert page.status_code == 200, "the console session is an operator's"

    actor = f"operator:{NAMED_OPERATOR}"
    reads = [e for e in hub.hub.store.audit_entries() if e.actor == actor]
    assert {e.registration_id for e in reads if e.patient} >= {one}
    assert all(
        orjson.loads(e.canonical)["agent"][0]["role"] == [{"text": "Beheerder"}] for e in reads
    )
    assert len({e.seq for e in reads}) > len(listed), "the list, the detail and the console"


async def test_dead_letters_for_operators(hub: RunningHub) -> None:
    await send_referral(hub, "VERW-BAD", bsn="123456789")
    await hub.relay.publish_pending()
    async with _client(hub, "operator") as operator:
        for _ in range(100):
            letters = (await operator.get("/api/v1/dead-letters")).json()
            if letters:
                break
            await hub.relay.publish_pending()
        (letter,) = letters
    assert letter["reason"] == "invalid-bsn"
    assert letter["key"] == "VERW-BAD"
    assert letter["original_topic"].endswith("referral-created")
    assert "123456789" not in orjson.dumps(letter).decode()


async def test_a_referral_posted_as_fhir_is_released_like_one_on_kafka(hub: RunningHub) -> None:
    events = hub.hub.observers.subscribe()
    async with _client(hub, "praktijk-de-linde") as practice:
        consent = await practice.post(
            "/fhir/Consent",
            content=to_bytes(consent_resource("c-H", referral_id="VERW-H")),
            headers={"Content-Type": "application/fhir+json"},
        )
        assert consent.status_code == 202
        assert consent.json() == {"referral_id": "VERW-H", "consent_id": "c-H"}
        posted = await practice.post(
            "/fhir/Bundle",
            content=to_bytes(referral_bundle("VERW-H")),
            headers={"Content-Type": "application/fhir+json"},
        )
        assert posted.status_code == 202
        assert posted.json() == {"referral_id": "VERW-H"}
        await next_event(events, ReferralReleased, referral_id="VERW-H")
        await hub.relay.publish_pending()
        async with TopicReader(
            hub.bootstrap, hub.hub.topics.welfare_referrals("welzijn-hoogeveen")
        ) as welfare:
            intakes = [orjson.loads(r.value)["referral_id"] for r in await welfare.everything()]
        assert "VERW-H" in intakes

        await send_feedback(hub, "VERW-H", "contacted")
        await next_event(events, FeedbackForwarded, referral_id="VERW-H")
        tasks = await practice.get("/fhir/Task", params={"based-on": "VERW-H"})
        assert tasks.status_code == 200
        bundle = Bundle.model_validate(tasks.json())
        assert bundle.type == "searchset"
        (entry,) = bundle.entry
        assert entry.resource.status == "in-progress"
        system = "urn:oid:2.16.840.1.113883.2.4.3.11.999.7.1"
        by_identifier = await practice.get(
            "/fhir/Task", params={"based-on:identifier": f"{system}|VERW-H"}
        )
        assert by_identifier.json()["total"] == 1
    async with _client(hub, "praktijk-het-anker") as other:
        assert (await other.get("/fhir/Task", params={"based-on": "VERW-H"})).json()["total"] == 0


async def test_a_practice_may_not_consent_for_another_practices_patient(hub: RunningHub) -> None:
    """VERW-C is praktijk-de-linde's referral (patient 999900043), waiting for consent."""
    async with _client(hub, "praktijk-het-anker") as other:
        for resource in (
            consent_resource("c-K1", referral_id="VERW-C", bsn="999900043"),
            consent_resource("c-K2", referral_id=None, bsn="999900043"),
        ):
            refused = await other.post(
                "/fhir/Consent",
                content=to_bytes(resource),
                headers={"Content-Type": "application/fhir+json"},
            )
            assert refused.status_code == 403, resource["id"]
            assert refused.json()["resourceType"] == "OperationOutcome"
        # a patient the hub holds no referral of yet: a consent may come first
        first = await other.post(
            "/fhir/Consent",
            content=to_bytes(consent_resource("c-K3", referral_id=None, bsn="999900055")),
            headers={"Content-Type": "application/fhir+json"},
        )
        assert first.status_code == 202
    async with _client(hub, "operator") as operator:
        waiting = (
            await operator.get("/api/v1/registrations", params={"status": "waiting-for-consent"})
        ).json()
    assert "VERW-C" in {r["referral_id"] for r in waiting}


async def test_the_facade_refuses_with_an_operation_outcome(hub: RunningHub) -> None:
    async with _client(hub, "praktijk-het-anker") as other_practice:
        foreign = await other_practice.post(
            "/fhir/Bundle", content=to_bytes(referral_bundle("VERW-X"))
        )
        assert foreign.status_code == 403, "a practice may only submit its own referrals"
        assert foreign.json()["resourceType"] == "OperationOutcome"
        cases = [
            (b"not json", 400, "invalid-json"),
            (b'{"resourceType": "Patient", "unknownElement": 1}', 400, "invalid-fhir"),
            (
                to_bytes(referral_bundle("VERW-Y", bsn="123456789", practice_agb="01054321")),
                422,
                "invalid-bsn",
            ),
            (
                to_bytes(referral_bundle("VERW-Z", district="Atlantis", practice_agb="01054321")),
                422,
                "no-recipient",
            ),
        ]
        for body, status, reason in cases:
            response = await other_practice.post("/fhir/Bundle", content=body)
            assert response.status_code == status, reason
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["details"]["coding"][0]["code"] == reason
            assert "123456789" not in response.text
    async with _client(hub, "welzijn-hoogeveen") as welfare:
        response = await welfare.post("/fhir/Bundle", content=to_bytes(referral_bundle("VERW-W")))
        assert response.status_code == 403
        assert (await welfare.get("/fhir/Task", params={"based-on": "VERW-A"})).status_code == 403
    async with _client(hub, None) as anon:
        assert (await anon.post("/fhir/Bundle", content=b"{}")).status_code == 401


VERW_SYSTEM = "urn:oid:2.16.840.1.113883.2.4.3.11.999.7.1"


def _patient_entries(hub: RunningHub, bsn: str) -> list[AuditEntry]:
    """What `schakel audit subject-access BSN` lists (without auditing the question)."""
    key = hub.hub.store.run(lambda tx: pseudonym(tx, bsn))
    return hub.hub.store.audit_entries(patient=key)


def _new_entries(hub: RunningHub, since: int) -> list[AuditEntry]:
    return [e for e in hub.hub.store.audit_entries() if e.seq > since]


def _last_seq(hub: RunningHub) -> int:
    entries = hub.hub.store.audit_entries()
    return entries[-1].seq if entries else 0


async def test_a_task_search_that_answers_nothing_audits_no_patient(hub: RunningHub) -> None:
    """A search under another identifier system answers an empty searchset: its audit entry
    is a not-found read of nobody, so the patient's access report shows no read."""
    before = _last_seq(hub)
    reads_of_a = len([e for e in _patient_entries(hub, DEMO_BSN) if e.action == "read"])
    async with _client(hub, "praktijk-de-linde") as practice:
        wrong = await practice.get("/fhir/Task", params={"based-on:identifier": "urn:wrong|VERW-A"})
        assert wrong.status_code == 200
        assert wrong.json()["total"] == 0
    (entry,) = _new_entries(hub, before)
    assert (entry.action, entry.actor, entry.patient) == ("read", "praktijk-de-linde", None)
    assert entry.registration_id is None
    assert orjson.loads(entry.canonical)["outcome"] == "4", "audited as not found"
    assert len([e for e in _patient_entries(hub, DEMO_BSN) if e.action == "read"]) == reads_of_a

    before = _last_seq(hub)
    async with _client(hub, "praktijk-de-linde") as practice:
        right = await practice.get(
            "/fhir/Task", params={"based-on:identifier": f"{VERW_SYSTEM}|VERW-A"}
        )
        assert right.json()["total"] == 1
    (entry,) = _new_entries(hub, before)
    assert entry.patient is not None and entry.registration_id is not None
    assert orjson.loads(entry.canonical)["outcome"] == "0"
    assert entry in _patient_entries(hub, DEMO_BSN), "a Task returned is a read of its patient"


async def test_facade_submissions_name_their_patient(hub: RunningHub) -> None:
    """The submit entry of a referral or consent POSTed to the facade names the patient it
    carries (a consent by reference only: the patient of its referral), so the patient's
    access report shows it."""
    bsn = "999900067"
    before = _last_seq(hub)
    async with _client(hub, "praktijk-de-linde") as practice:
        consent = await practice.post(
            "/fhir/Consent",
            content=to_bytes(consent_resource("c-S", referral_id="VERW-S", bsn=bsn)),
        )
        assert consent.status_code == 202
        posted = await practice.post(
            "/fhir/Bundle", content=to_bytes(referral_bundle("VERW-S", bsn=bsn))
        )
        assert posted.status_code == 202
        by_reference = await practice.post(
            "/fhir/Consent",
            content=to_bytes(consent_resource("c-C2", referral_id="VERW-C", bsn=None)),
        )
        assert by_reference.status_code == 202
    submits = {
        (e.referral_id, e.patient)
        for e in _new_entries(hub, before)
        if e.action == "submit" and e.actor == "praktijk-de-linde"
    }
    key_s = hub.hub.store.run(lambda tx: pseudonym(tx, bsn))
    key_c = hub.hub.store.run(lambda tx: pseudonym(tx, "999900043"))
    assert {("VERW-S", key_s), ("VERW-C", key_c)} == submits
    assert {e.action for e in _patient_entries(hub, bsn)} >= {"submit"}
    assert all(bsn not in e.canonical for e in hub.hub.store.audit_entries())


async def test_a_recipients_read_names_the_consent_it_was_released_on(hub: RunningHub) -> None:
    """A welfare organisation or municipality sees a registration on the consent of its
    release; the referring practice reads its own referral without one."""
    async with _client(hub, "operator") as operator:
        registrations = {
            r["referral_id"]: r["registration_id"]
            for r in (await operator.get("/api/v1/registrations")).json()
        }
    expected = {
        "welzijn-hoogeveen": ("VERW-A", "c-A"),
        "gemeente-hoogeveen": ("VERW-A", "c-A"),
        "welzijn-de-wolden": ("VERW-B", "c-B"),
        "praktijk-de-linde": ("VERW-A", None),
    }
    for who, (referral_id, consent_id) in expected.items():
        before = _last_seq(hub)
        async with _client(hub, who) as client:
            one = await client.get(f"/api/v1/registrations/{registrations[referral_id]}")
            assert one.status_code == 200
            listed = await client.get("/api/v1/registrations")
            assert listed.status_code == 200
            signed_in = await client.post("/console/login", data={"token": token(who)})
            cookie = {"Cookie": signed_in.headers["set-cookie"].split(";")[0]}
            page = await client.get(
                f"/console/registrations/{registrations[referral_id]}", headers=cookie
            )
            assert page.status_code == 200
        reads = [
            e
            for e in _new_entries(hub, before)
            if e.action == "read" and e.referral_id == referral_id
        ]
        assert len(reads) == 3, who  # the API's detail and list, the console's page
        for entry in reads:
            assert entry.consent_id == consent_id, (who, entry.canonical)
            requestor = next(
                a for a in orjson.loads(entry.canonical)["agent"] if a.get("requestor")
            )
            assert requestor.get("policy") == ([f"Consent/{consent_id}"] if consent_id else None)


def _schakel(hub: RunningHub, *args: str) -> subprocess.CompletedProcess[str]:
    settings = hub.hub.settings
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "SCHAKEL_DATABASE_URL": settings.database_url,
        "SCHAKEL_TOPIC_PREFIX": settings.topic_prefix,
        "SCHAKEL_PARTICIPANTS": str(DEMO_PARTICIPANTS),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_showing_a_dead_lettered_feedback_names_the_patient_of_its_referral(
    hub: RunningHub,
) -> None:
    """Feedback carries no BSN, only the referral id (its key): `dlq show --body` of a
    dead-lettered one is audited with the patient of that referral, which the hub holds."""
    events = hub.hub.observers.subscribe()
    # from an organisation VERW-A was not released to: dead-lettered not-authorised
    await send_feedback(hub, "VERW-A", "contacted", organisation="welzijn-de-wolden")
    await next_event(events, MessageDeadLettered, key="VERW-A")
    await hub.relay.publish_pending()
    (letter,) = hub.hub.store.outbox_rows(topic=hub.hub.topics.dead_letter)
    assert DEMO_BSN not in (letter.message.value or b"").decode()
    before = _last_seq(hub)
    shown = await asyncio.to_thread(
        _schakel, hub, "dlq", "show", letter.message.message_id, "--body"
    )
    assert shown.returncode == 0, shown.stderr
    (entry,) = _new_entries(hub, before)
    assert (entry.action, entry.referral_id) == ("dlq-show", "VERW-A")
    assert entry in _patient_entries(hub, DEMO_BSN), "the patient's access report shows it"
