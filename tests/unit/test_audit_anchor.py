"""A chain removed or rebuilt as a whole verifies link by link; only a hash kept apart from
the hub tells. `schakel audit verify` prints the newest entry's SEQ:HASH to keep, and
`--anchor SEQ:HASH` checks that entry is still in the chain with that hash."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete
from typer.testing import CliRunner

from adapters.storage import tables as t
from adapters.storage.store import Store
from services.cli import app
from services.settings import DEMO_PARTICIPANTS

REQUEUE = ["outbox", "requeue", "--since", "2026-01-01T00:00:00Z"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": None,  # the store alone
        "SCHAKEL_DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}",
        "SCHAKEL_PARTICIPANTS": str(DEMO_PARTICIPANTS),
        "SCHAKEL_TOPIC_PREFIX": "",
        "SCHAKEL_OPERATOR": "j.devries",
        "COLUMNS": "400",
    }


def _run(args: list[str], env: dict[str, str | None]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env=env)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def _entries(env: dict[str, str | None], n: int) -> None:
    for _ in range(n):  # each an audited operator action: one chained entry
        assert _run(REQUEUE, env)[0] == 0


def _anchor(output: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith("anchor to keep")]
    return line.split(": ", 1)[1].split()[0]


def test_the_newest_entry_is_printed_to_keep_and_checked_later(
    env: dict[str, str | None],
) -> None:
    _entries(env, 3)
    code, said = _run(["audit", "verify"], env)
    assert code == 0, said
    anchor = _anchor(said)
    store = Store(str(env["SCHAKEL_DATABASE_URL"]))
    assert anchor == f"3:{store.audit_hash(3)}"
    store.dispose()

    _entries(env, 2)  # the chain grows: the anchor still holds
    code, said = _run(["audit", "verify", "--anchor", anchor], env)
    assert code == 0, said
    assert "1 anchor(s) match" in said
    assert _anchor(said).startswith("5:")


def test_a_chain_rebuilt_as_a_whole_is_told_by_its_anchor(env: dict[str, str | None]) -> None:
    _entries(env, 3)
    anchor = _anchor(_run(["audit", "verify"], env)[1])
    store = Store(str(env["SCHAKEL_DATABASE_URL"]))
    store.run(lambda tx: tx.conn.execute(delete(t.audit_log)))  # removed, then made again
    store.dispose()
    _entries(env, 3)
    assert _run(["audit", "verify"], env)[0] == 0, "link by link the new chain is intact"

    code, said = _run(["audit", "verify", "--anchor", anchor], env)
    assert code == 1
    assert "entry 3 has another hash than its anchor" in " ".join(said.split())


def test_entries_removed_from_the_end_are_told_by_an_anchor(env: dict[str, str | None]) -> None:
    _entries(env, 3)
    anchor = _anchor(_run(["audit", "verify"], env)[1])
    store = Store(str(env["SCHAKEL_DATABASE_URL"]))
    store.run(lambda tx: tx.conn.execute(delete(t.audit_log).where(t.audit_log.c.seq == 3)))
    store.dispose()
    assert _run(["audit", "verify"], env)[0] == 0, "what is left is intact link by link"
    code, said = _run(["audit", "verify", "--anchor", anchor], env)
    assert code == 1
    assert "entry 3 is not in the store" in " ".join(said.split())


@pytest.mark.parametrize("anchor", ["3", "3:abc", "0:" + "a" * 64, "x:" + "a" * 64])
def test_an_anchor_that_is_no_seq_and_hash_is_refused(
    env: dict[str, str | None], anchor: str
) -> None:
    code, said = _run(["audit", "verify", "--anchor", anchor], env)
    assert code == 2
    assert "--anchor must be SEQ:HASH" in said
