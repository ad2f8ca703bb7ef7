"""The hash chain detects any changed, removed, inserted, reordered or duplicated entry; the
published copy of an entry carries its hash."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import update

from adapters.fhir.audit_event import HASH_URL, audit_event, canonical, published
from adapters.participants import load_participants
from adapters.storage import tables as t
from adapters.storage.store import Store, Tx
from schemas.audit import AuditRecord
from schemas.participants import Participants, ParticipantsFile
from schemas.topics import Topics
from services.audit_log import append, pseudonym
from services.audit_reports import referral_trail, verify_store
from services.demo.samples import fictional_bsn
from services.domain.audit_chain import GENESIS, Link, entry_hash, verify
from services.runtime import Hub
from services.settings import DEMO_PARTICIPANTS, HubSettings


def _chain(n: int) -> list[Link]:
    links, prev = [], GENESIS
    for seq in range(1, n + 1):
        form = orjson.dumps(
            {"seq": seq, "prev": prev, "what": f"release {seq}"}, option=orjson.OPT_SORT_KEYS
        ).decode()
        digest = entry_hash(form)
        links.append(Link(seq, prev, digest, form, seq, prev))
        prev = digest
    return links


def test_an_intact_chain_verifies() -> None:
    verdict = verify(_chain(50))
    assert verdict.ok
    assert verdict.checked == 50
    assert verify([]).ok


def _changed(links: list[Link]) -> list[Link]:
    link = links[20]
    links[20] = Link(
        link.seq,
        link.prev_hash,
        link.hash,
        link.canonical.replace("release", "relaese"),
        link.seq,
        link.prev_hash,
    )
    return links


def _changed_and_rehashed(links: list[Link]) -> list[Link]:
    link = links[20]
    forged = link.canonical.replace("release", "relaese")
    links[20] = Link(link.seq, link.prev_hash, entry_hash(forged), forged, link.seq, link.prev_hash)
    return links


def _removed(links: list[Link]) -> list[Link]:
    del links[20]
    return links


def _removed_and_renumbered(links: list[Link]) -> list[Link]:
    del links[20]
    return [
        Link(i + 1, lk.prev_hash, lk.hash, lk.canonical, lk.claimed_seq, lk.claimed_prev)
        for i, lk in enumerate(links)
    ]


def _inserted(links: list[Link]) -> list[Link]:
    forged = '{"what":"forged"}'
    links.insert(20, Link(21, links[19].hash, entry_hash(forged), forged))
    return [
        Link(i + 1, lk.prev_hash, lk.hash, lk.canonical, lk.claimed_seq, lk.claimed_prev)
        for i, lk in enumerate(links)
    ]


def _reordered(links: list[Link]) -> list[Link]:
    links[20], links[21] = links[21], links[20]
    return links


def _reordered_keeping_seq(links: list[Link]) -> list[Link]:
    a, b = links[20], links[21]
    links[20] = Link(a.seq, b.prev_hash, b.hash, b.canonical, b.claimed_seq, b.claimed_prev)
    links[21] = Link(b.seq, a.prev_hash, a.hash, a.canonical, a.claimed_seq, a.claimed_prev)
    return links


def _duplicated(links: list[Link]) -> list[Link]:
    links.insert(21, links[20])
    return links


@pytest.mark.parametrize(
    ("tamper", "first_broken", "intact_before"),
    [
        (_changed, 21, 20),
        (_changed_and_rehashed, 22, 21),  # its own hash matches now: the next link breaks
        (_removed, 22, 20),  # a gap in the sequence
        (_removed_and_renumbered, 21, 20),  # no gap, but the links no longer meet
        (_inserted, 22, 21),  # a well-formed forgery is caught at the link after it
        (_reordered, 22, 20),
        (_reordered_keeping_seq, 21, 20),
        (_duplicated, 21, 21),
    ],
)
def test_every_kind_of_tampering_is_found(tamper, first_broken: int, intact_before: int) -> None:  # type: ignore[no-untyped-def]
    verdict = verify(tamper(_chain(50)))
    assert not verdict.ok
    assert verdict.first_broken == first_broken
    assert verdict.checked == intact_before
    assert verdict.problem


@pytest.mark.parametrize(
    "record",
    [
        AuditRecord(
            action="release",
            recorded=datetime(2026, 12, 6, 3, 0, 0, 123456, tzinfo=UTC),
            actor="praktijk-de-linde",
            actor_role="gp-practice",
            recipient="welzijn-hoogeveen",
            referral_id="VERW-2026-0001",
            registration_id="3f2a9c1e-1111-5222-8333-444455556666",
            patient="ab" * 16,
            consent_id="c-VERW-2026-0001",
            data=("name", "address", "reason"),
        ),
        AuditRecord(
            action="read",
            recorded=datetime(2026, 12, 6, 3, 0, tzinfo=UTC),
            actor="operator",
            actor_role="operator",
            outcome="refused",
            detail="no consent covers this reader",
        ),
    ],
)
def test_the_published_copy_is_built_from_the_event_as_from_its_canonical_form(
    record: AuditRecord,
) -> None:
    """The audit trail builds the topic's copy from the event it has at hand; it must be
    byte for byte what reading the stored canonical form back gives, and leave the event
    (whose canonical form is what the chain hashes) as it was."""
    event = audit_event(
        record, seq=7, prev_hash=GENESIS, participants=load_participants(DEMO_PARTICIPANTS)
    )
    form = canonical(event)
    digest = entry_hash(form)
    read_back = orjson.loads(form)  # the stored canonical form, read back
    read_back["extension"].append({"url": HASH_URL, "valueString": digest})
    assert published(event, digest) == orjson.dumps(read_back, option=orjson.OPT_SORT_KEYS)
    assert canonical(event) == form
    assert orjson.loads(published(event, digest))["extension"][-1] == {
        "url": HASH_URL,
        "valueString": digest,
    }


# --- the columns beside the chain ------------------------------------------------------
# The reports select rows by patient and referral_id and show recorded_at, actor, recipient
# and consent_id from the row; only the canonical form is hashed, so verify must check them.

_BSN = fictional_bsn(7)
_REG = "3f2a9c1e-1111-5222-8333-444455556666"


@pytest.fixture
def audited(tmp_path: Path, participants: Participants) -> Iterator[tuple[Hub, str]]:
    """A store with five entries appended by the hub's own code: (hub, patient pseudonym)."""
    store = Store(f"sqlite:///{tmp_path / 'audit.db'}")
    store.migrate()
    hub = Hub(settings=HubSettings(), participants=participants, store=store, topics=Topics(""))
    at = datetime(2026, 12, 6, 3, 0, 0, 123456, tzinfo=UTC)

    def work(tx: Tx) -> str:
        key = pseudonym(tx, _BSN)
        assert key is not None
        common = {"referral_id": "VERW-1", "registration_id": _REG, "patient": key}
        records = [
            AuditRecord(
                action="release",
                recorded=at,
                actor="schakel-hub",
                actor_role="hub",
                recipient="welzijn-hoogeveen",
                consent_id="c-1",
                data=("referral",),
                **common,
            ),
            AuditRecord(
                action="read",
                recorded=at + timedelta(minutes=1),
                actor="praktijk-de-linde",
                actor_role="gp-practice",
                data=("registration",),
                **common,
            ),
            AuditRecord(
                action="feedback-forwarded",
                recorded=at + timedelta(minutes=2),
                actor="schakel-hub",
                actor_role="hub",
                recipient="praktijk-de-linde",
                data=("feedback-status",),
                **common,
            ),
            AuditRecord(
                action="replay",
                recorded=at + timedelta(minutes=3),
                actor="operator",
                actor_role="operator",
                data=("referral-created",),
            ),
            AuditRecord(
                action="release",
                recorded=at + timedelta(minutes=4),
                actor="schakel-hub",
                actor_role="hub",
                recipient="welzijn-de-wolden",
                referral_id="VERW-2",
                patient=key,
                consent_id="c-2",
                data=("referral",),
            ),
        ]
        for record in records:
            append(hub, tx, record)
        return key

    key = store.run(work)
    yield hub, key
    store.dispose()


