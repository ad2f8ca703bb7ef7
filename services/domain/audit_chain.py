"""The tamper-evident chain (issue #7): each entry's hash covers its canonical form, and
the canonical form holds the previous entry's hash and its own sequence number. Any
changed, removed, inserted or reordered entry breaks a link; `verify` names the first.

Pure: bytes in, verdicts out. Canonical form: JSON with sorted keys and no whitespace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

GENESIS = "0" * 64


def entry_hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    seq: int
    prev_hash: str
    hash: str
    canonical: str
    claimed_seq: int | None = None  # the sequence number written inside the canonical form
    claimed_prev: str | None = None  # the previous hash written inside the canonical form


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    checked: int
    first_broken: int | None = None
    problem: str = ""


def verify(links: Iterable[Link]) -> Verdict:
    """Walk the chain in stored order. Stops at the first broken link."""
    expected_prev, expected_seq, checked = GENESIS, 1, 0
    for link in links:
        if link.seq != expected_seq:
            what = "missing" if link.seq > expected_seq else "out of order or duplicated"
            return Verdict(
                False,
                checked,
                link.seq,
                f"sequence jumps from {expected_seq - 1} to {link.seq}: entries {what}",
            )
        if link.prev_hash != expected_prev or (
            link.claimed_prev is not None and link.claimed_prev != expected_prev
        ):
            return Verdict(
                False, checked, link.seq, "its previous-hash does not match the entry before it"
            )
        if link.claimed_seq is not None and link.claimed_seq != link.seq:
            return Verdict(False, checked, link.seq, "its content names another sequence number")
        if entry_hash(link.canonical) != link.hash:
            return Verdict(
                False, checked, link.seq, "its content does not match its hash (changed)"
            )
        expected_prev, expected_seq, checked = link.hash, expected_seq + 1, checked + 1
    return Verdict(True, checked)
