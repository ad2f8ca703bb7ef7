"""The API's audit entries name the basis a reader sees a registration on: a recipient
organisation's read carries the consent of its release, a practice's or operator's none."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from adapters.storage import tables as t
from adapters.storage.store import Store
from adapters.storage.views import Views
from schemas.access import Viewer
from schemas.participants import Participants
from schemas.topics import Topics
from services.api.context import ApiContext
from services.audit_log import pseudonym
from services.runtime import Hub
from services.settings import HubSettings

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
REG = "00000000-0000-0000-0000-0000000000aa"
BSN = "999900018"


@pytest.fixture
def context(tmp_path: Path, participants: Participants) -> ApiContext:
    """One registration (first referral VERW-1) at Welzijn Hoogeveen: VERW-1's release to
    it was revoked, VERW-2's (consent c-2) stands; VERW-1 is registered with the
    municipality on c-1."""
    store = Store(f"sqlite:///{tmp_path / 'hub.db'}")
    store.migrate()

    def release(referral: str, recipient: str, consent: str, revoked: bool) -> dict[str, Any]:
        return {
            "referral_id": referral,
            "recipient_id": recipient,
            "registration_id": REG,
            "consent_id": consent,
            "released_at": AT,
            "revoked_at": AT if revoked else None,
        }

    with store.engine.begin() as conn:
        conn.execute(
            insert(t.registrations).values(
                registration_id=REG,
                referral_id="VERW-1",
                recipient_id="welzijn-hoogeveen",
                status="released",
                created_at=AT,
                updated_at=AT,
                patient_bsn=BSN,
                practice_id="praktijk-de-linde",
            )
        )
        conn.execute(
            insert(t.releases),
            [
                release("VERW-1", "welzijn-hoogeveen", "c-1", revoked=True),
                release("VERW-2", "welzijn-hoogeveen", "c-2", revoked=False),
                release("VERW-1", "gemeente-hoogeveen", "c-1", revoked=False),
            ],
        )
    hub = Hub(settings=HubSettings(), participants=participants, store=store, topics=Topics(""))
    return ApiContext(hub=hub, views=Views(store), auth=None, publish=None, ready=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("viewer", "named", "consent"),
    [
        (Viewer("welfare", "welzijn-hoogeveen"), None, "c-2"),  # VERW-1's was revoked
        (Viewer("welfare", "welzijn-hoogeveen"), "VERW-2", "c-2"),
        (Viewer("municipality", "gemeente-hoogeveen"), None, "c-1"),
        (Viewer("gp-practice", "praktijk-de-linde"), None, None),  # the source: no consent
        (Viewer("operator"), None, None),
    ],
)
def test_a_read_names_the_consent_the_reader_sees_it_on(
    context: ApiContext, viewer: Viewer, named: str | None, consent: str | None
) -> None:
    asyncio.run(
        context.record(viewer, "read", what="registration", registrations=[REG], referral_id=named)
    )
    (entry,) = context.hub.store.audit_entries()
    assert entry.consent_id == consent
    assert entry.patient == context.hub.store.run(lambda tx: pseudonym(tx, BSN))
    assert entry.referral_id == (named or "VERW-1")


def test_a_submission_names_the_patient_it_carries(context: ApiContext) -> None:
    practice = Viewer("gp-practice", "praktijk-de-linde")
    asyncio.run(context.record(practice, "submit", what="referral", referral_id="VERW-3", bsn=BSN))
    (entry,) = context.hub.store.audit_entries()
    assert entry.patient == context.hub.store.run(lambda tx: pseudonym(tx, BSN))
    assert (entry.consent_id, entry.registration_id) == (None, None)
    assert BSN not in entry.canonical