def _tamper(store: Store, seq: int, **values: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(t.audit_log).where(t.audit_log.c.seq == seq).values(**values))


def test_an_intact_trail_verifies_with_and_without_the_participants_file(
    audited: tuple[Hub, str],
) -> None:
    hub, _ = audited
    for verdict in (
        verify_store(hub.store).verdict,
        verify_store(hub.store, participants=hub.participants).verdict,
    ):
        assert verdict.ok, verdict
        assert verdict.checked == 5


# (column, entry, new value, caught only with the participants file)
_COLUMN_TAMPERS = [
    ("recorded_at", 2, datetime(2020, 1, 1, tzinfo=UTC), False),
    ("recorded_at", 2, datetime(2026, 12, 6, 3, 1, 0, 124000, tzinfo=UTC), False),  # +1 ms
    ("action", 2, "submit", False),
    ("actor", 3, "praktijk-het-anker", False),  # the hub: named by its id in the content
    ("actor", 4, "welzijn-hoogeveen", False),  # an operator: named by its id
    ("actor", 2, "praktijk-het-anker", True),  # a practice: named by its AGB code
    ("recipient", 3, "praktijk-het-anker", True),
    ("recipient", 3, "someone-unknown", True),
    ("recipient", 3, None, False),
    ("recipient", 2, "welzijn-hoogeveen", False),  # a read has no recipient
    ("consent_id", 3, "c-1", False),  # given where there was none
    ("consent_id", 5, "c-other", False),
    ("consent_id", 5, None, False),
    ("patient", 2, "0" * 32, False),
    ("patient", 2, None, False),
    ("patient", 4, "0" * 32, False),  # the replay names no patient
    ("referral_id", 2, "VERW-2", False),
    ("referral_id", 2, None, False),
    ("referral_id", 4, "VERW-1", False),
    ("registration_id", 3, "4f2a9c1e-1111-5222-8333-444455556666", False),
    ("registration_id", 3, None, False),
    ("registration_id", 5, _REG, False),
]


