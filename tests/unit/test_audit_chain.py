"""The hash chain detects any changed, removed, inserted, reordered or duplicated entry; the
published copy of an entry carries its hash."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from adapters.fhir.audit_event import HASH_URL, audit_event, canonical, published
from adapters.participants import load_participants
from schemas.audit import AuditRecord
from services.domain.audit_chain import GENESIS, Link, entry_hash, verify
from services.settings import DEMO_PARTICIPANTS


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
