"""The `schakel` command's answers to bad input and bad settings: one line and exit status 2,
before anything starts, never "internal error" (the last line of defence, exit 70) and never
a stack trace. No broker is needed: every case is refused before one would be reached,
except one that names a port where nothing listens."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from adapters.broker.dead_letter import dead_letter
from adapters.fhir.keys import key_for
from adapters.storage.store import Store
from schemas import topics
from schemas.errors import InvalidBsnError, InvalidJsonError
from schemas.messages import InboundRecord
from services.audit_reports import verify_store
from services.cli import app
from services.settings import DEMO_PARTICIPANTS

NOBODY = "127.0.0.1:1"  # nothing listens there


def _digest(participant_id: str) -> str:
    """The SHA-256 of a demo participant's token (as in the demo participants file)."""
    return hashlib.sha256(f"demo-token-{participant_id}".encode()).hexdigest()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": NOBODY,
        "SCHAKEL_DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}",
        "SCHAKEL_PARTICIPANTS": str(DEMO_PARTICIPANTS),
        "SCHAKEL_TOPIC_PREFIX": "",
        "COLUMNS": "250",
    }


def refused(args: list[str], env: dict[str, str]) -> str:
    """The command's last output line, after checking it ended with status 2 on its own."""
    result = CliRunner().invoke(app, args, env=env)
    assert not (result.exception and not isinstance(result.exception, SystemExit)), repr(
        result.exception
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.strip().splitlines()[-1].split())


def write(path: Path, data: object) -> str:
    path.write_bytes(orjson.dumps(data))
    return str(path)


@pytest.mark.parametrize(
    ("topic", "event", "message"),
    [
        (
            "referral-created",
            {"entry": [1, "x", {"resource": []}]},
            "no ServiceRequest.identifier[0].value to use as key",
        ),
        (
            "referral-created",
            {"entry": [{"resource": {"resourceType": "ServiceRequest", "identifier": {}}}]},
            "no ServiceRequest.identifier[0].value to use as key",
        ),
        (
            "consent-granted",
            {"resourceType": "Consent", "provision": [{"data": []}]},
            "no referral reference, Consent.id or Consent.identifier[0].value to use as key",
        ),
        (
            "feedback-returned",
            ["not", "an", "object"],
            "no referral_id to use as key",
        ),
    ],
)
def test_send_names_what_is_missing_in_an_event_of_the_wrong_shape(
    topic: str, event: object, message: str, env: dict[str, str], tmp_path: Path
) -> None:
    line = refused(["send", topic, write(tmp_path / "event.json", event)], env)
    assert line.endswith(message)


def test_a_consent_is_keyed_as_the_hub_reads_it() -> None:
    """The hub takes a Consent's id from `id`, else from its first identifier (CONTRACT §2:
    a consent naming no referral is keyed by its Consent id)."""
    by_identifier = {"resourceType": "Consent", "identifier": [{"value": "C-9"}]}
    assert key_for(topics.CONSENT_GRANTED, by_identifier) == "C-9"
    assert key_for(topics.CONSENT_WITHDRAWN, {**by_identifier, "id": "C-1"}) == "C-1"
    naming = {"data": [{"reference": {"identifier": {"value": "VERW-1"}}}]}
    assert key_for(topics.CONSENT_GRANTED, {**by_identifier, "provision": naming}) == "VERW-1"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SCHAKEL_LOG_LEVEL", "bogus", "SCHAKEL_LOG_LEVEL: Value error, not a log level"),
        ("SCHAKEL_INTAKE_MAX_RECORDS", "0", "SCHAKEL_INTAKE_MAX_RECORDS: Input should be greater"),
        (
            "SCHAKEL_CONSENT_MAX_RECORDS",
            "x",
            "SCHAKEL_CONSENT_MAX_RECORDS: Input should be a valid",
        ),
        ("SCHAKEL_TIMERS_INTERVAL_SECONDS", "abc", "SCHAKEL_TIMERS_INTERVAL_SECONDS: Input"),
        ("SCHAKEL_TOPIC_PARTITIONS", "abc", "SCHAKEL_TOPIC_PARTITIONS: Input should be a valid"),
        (
            "SCHAKEL_OPERATOR_TOKEN_SHA256",
            "the-token-itself",
            "SCHAKEL_OPERATOR_TOKEN_SHA256: Value",
        ),
        ("SCHAKEL_OPERATOR", "j de vries", "SCHAKEL_OPERATOR: Value error, must name one"),
        (
            "SCHAKEL_OPERATOR_TOKENS_SHA256",
            "j.devries=the-token-itself",
            "SCHAKEL_OPERATOR_TOKENS_SHA256: Value error, entry 1 (j.devries): the SHA-256",
        ),
        (
            "SCHAKEL_OPERATOR_TOKENS_SHA256",
            f"j.devries={'ab' * 32},j de vries={'cd' * 32}",
            "SCHAKEL_OPERATOR_TOKENS_SHA256: Value error, entry 2 must be name=",
        ),
        (
            "SCHAKEL_OPERATOR_TOKENS_SHA256",
            f"j.devries={'ab' * 32},j.devries={'cd' * 32}",
            "SCHAKEL_OPERATOR_TOKENS_SHA256: Value error, entry 2: j.devries is named twice",
        ),
    ],
)
@pytest.mark.parametrize("command", [["run"], ["demo"], ["init"]])
def test_bad_settings_are_refused_before_anything_starts(
    command: list[str], variable: str, value: str, message: str, env: dict[str, str]
) -> None:
    line = refused(command, {**env, variable: value})
    assert line.startswith(f"invalid settings: {message}")
    assert value not in line.removeprefix(f"invalid settings: {variable}")


