"""`schakel demo`: one referral's journey through the hub, printed for a person to follow.

Everything is real: the embedded broker, the topics, the hub's consumers, the SQLite store
and the outbox relay. The demo plays the GP system (it publishes) and the welfare
organisation (it consumes its topic), and awaits each step as an event, never a sleep.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import tempfile
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax

from adapters.broker.client import Sender, inbound_headers
from adapters.municipal.iwmo import validate
from schemas import topics as names
from schemas.errors import SchakelError
from schemas.identifiers import bsn_valid
from schemas.registration import (
    ConsentRecorded,
    FeedbackForwarded,
    HubEvent,
    MessageDeadLettered,
    ReferralAwaitingConsent,
    ReferralReceived,
    ReferralReleased,
)
from services.demo.samples import DEMO_BSN, consent_resource, referral_bundle, to_bytes
from services.hub import RunningHub, start_hub
from services.runtime import Observers
from services.settings import DEMO_PARTICIPANTS, HubSettings

E = TypeVar("E")
STEP_TIMEOUT = 30.0


async def _reader(bootstrap: str, client_id: str, *topics: str) -> AIOKafkaConsumer:
    """A recipient's consumer: every partition of `topics`, from the beginning, no group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, client_id=client_id
    )
    await consumer.start()
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or [])
    ]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    return consumer


async def _await_event(queue: asyncio.Queue[HubEvent], kind: type[E], **match: Any) -> E:
    return await Observers.next(queue, kind, STEP_TIMEOUT, **match)


def _contains_bsn(text: str) -> bool:
    return any(bsn_valid(m) for m in re.findall(r"(?<!\d)\d{9}(?!\d)", text))


DEMO_OPERATOR_SHA256 = hashlib.sha256(b"demo-token-operator").hexdigest()


async def run_demo(
    console: Console,
    *,
    settings: HubSettings | None = None,
    workdir: Path | None = None,
    serve: bool = False,
    serve_port: int | None = None,
) -> int:
    tmp = tempfile.TemporaryDirectory(prefix="schakel-demo-") if workdir is None else None
    root = workdir or Path(tmp.name)  # type: ignore[union-attr]
    settings = settings or HubSettings(
        database_url=f"sqlite:///{root / 'schakel-demo.db'}",
        participants=DEMO_PARTICIPANTS,
        embedded_broker_log_dir=root,
        http_port=serve_port if serve_port is not None else 0,
        operator_token_sha256=DEMO_OPERATOR_SHA256,
    )
    console.rule("[bold]Schakel demo: a GP referral through the consent gate")
    console.print("Starting the embedded broker, creating topics, starting the hub ...")
    running = await start_hub(settings)
    try:
        code = await _journey(console, running)
        if running.http_url:
            console.print(
                f"Console: [cyan]{running.http_url}/console[/] — sign in with demo-token-welzijn-hoogeveen, "
                "demo-token-praktijk-de-linde or demo-token-operator"
            )
        if serve and code == 0:
            console.print("Serving the console until Ctrl-C ...")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        return code
    finally:
        await running.stop()
        if tmp is not None:
            tmp.cleanup()


