"""What the HTTP side is given by the composition root."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from adapters.storage.store import Tx
from adapters.storage.views import Views
from schemas.access import Viewer
from schemas.audit import AuditRecord
from schemas.messages import Headers
from services.api.auth import Authenticator
from services.audit_log import append, pseudonym
from services.runtime import Hub

Publish = Callable[[str, bytes, bytes, Headers], Awaitable[None]]
Ready = Callable[[], Awaitable[dict[str, str]]]
Outcome = Literal["success", "refused", "not-found"]


@dataclass
class ApiContext:
    hub: Hub
    views: Views
    auth: Authenticator
    publish: Publish
    ready: Ready

    async def record(
        self,
        viewer: Viewer,
        action: Literal["read", "submit"],
        *,
        what: str,
        registrations: Iterable[str] = (),
        referral_id: str | None = None,
        outcome: Outcome = "success",
        traceparent: str | None = None,
        bsn: str | None = None,
    ) -> None:
        """An audit entry per client whose data was read (or one, when none was); a
        submission's entry carries the trace of the event it put on the broker.

        The client is the patient of each registration read, or for an entry without a
        registration (a submission) the patient `bsn` names; both are pseudonymised.

        The basis (consent_id) of a read by a recipient organisation (welfare or
        municipality) is the consent its release was made on: the release to that
        recipient of the referral the entry names, or, when that one no longer stands,
        the first release to it that does in the registration (the one it sees the
        registration by). A read by the referring practice has none: the practice is the
        source of the data and reads its own referral, which needs no consent; an
        operator's read has none either (operational duty, not consent)."""
        ids = list(registrations)
        now = self.hub.clock()
        recipient = viewer.participant_id if viewer.kind in ("welfare", "municipality") else None

        def work(tx: Tx) -> None:
            for registration_id in ids or [None]:
                patient, referral, system = (
                    tx.registration_patient(registration_id)
                    if registration_id
                    else (bsn, None, None)
                )
                named = referral_id or referral
                consent_id = (
                    _basis(tx, registration_id, named, recipient)
                    if registration_id and recipient
                    else None
                )
                append(
                    self.hub,
                    tx,
                    AuditRecord(
                        action=action,
                        recorded=now,
                        actor=viewer.name,
                        actor_role=viewer.kind,
                        # the referral asked about, when named: a registration can hold
                        # several practices' referrals, and the first is not the reader's
                        referral_id=named,
                        referral_system=system if referral_id in (None, referral) else None,
                        registration_id=registration_id,
                        patient=pseudonym(tx, patient),
                        consent_id=consent_id,
                        data=(what,),
                        outcome=outcome,
                        detail=what if outcome != "success" else "",
                    ),
                    traceparent,
                )

        await asyncio.to_thread(self.hub.store.run, work)
        if self.hub.relay is not None:
            self.hub.relay.wake()


def _basis(tx: Tx, registration_id: str, referral_id: str | None, recipient: str) -> str | None:
    """The consent a recipient sees a registration on: its standing release of the named
    referral, else its first standing release in the registration."""
    release = tx.releases_of(referral_id).get(recipient) if referral_id else None
    if (
        release is None
        or release.revoked_at is not None
        or release.registration_id != registration_id
    ):
        release = tx.first_live_release(registration_id, recipient)
    return release.consent_id if release is not None else None
