"""The `schakel` command (CONTRACT §8)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from aiokafka.errors import KafkaConnectionError, KafkaError
from rich.console import Console

from adapters.broker.admin import BrokerError, TopicReport
from adapters.logging import configure_logging, get_logger
from adapters.redaction import redact
from schemas import topics as names
from schemas.errors import ConfigurationError, SchakelError
from services.settings import HubSettings

app = typer.Typer(
    name="schakel",
    help="Schakel: GP referrals to welfare organisations and municipalities, behind a consent gate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)
log = get_logger("schakel.cli")


def _settings() -> HubSettings:
    """The hub's settings and each service's own (`SCHAKEL_INTAKE_*`, ...), all checked
    here, so that a bad value is refused before anything starts."""
    from pydantic import ValidationError
    from pydantic_settings import BaseSettings

    from services.consent.settings import ConsentSettings
    from services.feedback.settings import FeedbackSettings
    from services.intake.settings import IntakeSettings
    from services.timers.settings import TimerSettings

    model: type[BaseSettings] = HubSettings
    try:
        for model in (IntakeSettings, ConsentSettings, FeedbackSettings, TimerSettings):
            model()
        model = HubSettings
        return HubSettings()
    except ValidationError as exc:  # name the variable and the problem, not the value
        prefix = str(model.model_config.get("env_prefix", ""))
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            name = (
                "KAFKA_BOOTSTRAP_SERVERS"
                if field == "kafka_bootstrap_servers"
                else f"{prefix}{field}".upper()
            )
            problems.append(f"{name}: {error['msg']}")
        err.print(f"[red]invalid settings[/]: {'; '.join(problems)}")
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - e.g. pydantic-settings' SettingsError
        err.print(f"[red]invalid settings[/]: {exc}")
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error[/]: {message}")
    return typer.Exit(code)


@app.command()
def run() -> None:
    """Start all services in one process (embedded broker unless KAFKA_BOOTSTRAP_SERVERS is set)."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> None:
        from services.hub import start_hub

        # Handlers first: a SIGTERM during start-up then means "stop once started", not
        # death half-way through.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        running = await start_hub(settings)
        where = "embedded broker" if running.embedded else "Kafka"
        err.print(
            f"Schakel is running: {where} at [cyan]{running.bootstrap}[/], store {running.hub.store.dialect}. "
            "Ctrl-C stops."
        )
        if running.embedded:
            err.print(
                f"  publish with: KAFKA_BOOTSTRAP_SERVERS={running.bootstrap} schakel send referral-created FILE"
            )
        try:
            await stop.wait()
            log.info("stopping: finishing the batches in hand, then the outbox")
        finally:
            await running.stop()

    try:
        asyncio.run(main())
    except (ConfigurationError, BrokerError) as exc:
        raise _fail(str(exc)) from None