async def _journey(console: Console, running: RunningHub) -> int:
    hub = running.hub
    await running.wait_assigned()
    welfare = hub.participants.by_id["welzijn-hoogeveen"]
    practice = hub.participants.by_id["praktijk-de-linde"]
    console.print(
        f"Hub up: broker [cyan]{running.bootstrap}[/] "
        f"({'embedded Tansu' if running.embedded else 'external Kafka'}), "
        f"store {hub.store.dialect}, {len(running.topic_report.created) + len(running.topic_report.existing)} topics, "
        f"{len(hub.participants.by_id)} participants."
    )
    events = hub.observers.subscribe()
    municipality = hub.participants.by_id["gemeente-hoogeveen"]
    welfare_topic = hub.topics.welfare_referrals(welfare.id)
    wmo_topic = hub.topics.wmo_registrations(municipality.cbs_code or "")
    # The demo plays both recipients: it reads their topics from the beginning.
    consumer = await _reader(running.bootstrap, "demo-recipients", welfare_topic, wmo_topic)
    try:
        referral_id = "VERW-2026-0001"
        async with Sender(running.bootstrap) as sender:
            console.print()
            console.print(
                f"[bold]1. {practice.name}[/] sends referral [cyan]{referral_id}[/] on {hub.topics.referral_created}"
            )
            await sender.send(
                hub.topics.referral_created,
                to_bytes(referral_bundle(referral_id)),
                key=referral_id.encode(),
                headers=inbound_headers(names.REFERRAL_CREATED),
            )
            received = await _await_event(events, ReferralReceived, referral_id=referral_id)
            console.print(
                f"   [green]received[/]: routed to {welfare.name} (registration {received.registration_id})"
            )
            await _await_event(events, ReferralAwaitingConsent, referral_id=referral_id)
            ends = await consumer.end_offsets(
                [tp for tp in consumer.assignment() if tp.topic == welfare_topic]
            )
            console.print(
                f"   [yellow]waiting for consent[/]: nothing released ({sum(ends.values())} messages on {welfare_topic})"
            )

            console.print()
            console.print("[bold]2. A referral with a BSN that fails the 11-proef[/]")
            await sender.send(
                hub.topics.referral_created,
                to_bytes(referral_bundle("VERW-2026-0002", bsn="123456789")),
                key=b"VERW-2026-0002",
                headers=inbound_headers(names.REFERRAL_CREATED),
            )
            dead = await _await_event(events, MessageDeadLettered, key="VERW-2026-0002")
            console.print(
                f"   [red]dead-lettered[/] on {hub.topics.dead_letter}: reason [bold]{dead.reason}[/] ({dead.detail})"
            )

            console.print()
            console.print(
                f"[bold]3. The patient consents[/]: sharing with {welfare.name} and "
                f"{municipality.name}, on {hub.topics.consent_granted}"
            )
            consent = consent_resource(
                "toestemming-0001", referral_id=referral_id, municipality_cbs=("0118",)
            )
            await sender.send(
                hub.topics.consent_granted,
                to_bytes(consent),
                key=referral_id.encode(),
                headers=inbound_headers(names.CONSENT_GRANTED),
            )
            await _await_event(events, ConsentRecorded, consent_id="toestemming-0001")
            console.print(
                "   [green]consent received[/]: toestemming-0001 covers this referral and both recipients"
            )
            for _ in range(2):
                released = await _await_event(events, ReferralReleased, referral_id=referral_id)
                name = hub.participants.by_id[released.recipient_id].name
                console.print(
                    f"   [green]released to {name}[/] at {released.released_at.isoformat()}"
                )

        received: dict[str, Any] = {}
        while len(received) < 2:
            got = await asyncio.wait_for(consumer.getone(), STEP_TIMEOUT)
            received[got.topic] = got
        record, registration = received[welfare_topic], received[wmo_topic]
    finally:
        await consumer.stop()
        hub.observers.unsubscribe(events)

    headers = {k: (v or b"").decode() for k, v in record.headers}
    body = orjson.loads(record.value)
    console.print()
    console.print(
        f"[bold]4. {welfare.name} receives on {welfare_topic}[/] (key {record.key.decode()}, "
        f"ce_type {headers.get('ce_type')}, traceparent {headers.get('traceparent')})"
    )
    pretty = orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
    console.print(
        Panel(
            Syntax(pretty, "json", theme="ansi_dark", word_wrap=True), title="welfare intake JSON"
        )
    )

    xml = registration.value.decode("utf-8").replace("\r\n", "\n")
    shown = re.sub(r"<Bsn>\d+</Bsn>", "<Bsn>*********</Bsn>", xml)
    console.print(
        f"[bold]5. {municipality.name} receives on {wmo_topic}[/] "
        f"(iWmo-style XML, validated against schemas/xsd before it was sent; the BSN is masked here)"
    )
    console.print(
        Panel(
            Syntax(shown, "xml", theme="ansi_dark", word_wrap=True), title="municipal registration"
        )
    )

    feedback_task = await _feedback_step(console, running, referral_id)
    metrics = await _metrics_step(console, running)

    view = hub.store.registration_of_referral(referral_id)
    if view is not None:
        console.print("[bold]Registration timeline[/] " + view.registration_id)
        for entry in view.timeline:
            console.print(
                f"   {entry.at.isoformat(timespec='seconds')}  {entry.status:<20} by {entry.by}"
            )

    try:
        validate(registration.value)
        xml_valid = True
    except SchakelError:
        xml_valid = False
    checks = {
        "no BSN in the released JSON": not _contains_bsn(pretty) and DEMO_BSN not in pretty,
        "no diagnosis or medication": all(
            w not in pretty + xml for w in ("P03", "sertraline", "Depressief")
        ),
        "municipal XML is XSD-valid, GP as Verwijzer (type 02)": xml_valid
        and "<Type>02</Type>" in xml,
        "released only after consent": view is not None
        and [e.status for e in view.timeline][:3]
        == ["received", "waiting-for-consent", "released"],
        "feedback reached the GP as a FHIR Task (in-progress)": feedback_task == "in-progress",
        "/metrics counts both releases and the invalid-bsn dead letter": metrics is not None
        and metrics.get('schakel_releases_total{recipient_kind="welfare"}') == 1
        and metrics.get('schakel_releases_total{recipient_kind="municipality"}') == 1
        and metrics.get('schakel_dead_letters_total{reason="invalid-bsn",topic="referral-created"}')
        == 1,
    }
    console.print()
    for label, ok in checks.items():
        console.print(f"   {'[green]ok[/]' if ok else '[red]FAILED[/]'}  {label}")
    console.rule("[bold]demo finished")
    return 0 if all(checks.values()) else 1


