"""NEN 7513 asks who acted: an operator command records the person who ran it
(`SCHAKEL_OPERATOR`, else the login name of the account running it) as `operator:<name>`,
in the audit trail and in the chained AuditEvent; the patient's own access report names
the role, not the person."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from adapters.storage.store import Store
from schemas import topics as names
from schemas.access import Viewer
from schemas.messages import InboundRecord
from schemas.participants import Participants
from services.api.auth import Authenticator
from services.audit_reports import verify_store
from services.cli import app
from services.demo.samples import fictional_bsn, referral_bundle, to_bytes
from services.intake.handlers import intake_pipeline
from services.settings import DEMO_PARTICIPANTS
from tests.conftest import hub_on

BSN = fictional_bsn(52)
REQUEUE = ["outbox", "requeue", "--since", "2026-01-01T00:00:00Z"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "SCHAKEL_DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}",
        "SCHAKEL_PARTICIPANTS": str(DEMO_PARTICIPANTS),
        "SCHAKEL_TOPIC_PREFIX": "",
        "SCHAKEL_OPERATOR": None,
        "COLUMNS": "250",
    }


def _run(args: list[str], env: dict[str, str | None]) -> str:
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    return result.output


def _entries(env: dict[str, str | None]) -> list:  # type: ignore[type-arg]
    store = Store(str(env["SCHAKEL_DATABASE_URL"]))
    try:
        store.migrate()  # a command refused before it opened the store left none
        return store.audit_entries()
    finally:
        store.dispose()


def test_the_operator_named_in_the_settings_is_the_actor(env: dict[str, str | None]) -> None:
    _run(REQUEUE, {**env, "SCHAKEL_OPERATOR": " j.devries@example.org "})
    [entry] = _entries(env)
    assert entry.actor == "operator:j.devries@example.org"
    requestor = orjson.loads(entry.canonical)["agent"][0]
    assert requestor["who"]["identifier"]["value"] == "operator:j.devries@example.org"
    assert requestor["role"] == [{"text": "Beheerder"}]
    store = Store(str(env["SCHAKEL_DATABASE_URL"]))
    verdict = verify_store(store).verdict
    store.dispose()
    assert (verdict.ok, verdict.checked) == (True, 1), "its columns say what its event says"


@pytest.mark.parametrize("setting", [None, "", "  "])
def test_without_the_setting_the_login_name_is_the_actor(
    env: dict[str, str | None], setting: str | None
) -> None:
    login = {"LOGNAME": "a.bakker", "USER": "a.bakker", "LNAME": None, "USERNAME": None}
    _run(REQUEUE, {**env, **login, "SCHAKEL_OPERATOR": setting})
    assert [e.actor for e in _entries(env)] == ["operator:a.bakker"]


def test_a_login_name_that_names_nobody_usable_leaves_the_role(
    env: dict[str, str | None],
) -> None:
    login = {"LOGNAME": "DOMEIN\\a bakker", "LNAME": None, "USERNAME": None, "USER": None}
    _run(REQUEUE, {**env, **login})
    assert [e.actor for e in _entries(env)] == ["operator"]


@pytest.mark.parametrize("by", ["k smit", "-k.smit", "k" * 32, "k;smit"])
def test_a_report_asked_by_no_single_person_is_refused_before_it_is_recorded(
    env: dict[str, str | None], tmp_path: Path, by: str
) -> None:
    result = CliRunner().invoke(
        app,
        ["audit", "subject-access", BSN, "--out", str(tmp_path / "r.html"), "--by", by],
        env=env,
    )
    assert result.exit_code == 2, result.output
    assert "--by must name one person" in result.output
    assert not (tmp_path / "r.html").exists()
    assert _entries(env) == []


def test_the_patients_report_names_the_role_and_the_trail_the_person(
    env: dict[str, str | None], tmp_path: Path
) -> None:
    hub = hub_on(str(env["SCHAKEL_DATABASE_URL"]))
    bundle = to_bytes(referral_bundle("VERW-OP-1", bsn=BSN))
    intake_pipeline(hub).process(
        [InboundRecord(names.REFERRAL_CREATED, 0, 0, b"VERW-OP-1", bundle, (), 1)]
    )
    hub.store.dispose()
    _run(["audit", "trail", "VERW-OP-1"], {**env, "SCHAKEL_OPERATOR": "j.devries"})
    report = tmp_path / "inzage.html"
    _run(
        ["audit", "subject-access", BSN, "--out", str(report), "--by", "k.smit"],
        {**env, "SCHAKEL_OPERATOR": "j.devries"},
    )

    actors = {e.action: e.actor for e in _entries(env)}
    assert actors["read"] == "operator:j.devries", "the trail's read, by the setting"
    assert actors["subject-access"] == "operator:k.smit", "--by names who made the report"
    page = report.read_text("utf-8")
    assert "Beheerder / operator" in page
    assert "j.devries" not in page and "k.smit" not in page


def test_a_named_operators_token_signs_in_as_that_person(participants: Participants) -> None:
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    auth = Authenticator(
        participants,
        digest("shared-operator-token"),
        "a-session-secret",
        {"j.devries": digest("token-of-j.devries"), "k.smit": digest("token-of-k.smit")},
    )
    named = auth.from_header("Bearer token-of-j.devries")
    assert named is not None
    assert (named.kind, named.name) == ("operator", "operator:j.devries")
    shared = auth.viewer("shared-operator-token")
    assert shared is not None and (shared.kind, shared.name) == ("operator", "operator")
    assert auth.viewer("token-of-nobody") is None

    session = auth.from_session(auth.session_for(named))
    assert session is not None and session.viewer == named, "a console session keeps the person"
    other = auth.from_session(auth.session_for(Viewer("operator", person="k.smit")))
    assert other is not None and other.viewer.name == "operator:k.smit"