@app.command()
def init() -> None:
    """Create every topic (fixed and per participant) on KAFKA_BOOTSTRAP_SERVERS and migrate
    the store, then exit: the one-shot step before the hubs start. Idempotent."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.kafka_bootstrap_servers:
        raise _fail(
            "KAFKA_BOOTSTRAP_SERVERS is not set: init creates the topics on a running broker"
        )
    from adapters.broker.admin import cluster_info, ensure_topics
    from services.hub import topic_specs

    hub = _offline_hub(settings)  # validates the participants file and migrates the store
    hub.store.dispose()
    bootstrap = settings.kafka_bootstrap_servers
    specs = topic_specs(settings, hub.participants, hub.topics)

    async def create() -> TopicReport:
        await cluster_info(bootstrap)
        return await ensure_topics(bootstrap, specs)

    try:
        report = asyncio.run(create())
    except BrokerError as exc:
        raise _fail(str(exc)) from None
    for name in report.created:
        console.print(f"created {name}")
    for name, wanted, actual in report.partition_mismatch:
        err.print(
            f"[yellow]warning[/]: {name} has {actual} partitions, not {wanted}; it is kept as it is"
        )
    for name, key, wanted, actual in report.config_too_low:
        err.print(
            f"[yellow]warning[/]: {name} has {key}={actual}, not the {wanted} the hub needs "
            f"(-1: unlimited); raise it: kafka-configs --alter --entity-type topics "
            f"--entity-name {name} --add-config {key}={wanted}"
        )
    console.print(
        f"{len(specs)} topics ready ({len(report.created)} created, "
        f"{len(report.existing)} already there); store {hub.store.dialect} migrated"
    )


@app.command()
def demo(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show the hub's own log lines")
    ] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="keep the hub and its console running afterwards")
    ] = False,
    port: Annotated[
        int | None, typer.Option("--port", help="HTTP port for the console (default: a free one)")
    ] = None,
) -> None:
    """Run the whole journey on the embedded broker and print it; exits 0 when every check holds."""
    configure_logging("INFO" if verbose else "ERROR", "console" if verbose else "auto")
    from services.demo.journey import run_demo

    if _settings().kafka_bootstrap_servers:
        err.print(
            "[dim]KAFKA_BOOTSTRAP_SERVERS is ignored: the demo runs on its own embedded broker[/]"
        )
    try:
        code = asyncio.run(run_demo(console, serve=serve, serve_port=port))
    except (ConfigurationError, BrokerError) as exc:
        raise _fail(str(exc)) from None
    except TimeoutError:
        raise _fail("a demo step did not happen within its time limit", 1) from None
    raise typer.Exit(code)


@app.command()
def send(
    topic: Annotated[
        str,
        typer.Argument(
            help="inbound topic: referral-created, consent-granted, consent-withdrawn, feedback-returned"
        ),
    ],
    file: Annotated[
        Path,
        typer.Argument(help="JSON file with the event", exists=True, dir_okay=False, readable=True),
    ],
) -> None:
    """Publish a file as an event (key taken from its content) to KAFKA_BOOTSTRAP_SERVERS."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    inbound = (
        names.REFERRAL_CREATED,
        names.CONSENT_GRANTED,
        names.CONSENT_WITHDRAWN,
        names.FEEDBACK_RETURNED,
    )
    if topic not in inbound:
        raise _fail(f"{topic!r} is not an inbound topic; use one of {', '.join(inbound)}")
    if not settings.kafka_bootstrap_servers:
        raise _fail(
            "KAFKA_BOOTSTRAP_SERVERS is not set (schakel run prints it when it starts the embedded broker)"
        )
    raw = file.read_bytes()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _fail(f"{file}: not valid JSON: {exc}") from None
    from adapters.fhir.keys import key_for

    try:
        key = key_for(topic, data)
    except SchakelError as exc:
        raise _fail(f"{file}: {exc.detail}") from None

    async def main() -> None:
        from adapters.broker.admin import _admin  # noqa: PLC2701
        from adapters.broker.client import Sender, inbound_headers
        from schemas.topics import Topics

        broker_topic = Topics(settings.topic_prefix).name(topic)
        admin = _admin(settings.kafka_bootstrap_servers or "", 10_000)
        try:
            await admin.start()
            existing = await admin.list_topics()
        except Exception:
            raise BrokerError(
                f"no Kafka broker answers at {settings.kafka_bootstrap_servers}"
            ) from None
        finally:
            await admin.close()
        if broker_topic not in existing:
            raise BrokerError(
                f"topic {broker_topic} does not exist; start the hub (schakel run) first"
            )
        async with Sender(settings.kafka_bootstrap_servers or "") as sender:
            meta = await sender.send(
                broker_topic, raw, key=key.encode(), headers=inbound_headers(topic)
            )
        console.print(
            f"sent to {broker_topic} partition {meta.partition} offset {meta.offset}, key {key}"
        )

    try:
        asyncio.run(main())
    except BrokerError as exc:
        raise _fail(str(exc)) from None


