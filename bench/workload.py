"""What the bench sends: synthetic referrals, consents and feedback, built with the demo's
own sample builders (services/demo/samples.py), with the headers a GP system sends.

Patients are fictional: BSNs from the iWmo test range that pass the 11-proef (about 9,000
of them). A trajectory is one patient at one welfare organisation (the hub keeps one open
registration per patient × organisation), so there are twice as many trajectories as
BSNs. Referral i uses trajectory i mod that number; past it, referrals join an open
registration and reach the organisation as an update instead of a first release.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import orjson

from adapters.broker.client import inbound_headers
from schemas import topics as names
from schemas.identifiers import TEST_BSN_RANGE, bsn_valid
from schemas.messages import Headers
from services.demo.samples import consent_resource, referral_bundle, to_bytes


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes
    value: bytes
    headers: Headers


@dataclass(frozen=True, slots=True)
class Organisation:
    welfare_id: str
    ura: str
    district: str
    practice_id: str
    practice_agb: str


# Two welfare organisations of the demo participants, each with its own referring practice.
ORGANISATIONS = (
    Organisation("welzijn-hoogeveen", "12345678", "Hoogeveen", "praktijk-de-linde", "01012345"),
    Organisation("welzijn-de-wolden", "23456789", "De Wolden", "praktijk-het-anker", "01054321"),
)


@cache
def fictional_bsns() -> tuple[str, ...]:
    """Every 11-proef-valid number of the test range, in order (services.demo.samples'
    `fictional_bsn(i)` finds the i-th one by counting from the start; this lists them once)."""
    low, high = TEST_BSN_RANGE
    return tuple(str(n) for n in range(low, high + 1) if bsn_valid(str(n)))


def trajectories() -> int:
    return len(fictional_bsns()) * len(ORGANISATIONS)


@dataclass(frozen=True, slots=True)
class Trajectory:
    bsn: str
    organisation: Organisation


def trajectory(i: int) -> Trajectory:
    bsns = fictional_bsns()
    slot = i % trajectories()
    return Trajectory(bsns[slot // len(ORGANISATIONS)], ORGANISATIONS[slot % len(ORGANISATIONS)])


def referral_id(run: str, i: int) -> str:
    return f"VERW-{run}-{i:07d}"


def referral(topic: str, rid: str, who: Trajectory) -> Message:
    body = referral_bundle(
        rid,
        bsn=who.bsn,
        district=who.organisation.district,
        practice_agb=who.organisation.practice_agb,
    )
    return Message(topic, rid.encode(), to_bytes(body), inbound_headers(names.REFERRAL_CREATED))


def consent(topic: str, rid: str, who: Trajectory) -> Message:
    body = consent_resource(
        f"c-{rid}", referral_id=rid, bsn=who.bsn, recipient_ura=(who.organisation.ura,)
    )
    return Message(topic, rid.encode(), to_bytes(body), inbound_headers(names.CONSENT_GRANTED))


def feedback(topic: str, rid: str, who: Trajectory, status: str = "completed") -> Message:
    body = {
        "referral_id": rid,
        "organisation": who.organisation.welfare_id,
        "status": status,
        "occurred_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "summary": "Contact gehad.",
    }
    return Message(
        topic, rid.encode(), orjson.dumps(body), inbound_headers(names.FEEDBACK_RETURNED)
    )


def retarget(message: Message, topic: str) -> Message:
    """The same record for another topic (the raw pipe gets exactly the hub's bytes)."""
    return Message(topic, message.key, message.value, message.headers)