async def _feedback_step(console: Console, running: RunningHub, referral_id: str) -> str | None:
    """The welfare organisation reports contact; the GP system receives a FHIR Bundle."""
    hub = running.hub
    practice = hub.participants.by_id["praktijk-de-linde"]
    gp_topic = hub.topics.his_feedback(practice.id)
    events = hub.observers.subscribe()
    consumer = await _reader(running.bootstrap, "demo-gp", gp_topic)
    try:
        feedback = {
            "referral_id": referral_id,
            "organisation": "welzijn-hoogeveen",
            "status": "contacted",
            "occurred_at": datetime.now(UTC).isoformat(),
            "summary": "Telefonisch kennisgemaakt; volgende week huisbezoek.",
        }
        console.print()
        console.print(
            f"[bold]6. Welzijn De Schakel Hoogeveen reports back[/] on {hub.topics.feedback_returned}: contacted"
        )
        async with Sender(running.bootstrap) as sender:
            await sender.send(
                hub.topics.feedback_returned,
                orjson.dumps(feedback),
                key=referral_id.encode(),
                headers=inbound_headers(names.FEEDBACK_RETURNED),
            )
        await _await_event(events, FeedbackForwarded, referral_id=referral_id)
        record = await asyncio.wait_for(consumer.getone(), STEP_TIMEOUT)
    finally:
        await consumer.stop()
        hub.observers.unsubscribe(events)
    bundle = orjson.loads(record.value)
    task = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    communication = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Communication"
    )
    console.print(
        f"   [green]{practice.name} receives on {gp_topic}[/]: FHIR Bundle, Task status "
        f'[bold]{task["status"]}[/], Communication: "{communication["payload"][0]["contentString"]}"'
    )
    return str(task["status"])


SHOWN_METRICS = (
    "schakel_releases_total",
    "schakel_dead_letters_total",
    "schakel_feedback_forwarded_total",
    "schakel_consumer_lag",
)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own http URL
        return str(response.read().decode("utf-8"))


async def _metrics_step(console: Console, running: RunningHub) -> dict[str, float] | None:
    """What the hub's own `/metrics` endpoint says now (as a Prometheus scrape would)."""
    if running.http_url is None:
        return None
    url = f"{running.http_url}/metrics"
    text = await asyncio.to_thread(_get, url)
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in SHOWN_METRICS:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    console.print()
    console.print(f"[bold]7. The hub's metrics[/] (GET {url}, Prometheus text format)")
    for line, number in found.items():
        console.print(f"   {line} {number:g}")
    return found