audit_app = typer.Typer(
    help="The audit trail: verify it, follow a referral, a patient's access report.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


def _offline_hub(settings: HubSettings):  # type: ignore[no-untyped-def]
    """The store and participants, without broker or services (for the operator commands)."""
    from adapters.storage.store import Store, shown_url
    from schemas.topics import Topics
    from services.hub import load_configured_participants
    from services.runtime import Hub

    try:
        participants = load_configured_participants(settings)
        store = Store(settings.database_url)
        store.migrate()
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the store's own words, without a traceback
        raise _fail(
            f"cannot open the store {shown_url(settings.database_url)}: {type(exc).__name__}"
        ) from None
    return Hub(
        settings=settings,
        participants=participants,
        store=store,
        topics=Topics(settings.topic_prefix),
    )


_ANCHOR = re.compile(r"([1-9][0-9]{0,17}):([0-9a-f]{64})")


@audit_app.command("verify")
def audit_verify(
    anchors: Annotated[
        list[str] | None,
        typer.Option(
            "--anchor",
            metavar="SEQ:HASH",
            help="SEQ:HASH that an earlier verify printed and you kept apart from the hub: "
            "that entry must still be in the chain with that hash (repeatable)",
        ),
    ] = None,
) -> None:
    """Check the whole hash chain; report the first broken entry. With KAFKA_BOOTSTRAP_SERVERS
    set, also check the store's newest entries against their copies on the audit topic;
    with `--anchor`, against hashes kept elsewhere. Prints the newest entry's SEQ:HASH to
    keep. Exit 1 when broken."""
    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    kept: list[tuple[int, str]] = []
    for anchor in anchors or ():
        matched = _ANCHOR.fullmatch(anchor.strip().lower())
        if matched is None:
            raise _fail(
                "--anchor must be SEQ:HASH, an entry number and its 64 hex digits, "
                "as `schakel audit verify` prints them"
            )
        kept.append((int(matched.group(1)), matched.group(2)))
    from rich.progress import Progress

    from services.audit_reports import published_check, verify_store

    hub = _offline_hub(settings)
    with Progress(transient=True, console=err) as progress:
        task = progress.add_task("verifying", total=None)
        report = verify_store(
            hub.store,
            progress=lambda n: progress.update(task, completed=n),
            participants=hub.participants,
        )
    verdict = report.verdict
    if not verdict.ok:
        console.print(
            f"[red]audit chain broken at entry {verdict.first_broken}[/]: {verdict.problem} "
            f"({verdict.checked} entries before it are intact)"
        )
        raise typer.Exit(1)
    for seq, expected in kept:
        # Each entry's hash covers the one before it: an anchored entry still there with its
        # hash proves the chain up to it is the one that was anchored, not a rebuilt one.
        stored = hub.store.audit_hash(seq)
        if stored != expected:
            what = "is not in the store" if stored is None else "has another hash than its anchor"
            console.print(
                f"[red]audit chain broken[/]: entry {seq} {what} (entries removed, or the "
                "chain rebuilt)"
            )
            raise typer.Exit(1)
    anchor = (
        "not compared with the audit topic (KAFKA_BOOTSTRAP_SERVERS is not set), so a chain "
        "removed or rebuilt as a whole would go unnoticed"
    )
    if settings.kafka_bootstrap_servers:
        bootstrap = settings.kafka_bootstrap_servers
        try:
            newest, problem = asyncio.run(
                published_check(hub.store, verdict.checked, bootstrap, hub.topics.audit)
            )
        except KafkaError:
            raise _fail(
                f"no Kafka broker answers at {bootstrap} (unset KAFKA_BOOTSTRAP_SERVERS to "
                "check the store alone)"
            ) from None
        if problem:
            console.print(f"[red]audit chain broken[/]: {problem}")
            raise typer.Exit(1)
        anchor = (
            f"its entry {newest} matches its copy on the audit topic"
            if newest
            else "nothing on the audit topic yet to compare with"
        )
    if kept:
        anchor += f"; {len(kept)} anchor(s) match"
    console.print(
        f"[green]audit chain intact[/]: {verdict.checked} entries in {report.seconds:.2f} s "
        f"({report.rate:,.0f} entries/s); {anchor}"
    )
    if verdict.checked:
        newest = hub.store.audit_hash(verdict.checked)
        console.print(
            f"anchor to keep apart from the hub: {verdict.checked}:{newest} "
            "(a later `schakel audit verify --anchor` checks the chain still holds it)",
            soft_wrap=True,
        )


@audit_app.command("trail")
def audit_trail(
    referral_id: Annotated[str, typer.Argument(help="the referral id (ServiceRequest identifier)")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for machines")] = False,
) -> None:
    """Every party that received data about a referral: when, what kind, on which consent."""
    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    from rich.table import Table

    from services.audit_log import record_operator_action
    from services.audit_reports import referral_trail

    hub = _offline_hub(settings)
    lines = referral_trail(hub.store, referral_id)
    record_operator_action(  # who saw what about this client is itself about the client
        hub,
        "read",
        f"audit trail: {len(lines)} entries",
        referral_id=referral_id[:64],
        bsn=hub.store.patient_of_referral(referral_id[:64]),
        data=("audit-trail",),
    )
    if as_json:
        for line in lines:
            sys.stdout.write(orjson.dumps(line.as_dict()).decode() + "\n")
        return
    if not lines:
        console.print(f"no audit entries for referral {referral_id}")
        return
    table = Table(title=f"Audit trail of referral {referral_id}")
    for column in ("#", "when (UTC)", "what", "by", "to", "data", "consent", "outcome"):
        table.add_column(column)
    names = hub.participants.by_id
    for line in lines:
        table.add_row(
            str(line.seq),
            line.at.strftime("%Y-%m-%d %H:%M:%S"),
            line.what,
            names[line.by].name if line.by in names else line.by,
            names[line.recipient].name if line.recipient in names else (line.recipient or "—"),
            line.data or "—",
            line.consent_id or "—",
            line.outcome,
        )
    console.print(table)


@audit_app.command("subject-access")
def audit_subject_access(
    bsn: Annotated[str, typer.Argument(help="the patient's BSN (never printed or logged)")],
    out: Annotated[Path, typer.Option("--out", help="where to write the HTML report")] = Path(
        "inzageverzoek.html"
    ),
    asked_by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="the operator making the report, recorded in the audit trail "
            "(default: SCHAKEL_OPERATOR, else your login name)",
        ),
    ] = None,
) -> None:
    """Write the AVG art. 15 report for one patient (Dutch and English HTML); audited."""
    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    from schemas.access import OPERATOR_NAME, OPERATOR_NAME_RULE, operator_actor
    from schemas.identifiers import bsn_valid
    from services.audit_reports import patient_entries, subject_access_html

    if not bsn_valid(bsn):
        raise _fail("that is not a valid BSN (9 digits, 11-proef)")
    if asked_by is not None and not OPERATOR_NAME.fullmatch(asked_by):
        raise _fail(f"--by {OPERATOR_NAME_RULE}")
    actor = operator_actor(asked_by) if asked_by else settings.operator_actor
    # Checked before the request is recorded, so that the trail holds no report never made.
    folder = out.parent
    if out.is_dir():
        raise _fail(f"--out {out} is a folder; name the report's file")
    if not folder.is_dir():
        raise _fail(f"--out {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise _fail(f"--out {out} cannot be written")
    hub = _offline_hub(settings)
    lines = patient_entries(hub, bsn, actor)
    try:
        out.write_text(subject_access_html(lines, hub.participants, hub.clock()), "utf-8")
    except OSError as exc:
        raise _fail(
            f"could not write {out} ({exc.strerror}); the request is in the audit trail"
        ) from None
    console.print(f"wrote {out} ({len(lines)} entries); the request itself is in the audit trail")


def _moment(value: str | None, what: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(f"{what} must be an RFC 3339 moment, e.g. 2026-12-01T09:00:00+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def replay(
    into: Annotated[
        str, typer.Option("--into", help="store URL to rebuild into (must not be the live one)")
    ],
    topics: Annotated[
        str, typer.Option("--topics", help="comma-separated inbound topics")
    ] = "referral-created,consent-granted,consent-withdrawn,feedback-returned",
    from_offset: Annotated[
        int | None,
        typer.Option("--from-offset", min=0, help="start at this offset in every partition"),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="start at this moment (RFC 3339)")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="stop after this moment (RFC 3339)")
    ] = None,
    no_compare: Annotated[bool, typer.Option("--no-compare", help="rebuild only")] = False,
) -> None:
    """Rebuild registration and consent state from the topics into a separate store and compare
    it with the live one. Publishes nothing to anyone; the run is audited."""
    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from sqlalchemy.exc import ArgumentError

    from adapters.storage.store import Store, normalise_url, same_store, shown_url
    from services.replay import REPLAYABLE, ReplayRange
    from services.replay import replay as run_replay

    if not settings.kafka_bootstrap_servers:
        raise _fail(
            "KAFKA_BOOTSTRAP_SERVERS is not set: replay reads the topics of a running broker"
        )
    chosen = tuple(t.strip() for t in topics.split(",") if t.strip())
    unknown = [t for t in chosen if t not in REPLAYABLE]
    if not chosen:
        raise _fail(f"--topics names no topic; choose from {', '.join(REPLAYABLE)}")
    if unknown:
        raise _fail(f"cannot replay {', '.join(unknown)}; choose from {', '.join(REPLAYABLE)}")
    span = ReplayRange(
        topics=chosen,
        from_offset=from_offset,
        since=_moment(since, "--since"),
        until=_moment(until, "--until"),
    )
    try:
        into_url = normalise_url(into)
    except ArgumentError:
        raise _fail(f"--into {into!r} is not a store URL (e.g. sqlite:///rebuilt.db)") from None
    hub = _offline_hub(settings)  # a live store URL that does not parse fails here
    if same_store(into_url, hub.store.url):
        raise _fail("--into is the live store; replay into a separate one")
    try:
        target = Store(into)
        target.migrate()
    except Exception as exc:  # noqa: BLE001 - the store's own words, without a traceback
        hub.store.dispose()
        raise _fail(f"cannot open the store {shown_url(into)}: {type(exc).__name__}") from None

    async def main():  # type: ignore[no-untyped-def]
        columns = (
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]:>8.0f} rec/s"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=err) as bar:
            task = bar.add_task("replay", total=None, rate=0.0)
            loop = asyncio.get_running_loop()
            start = loop.time()

            def progress(done: int, total: int) -> None:
                elapsed = max(loop.time() - start, 1e-6)
                bar.update(task, completed=done, total=total, rate=done / elapsed)

            return await run_replay(
                hub,
                settings.kafka_bootstrap_servers or "",
                target,
                span,
                operator=settings.operator_actor,
                progress=progress,
                compare_with_live=not no_compare,
            )

    try:
        result = asyncio.run(main())
    except BrokerError as exc:
        raise _fail(str(exc)) from None
    except KafkaConnectionError:
        raise _fail(f"no Kafka broker answers at {settings.kafka_bootstrap_servers}") from None
    except KafkaError as exc:
        raise _fail(
            f"the broker at {settings.kafka_bootstrap_servers} failed: {type(exc).__name__}"
        ) from None
    console.print(
        f"replayed {result.records} records in {result.seconds:.1f} s ({result.rate:,.0f} records/s): "
        + ", ".join(f"{k} {v}" for k, v in result.per_topic.items())
    )
    if no_compare:
        return
    if result.identical:
        console.print("[green]rebuilt state is identical to the live store[/]")
        return
    console.print(f"[red]{len(result.differences)} differences[/] with the live store:")
    for line in result.differences:
        console.print(f"  {line}")
    raise typer.Exit(1)