def test_a_log_level_in_lower_case_is_taken() -> None:
    from services.settings import HubSettings

    assert HubSettings(log_level=" debug ").log_level == "DEBUG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--into", "nonsense"], "error: --into 'nonsense' is not a store URL"),
        (["--into", "bogus://x"], "error: cannot open the store bogus://x: NoSuchModuleError"),
        (
            ["--into", "postgresql://someone:s3cret@127.0.0.1:1/nowhere"],
            "error: cannot open the store postgresql://someone:***@127.0.0.1:1/nowhere",
        ),
        (["--topics", " , "], "error: --topics names no topic"),
        (["--topics", "audit"], "error: cannot replay audit; choose from"),
        (["--since", "yesterday"], "error: --since must be an RFC 3339 moment"),
        ([], f"error: no Kafka broker answers at {NOBODY}"),
    ],
)
def test_replay_refuses_what_it_cannot_use(
    args: list[str], message: str, env: dict[str, str], tmp_path: Path
) -> None:
    into = ["--into", f"sqlite:///{tmp_path / 'rebuilt.db'}"]
    line = refused(["replay", *into, *args], env)
    assert line.startswith(message), line
    assert "s3cret" not in line


def test_replay_refuses_a_negative_offset(env: dict[str, str], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["replay", "--into", f"sqlite:///{tmp_path / 'r.db'}", "--from-offset", "-5"], env=env
    )
    assert result.exit_code == 2
    assert "Invalid value for '--from-offset'" in result.output


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("missing/report.html", "the folder {tmp}/missing does not exist"),
        (".", "is a folder; name the report's file"),
    ],
)
def test_subject_access_checks_its_file_before_the_request_is_recorded(
    out: str, message: str, env: dict[str, str], tmp_path: Path
) -> None:
    line = refused(["audit", "subject-access", "999999990", "--out", str(tmp_path / out)], {**env})
    assert line.endswith(message.format(tmp=tmp_path)), line
    store = Store(env["SCHAKEL_DATABASE_URL"])
    store.migrate()
    assert verify_store(store).verdict.checked == 0  # no request recorded for no report
    store.dispose()