@pytest.mark.parametrize(
    ("column", "seq", "value", "needs_participants"),
    _COLUMN_TAMPERS,
    ids=[f"{c}@{s}" + ("-none" if v is None else "") for c, s, v, _ in _COLUMN_TAMPERS],
)
def test_a_changed_column_breaks_its_entry(
    audited: tuple[Hub, str], column: str, seq: int, value: object, needs_participants: bool
) -> None:
    hub, key = audited
    _tamper(hub.store, seq, **{column: value})
    checks = [verify_store(hub.store, participants=hub.participants).verdict]
    if not needs_participants:
        checks.append(verify_store(hub.store).verdict)
    for verdict in checks:
        assert not verdict.ok, (column, seq)
        assert verdict.first_broken == seq
        assert verdict.checked == seq - 1
        assert f"its {column} column" in verdict.problem
        for personal in (_BSN, key, "VERW-", _REG, "praktijk", "welzijn"):
            assert personal not in verdict.problem


def test_an_organisation_column_needs_the_participants_file_to_be_checked(
    audited: tuple[Hub, str],
) -> None:
    """The content names a practice by its AGB code: which id that is, the file knows."""
    hub, _ = audited
    _tamper(hub.store, 1, recipient="welzijn-de-wolden")
    assert verify_store(hub.store).verdict.ok
    verdict = verify_store(hub.store, participants=hub.participants).verdict
    assert (verdict.ok, verdict.first_broken) == (False, 1)


def test_an_organisation_the_participants_file_no_longer_knows_is_no_break(
    audited: tuple[Hub, str],
) -> None:
    hub, _ = audited
    kept = tuple(p for p in hub.participants if p.id != "welzijn-hoogeveen")
    fewer = Participants(ParticipantsFile(participant=kept))
    assert verify_store(hub.store, participants=fewer).verdict.ok


def test_the_reviewers_tampering_is_found_at_its_first_entry(audited: tuple[Hub, str]) -> None:
    """Entry 1's recipient, consent and time and entry 2's patient and referral id changed:
    the trail showed something else (entry 2 vanished from it) while verify said ok."""
    hub, _ = audited
    _tamper(
        hub.store,
        1,
        recipient="welzijn-de-wolden",
        consent_id="c-other",
        recorded_at=datetime(2020, 1, 1, tzinfo=UTC),
    )
    _tamper(hub.store, 2, patient="0000", referral_id="X")
    verdict = verify_store(hub.store).verdict
    assert (verdict.ok, verdict.first_broken, verdict.checked) == (False, 1, 0)
    _tamper(hub.store, 1, recorded_at=datetime(2026, 12, 6, 3, 0, 0, 123456, tzinfo=UTC))
    _tamper(hub.store, 1, consent_id="c-1")
    verdict = verify_store(hub.store, participants=hub.participants).verdict
    assert (verdict.ok, verdict.first_broken, verdict.problem) == (
        False,
        1,
        "its recipient column does not match its hashed content (changed)",
    )
    _tamper(hub.store, 1, recipient="welzijn-hoogeveen")
    verdict = verify_store(hub.store).verdict
    assert (verdict.ok, verdict.first_broken, verdict.checked) == (False, 2, 1)


def test_the_chain_break_of_an_entry_is_named_before_its_columns(audited: tuple[Hub, str]) -> None:
    hub, _ = audited
    _tamper(hub.store, 3, hash="0" * 64, patient="0" * 32)
    verdict = verify_store(hub.store).verdict
    assert verdict.first_broken == 3
    assert "does not match its hash" in verdict.problem


def test_the_trail_shows_the_hashed_time(audited: tuple[Hub, str]) -> None:
    """The column keeps microseconds the hashed content (milliseconds) does not: the trail
    shows the content's time, so a change below a millisecond shows nowhere."""
    hub, _ = audited
    _tamper(hub.store, 1, recorded_at=datetime(2026, 12, 6, 3, 0, 0, 123999, tzinfo=UTC))
    assert verify_store(hub.store).verdict.ok
    first = referral_trail(hub.store, "VERW-1")[0]
    assert first.at == datetime(2026, 12, 6, 3, 0, 0, 123000, tzinfo=UTC)
