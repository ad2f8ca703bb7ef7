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
    ) -> None:
        """An audit entry per client whose data was read (or one, when none was); a
        submission's entry carries the trace of the event it put on the broker."""
        ids = list(registrations)
        now = self.hub.clock()

        def work(tx: Tx) -> None:
            for registration_id in ids or [None]:
                bsn, referral, system = (
                    tx.registration_patient(registration_id)
                    if registration_id
                    else (None, None, None)
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
                        referral_id=referral_id or referral,
                        referral_system=system if referral_id in (None, referral) else None,
                        registration_id=registration_id,
                        patient=pseudonym(tx, bsn),
                        data=(what,),
                        outcome=outcome,
                        detail=what if outcome != "success" else "",
                    ),
                    traceparent,
                )

        await asyncio.to_thread(self.hub.store.run, work)
        if self.hub.relay is not None:
            self.hub.relay.wake()