def test_dlq_list_finds_a_reason_beyond_the_newest_page(env: dict[str, str]) -> None:
    """The reason is a header, not a column: the filter must read past the newest rows."""
    store = Store(env["SCHAKEL_DATABASE_URL"])
    store.migrate()
    letters = [
        dead_letter(
            InboundRecord(topics.REFERRAL_CREATED, 0, offset, b"key-%d" % offset, b"x"),
            InvalidBsnError("fails the 11-proef") if offset < 3 else InvalidJsonError("not JSON"),
            topics.DEAD_LETTER,
        )
        for offset in range(1_200)
    ]

    def add(tx) -> None:  # type: ignore[no-untyped-def]
        for letter in letters:
            tx.add_outbox(letter)

    store.run(add)
    store.dispose()
    result = CliRunner().invoke(app, ["dlq", "list", "--reason", "invalid-bsn"], env=env)
    assert result.exit_code == 0, result.output
    assert {f"key-{i}" for i in range(3)} <= set(result.output.split())
    assert "key-3 " not in result.output and "invalid-json" not in result.output
    result = CliRunner().invoke(app, ["dlq", "list", "--limit", "1000"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.count("invalid-json") == 1_000
    result = CliRunner().invoke(app, ["dlq", "list", "--reason", "no-recipient"], env=env)
    assert result.output.strip() == "no dead letters with reason no-recipient"


def test_audit_verify_names_a_broker_it_cannot_reach(env: dict[str, str]) -> None:
    line = refused(["audit", "verify"], env)
    assert line == (
        f"error: no Kafka broker answers at {NOBODY} (unset KAFKA_BOOTSTRAP_SERVERS to check "
        "the store alone)"
    )
    alone = CliRunner().invoke(app, ["audit", "verify"], env={**env, "KAFKA_BOOTSTRAP_SERVERS": ""})
    assert alone.exit_code == 0, alone.output
    assert "not compared with the audit topic" in alone.output


def test_a_bug_ends_in_one_line_even_as_a_cancelled_task(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """asyncio's CancelledError is no Exception: the last line of defence catches it too."""
    import asyncio

    from services import cli

    def cancelled() -> None:
        raise asyncio.CancelledError

    monkeypatch.setattr(cli, "app", cancelled)
    monkeypatch.delenv("SCHAKEL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 70
    err = capsys.readouterr().err
    assert "internal error: CancelledError" in err and "Traceback" not in err


def test_replay_refuses_the_live_store_however_it_is_spelled(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path from here and an absolute one, or a link, name the same file: the
    replay would write into the live store, whose relay then publishes what it wrote."""
    from adapters.storage.store import same_store

    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.db").symlink_to(tmp_path / "live.db")
    live = env["SCHAKEL_DATABASE_URL"]  # absolute
    for into in ("sqlite:///live.db", f"sqlite:///{tmp_path}/./live.db", "sqlite:///link.db"):
        assert refused(["replay", "--into", into], env).endswith(
            "--into is the live store; replay into a separate one"
        ), into
        assert same_store(into, live)
    assert not same_store("sqlite:///other.db", live)
    pg = "postgresql://postgres@127.0.0.1:5432/test"
    assert same_store(pg, "postgresql+psycopg://other@127.0.0.1/test")
    assert not same_store(pg, "postgresql://postgres@127.0.0.1:5432/elsewhere")


def test_a_re_drive_that_could_not_be_sent_can_be_tried_again(env: dict[str, str]) -> None:
    store = Store(env["SCHAKEL_DATABASE_URL"])
    store.migrate()
    record = InboundRecord(topics.REFERRAL_CREATED, 0, 7, b"VERW-7", b"{}")
    letter = dead_letter(record, InvalidJsonError("not a Bundle"), topics.DEAD_LETTER)
    store.run(lambda tx: tx.add_outbox(letter))
    store.dispose()
    for _attempt in range(2):  # the broker is not there: not sent, so not spent either
        line = refused(["dlq", "reprocess", letter.message_id], env)
        assert line.startswith("error: cannot connect to Kafka"), line


def test_reading_a_dead_letters_body_is_audited_with_its_patient(env: dict[str, str]) -> None:
    """So that the patient's access report names the operator's read (CONTRACT §7)."""
    from schemas.errors import NoRecipientError
    from services.audit_log import pseudonym
    from services.demo.samples import DEMO_BSN, referral_bundle, to_bytes

    store = Store(env["SCHAKEL_DATABASE_URL"])
    store.migrate()
    body = to_bytes(referral_bundle("VERW-8", district="Atlantis"))
    record = InboundRecord(topics.REFERRAL_CREATED, 0, 8, b"VERW-8", body)
    letter = dead_letter(record, NoRecipientError("no welfare organisation"), topics.DEAD_LETTER)
    store.run(lambda tx: tx.add_outbox(letter))
    shown = CliRunner().invoke(app, ["dlq", "show", letter.message_id, "--body"], env=env)
    assert shown.exit_code == 0, shown.output
    (entry,) = [e for e in store.audit_entries() if e.action == "dlq-show"]
    assert entry.patient is not None
    assert entry.patient == store.run(lambda tx: pseudonym(tx, DEMO_BSN))
    store.dispose()


def test_outbox_requeue_is_an_audited_operator_action(env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app,
        ["outbox", "requeue", "--since", "2026-01-01T00:00:00Z"],
        env={**env, "SCHAKEL_OPERATOR": "j.devries"},
    )
    assert result.exit_code == 0, result.output
    assert "0 message(s) published since 2026-01-01T00:00:00+00:00 queued again" in result.output
    store = Store(env["SCHAKEL_DATABASE_URL"])
    [entry] = store.audit_entries()
    store.dispose()
    assert (entry.action, entry.actor) == ("outbox-requeue", "operator:j.devries")
    assert "0 message(s) published since 2026-01-01" in entry.canonical


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: say what to send again: --since MOMENT, --refused, or both"),
        (["--topic", "t"], "error: say what to send again"),
        (["--since", "yesterday"], "error: --since 'yesterday' is not an RFC 3339 time"),
    ],
)
def test_outbox_requeue_refuses_what_it_cannot_use(
    args: list[str], message: str, env: dict[str, str]
) -> None:
    line = refused(["outbox", "requeue", *args], env)
    assert line.startswith(message), line


def test_outbox_refused_lists_them_and_requeue_refused_queues_them(env: dict[str, str]) -> None:
    from schemas.messages import OutboundMessage

    store = Store(env["SCHAKEL_DATABASE_URL"])
    store.migrate()
    big = OutboundMessage("m-big", "welfare.x.referrals", b"VERW-9", b"x" * 2048, ())
    store.run(lambda tx: tx.add_outbox(big))
    [row] = store.pending_outbox()
    store.mark_published([(row.id, None, None)], refused={row.id})
    listed = CliRunner().invoke(app, ["outbox", "refused"], env=env)
    again = CliRunner().invoke(
        app, ["outbox", "requeue", "--refused"], env={**env, "SCHAKEL_OPERATOR": "j.devries"}
    )
    empty = CliRunner().invoke(app, ["outbox", "refused"], env=env)
    pending = store.pending_outbox()
    [entry] = store.audit_entries()
    store.dispose()
    assert listed.exit_code == 0, listed.output
    [line] = [x for x in listed.output.splitlines() if "m-big" in x]
    assert "welfare.x.referrals" in line and "2,048" in line
    assert again.exit_code == 0, again.output
    assert "1 message(s) refused as too large queued again" in again.output
    assert [r.message.message_id for r in pending if r.message.topic == big.topic] == ["m-big"]
    assert "no refused messages" in empty.output
    assert (entry.action, entry.actor) == ("outbox-requeue", "operator:j.devries")


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"SCHAKEL_OPERATOR_TOKENS_SHA256": f"j.devries={_digest('praktijk-de-linde')}"},
            "SCHAKEL_OPERATOR_TOKENS_SHA256: j.devries's token is the same as participant "
            "praktijk-de-linde's",
        ),
        (
            {"SCHAKEL_OPERATOR_TOKEN_SHA256": _digest("gemeente-hoogeveen")},
            "SCHAKEL_OPERATOR_TOKEN_SHA256: the same token as participant gemeente-hoogeveen's",
        ),
        (
            {
                "SCHAKEL_OPERATOR_TOKEN_SHA256": "ab" * 32,
                "SCHAKEL_OPERATOR_TOKENS_SHA256": f"k.smit={'cd' * 32}, j.devries={'AB' * 32}",
            },
            "SCHAKEL_OPERATOR_TOKENS_SHA256: j.devries's token is the same as the shared "
            "operator token's",
        ),
    ],
)
def test_a_token_that_would_name_two_viewers_is_refused(
    variables: dict[str, str], message: str, env: dict[str, str]
) -> None:
    """A bearer token must name one viewer: an operator's token that is also a participant's
    or the shared one would sign in as either."""
    assert refused(["audit", "trail", "VERW-1"], {**env, **variables}) == f"error: {message}"
