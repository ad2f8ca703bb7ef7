"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schemas.registration import ReferralAwaitingConsent, ReferralReleased
from services.hub import RunningHub
from tests.integration.helpers import (
    gather_events,
    running,
    send_consent,
    send_referral,
    settings_for,
    unique_prefix,
)

PATIENT_B = "999900031"


@pytest.fixture
async def hub(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[RunningHub]:
    """Three referrals: A (De Linde -> Welzijn Hoogeveen, registered with Hoogeveen),
    B (Het Anker -> Welzijn De Wolden), C (De Linde, not released: no consent)."""
    async with running(
        settings_for(kafka_bootstrap, f"sqlite:///{tmp_path / 'hub.db'}", unique_prefix())
    ) as hub:
        events = hub.hub.observers.subscribe()
        await send_consent(hub, "c-A", "VERW-A", municipality_cbs=("0118",))
        await send_referral(hub, "VERW-A")
        await send_consent(hub, "c-B", "VERW-B", bsn=PATIENT_B, recipient_ura=("23456789",))
        await send_referral(
            hub,
            "VERW-B",
            bsn=PATIENT_B,
            given="Bram",
            family="Bos",
            district="De Wolden",
            practice_agb="01054321",
        )
        await send_referral(hub, "VERW-C", bsn="999900043", given="Cor", family="Claassen")

        def settled(seen: list) -> bool:  # type: ignore[type-arg]
            released = [e for e in seen if isinstance(e, ReferralReleased)]
            waiting = [e for e in seen if isinstance(e, ReferralAwaitingConsent)]
            return len(released) == 3 and "VERW-C" in {e.referral_id for e in waiting}

        seen = await gather_events(events, settled)
        assert {e.referral_id for e in seen if isinstance(e, ReferralReleased)} == {
            "VERW-A",
            "VERW-B",
        }
        hub.hub.observers.unsubscribe(events)
        yield hub
