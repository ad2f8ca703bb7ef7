"""Who receives a referral (CONTRACT §3, Routing)."""

from __future__ import annotations

from schemas.errors import NoRecipientError
from schemas.participants import Participant, Participants
from schemas.referral import Referral


def route(referral: Referral, participants: Participants) -> Participant:
    """The performer when it is a welfare participant, else the welfare participant serving
    the patient's municipality; else `NoRecipientError` (dead letter `no-recipient`)."""
    if referral.performer_id:
        performer = participants.get(referral.performer_id)
        if performer is not None and performer.kind == "welfare":
            return performer
    address = referral.client.address
    municipality = address.municipality if address else None
    serving = participants.welfare_serving(municipality)
    if serving is not None:
        return serving
    if municipality:
        raise NoRecipientError(f"no welfare participant serves municipality {municipality}")
    raise NoRecipientError("no welfare performer and no known municipality for routing")