dlq_app = typer.Typer(
    help="Dead letters: list them, show one, send one through the hub again.", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(
    reason: Annotated[str | None, typer.Option("--reason", help="only this reason")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
) -> None:
    """Dead letters, newest first: id, reason, detail, where they came from."""
    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    from rich.table import Table

    from adapters.storage.views import Views

    hub = _offline_hub(settings)
    letters = Views(hub.store).dead_letters(hub.topics.dead_letter, limit, reason or None)
    if not letters:
        console.print(f"no dead letters with reason {reason}" if reason else "no dead letters")
        return
    table = Table(title="Dead letters")
    for column in ("id", "when (UTC)", "reason", "detail", "from", "key"):
        table.add_column(column)
    for d in letters:
        table.add_row(
            d.message_id,
            d.at.strftime("%Y-%m-%d %H:%M:%S"),
            d.reason,
            d.detail,
            f"{d.original_topic}/{d.original_partition}/{d.original_offset}",
            d.key or "—",
        )
    console.print(table)


@dlq_app.command("show")
def dlq_show(
    message_id: Annotated[str, typer.Argument(help="the dead letter's id (from dlq list)")],
    body: Annotated[
        bool, typer.Option("--body", help="also print the original bytes (audited)")
    ] = False,
) -> None:
    """One dead letter: its headers and, with --body, the original message."""
    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    from services.dead_letters import find_dead_letter, record_dlq_access

    hub = _offline_hub(settings)
    letter = find_dead_letter(hub, message_id)
    if letter is None:
        raise _fail(f"no dead letter {message_id}")
    for key, value in letter.headers:
        shown = "(binary)" if value is None else value.decode("utf-8", "replace")
        console.print(f"{key}: {shown}")
    if body:
        record_dlq_access(hub, letter, "dlq-show")
        sys.stdout.write((letter.value or b"").decode("utf-8", "replace") + "\n")


@dlq_app.command("reprocess")
def dlq_reprocess(
    message_id: Annotated[str, typer.Argument(help="the dead letter's id (from dlq list)")],
    file: Annotated[
        Path | None,
        typer.Option("--file", exists=True, dir_okay=False, help="send this fixed message instead"),
    ] = None,
) -> None:
    """Send a dead letter (or its fixed version) through the hub again, on its original topic,
    with lineage headers. A dead letter is re-driven once; the hub processes it once."""
    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    from services.dead_letters import ReprocessError, find_dead_letter, reprocess

    if not settings.kafka_bootstrap_servers:
        raise _fail("KAFKA_BOOTSTRAP_SERVERS is not set: reprocessing publishes to the broker")
    hub = _offline_hub(settings)
    letter = find_dead_letter(hub, message_id)
    if letter is None:
        raise _fail(f"no dead letter {message_id}")
    try:
        topic, reprocess_id = asyncio.run(
            reprocess(
                hub, settings.kafka_bootstrap_servers, letter, file.read_bytes() if file else None
            )
        )
    except (ReprocessError, BrokerError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"sent to {topic} again (reprocess id {reprocess_id})")


outbox_app = typer.Typer(
    help="The outbox: messages the hub has written for its recipients.", no_args_is_help=True
)
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("refused")
def outbox_refused(
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
) -> None:
    """Messages the broker refused as too large, oldest first: not sent. Raise the topic's
    max.message.bytes (or the broker's), then `schakel outbox requeue --refused`."""
    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    from rich.table import Table

    hub = _offline_hub(settings)
    refused = hub.store.refused_outbox(limit)
    if not refused:
        console.print("no refused messages: everything in the outbox was sent or is pending")
        return
    table = Table(title="Refused as too large, not sent")
    for column in ("row", "message id", "topic", "bytes", "refused at (UTC)"):
        table.add_column(column)
    for m in refused:
        table.add_row(
            str(m.row_id),
            m.message_id,
            m.topic,
            f"{m.size:,}",
            m.refused_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)


@outbox_app.command("requeue")
def outbox_requeue(
    since: Annotated[
        str | None,
        typer.Option("--since", help="RFC 3339 time: messages published from then on"),
    ] = None,
    refused: Annotated[
        bool,
        typer.Option(
            "--refused",
            help="the messages the broker refused as too large (`schakel outbox refused`)",
        ),
    ] = False,
    topic: Annotated[
        str | None, typer.Option("--topic", help="only this topic (as on the broker)")
    ] = None,
) -> None:
    """Send published messages again, e.g. after the broker lost them (the hub's log names
    the topic and time), or those it refused as too large once their topic takes them
    (--refused; with --since too, only those refused since then). They keep their ce_id,
    so a recipient that has one already can tell; a running hub's relay sends them within
    a second, a starting one first skips those the broker still holds."""
    from datetime import UTC, datetime

    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    if since is None and not refused:
        raise _fail("say what to send again: --since MOMENT, --refused, or both")
    moment: datetime | None = None
    if since is not None:
        try:
            moment = datetime.fromisoformat(since)
        except ValueError:
            raise _fail(f"--since {since!r} is not an RFC 3339 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    from services.audit_log import record_operator_action
    from services.outputs import disclosure_topics

    hub = _offline_hub(settings)
    count, withheld = hub.store.requeue_published(
        moment, topic, disclosure_topics(hub), refused=refused
    )
    which = " refused as too large" if refused else ""
    where = f" on {topic}" if topic else ""
    when = f" published since {moment.isoformat()}" if moment else ""
    record_operator_action(
        hub,
        "outbox-requeue",
        f"{count} message(s){which}{where}{when} queued again; "
        f"{withheld} withheld (consent withdrawn since)",
    )
    console.print(f"{count} message(s){which}{where}{when} queued again")
    if withheld:
        console.print(
            f"{withheld} release(s) or update(s) not queued again: their consent was "
            "withdrawn since they were sent"
        )


def main() -> None:
    """Bad input and bad settings end in a one-line error (the commands catch those); a bug
    ends in one redacted line too, with the traceback behind SCHAKEL_DEBUG=1."""
    try:
        with contextlib.suppress(BrokenPipeError):
            app()
    except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - last line of defence
        if os.environ.get("SCHAKEL_DEBUG") == "1":
            raise
        err.print(f"[red]internal error[/]: {type(exc).__name__}: {redact(str(exc))[:300]}")
        err.print("[dim]set SCHAKEL_DEBUG=1 to see the traceback[/]")
        sys.exit(70)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
