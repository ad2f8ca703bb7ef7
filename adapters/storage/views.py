"""Read side of the store for the HTTP API: what one viewer may see (CONTRACT §9).

Who sees a registration: the welfare organisation it was released to (while that release
stands), the referring gp-practice, the municipality it was registered with (likewise),
and operators; nobody else. Visibility is part of every query, so a registration the
viewer may not see is simply not found.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, exists, func, select, true

from adapters.storage import tables as t
from adapters.storage.store import Store, timeline_rows
from schemas.access import (
    DeadLetterSummary,
    RegistrationDetail,
    RegistrationSummary,
    TimelineItem,
    Viewer,
)
from schemas.registration import StoredReferral

MAX_PAGE = 500


def _dead_letter(row: Any) -> DeadLetterSummary:
    headers: dict[str, str] = {}
    for key, value in orjson.loads(row.headers):
        if key.startswith("schakel-") and value is not None:
            headers[key] = base64.b64decode(value).decode("utf-8", "replace")
    return DeadLetterSummary(
        message_id=row.message_id,
        reason=headers.get("schakel-error-reason", ""),
        detail=headers.get("schakel-error-detail", ""),
        original_topic=headers.get("schakel-original-topic", ""),
        original_partition=int(headers.get("schakel-original-partition", "-1")),
        original_offset=int(headers.get("schakel-original-offset", "-1")),
        key=row.key.decode("utf-8", "replace") if row.key is not None else None,
        at=row.created_at,
    )


def _released_to(recipient_id: str) -> Any:
    return exists().where(
        t.releases.c.registration_id == t.registrations.c.registration_id,
        t.releases.c.recipient_id == recipient_id,
        t.releases.c.revoked_at.is_(None),
    )


def _own_referrals(practice_id: str) -> tuple[Any, tuple[Any, ...]]:
    """The practice's referrals in the registration at hand (a registration, one per
    patient x organisation, can hold referrals of several practices): the table, aliased
    apart from the referral a summary joins, and the conditions."""
    own = t.referrals.alias("own")
    return own, (
        own.c.registration_id == t.registrations.c.registration_id,
        own.c.practice_id == practice_id,
    )


def _refers(practice_id: str) -> Any:
    """The registration holds one of this practice's referrals."""
    _, conditions = _own_referrals(practice_id)
    return exists().where(*conditions)


def _visible(viewer: Viewer) -> Any:
    if viewer.kind == "operator":
        return true()
    if viewer.kind == "gp-practice":
        return _refers(viewer.participant_id or "")
    if viewer.kind == "welfare":
        return and_(
            t.registrations.c.recipient_id == viewer.participant_id,
            _released_to(viewer.participant_id or ""),
        )
    return _released_to(viewer.participant_id or "")


def _summary_query(viewer: Viewer) -> Select[Any]:
    """The registrations the viewer may see, each with the referral it is shown by: its
    first, or for a practice its own first (another practice's referral in the same
    registration is not the viewer's to see)."""
    shown: Any = t.registrations.c.referral_id
    if viewer.kind == "gp-practice":
        own, conditions = _own_referrals(viewer.participant_id or "")
        shown = select(func.min(own.c.referral_id)).where(*conditions).scalar_subquery()
    shown = shown.label("shown_referral_id")
    return (
        select(t.registrations, shown, t.referrals.c.body)
        .select_from(t.registrations)
        .join(t.referrals, t.referrals.c.referral_id == shown, isouter=True)
        .where(_visible(viewer))
    )


def _summary(row: Any) -> dict[str, Any]:
    referral = StoredReferral.model_validate_json(row.body).referral if row.body else None
    return {
        "registration_id": row.registration_id,
        "referral_id": row.shown_referral_id,
        "status": row.status,
        "organisation": row.recipient_id,
        "practice": referral.referrer.practice_id if referral else row.practice_id,
        "client_name": referral.client.name if referral else None,
        "overdue": row.overdue_at is not None and row.contact_made_at is None,
        "closed": row.closed_at is not None,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


class Views:
    def __init__(self, store: Store) -> None:
        self.store = store

    def registrations(
        self,
        viewer: Viewer,
        *,
        status: str | None = None,
        overdue: bool | None = None,
        organisation: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[RegistrationSummary]:
        query = _summary_query(viewer)
        if status:
            query = query.where(t.registrations.c.status == status)
        if overdue is True:
            query = query.where(
                t.registrations.c.overdue_at.is_not(None),
                t.registrations.c.contact_made_at.is_(None),
            )
        elif overdue is False:
            query = query.where(
                t.registrations.c.overdue_at.is_(None)
                | t.registrations.c.contact_made_at.is_not(None)
            )
        if organisation:
            query = query.where(t.registrations.c.recipient_id == organisation)
        if since:
            query = query.where(t.registrations.c.created_at >= since)
        if until:
            query = query.where(t.registrations.c.created_at <= until)
        query = query.order_by(
            t.registrations.c.created_at.desc(), t.registrations.c.registration_id
        ).limit(max(1, min(limit, MAX_PAGE)))
        with self.store.engine.connect() as conn:
            return [RegistrationSummary(**_summary(r)) for r in conn.execute(query)]

    def registration(self, viewer: Viewer, registration_id: str) -> RegistrationDetail | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(
                _summary_query(viewer).where(t.registrations.c.registration_id == registration_id)
            ).first()
            if row is None:
                return None
            events = timeline_rows(conn, registration_id)
            own = (
                t.referrals.c.practice_id == viewer.participant_id
                if viewer.kind == "gp-practice"
                else true()
            )
            referral_ids = [
                r.referral_id
                for r in conn.execute(
                    select(t.referrals.c.referral_id)
                    .where(t.referrals.c.registration_id == registration_id, own)
                    .order_by(t.referrals.c.received_at, t.referrals.c.referral_id)
                )
            ]
        return RegistrationDetail(
            **_summary(row),
            referral_ids=referral_ids,
            timeline=[TimelineItem(status=e.status, at=e.at, by=e.by) for e in events],
        )

    def operations_counts(self) -> dict[str, int]:
        """For the metrics: open registrations past their contact term without contact (the
        timer marked them overdue), outbox rows not yet published, and those the broker
        refused as too large that nobody has queued again."""
        r = t.registrations.c
        with self.store.engine.connect() as conn:
            overdue = conn.execute(
                select(func.count()).where(
                    r.overdue_at.is_not(None), r.contact_made_at.is_(None), r.closed_at.is_(None)
                )
            ).scalar_one()
            pending = conn.execute(
                select(func.count()).where(t.outbox.c.published_at.is_(None))
            ).scalar_one()
        return {
            "overdue_registrations": int(overdue),
            "outbox_pending": int(pending),
            "outbox_refused": self.store.refused_count(),
        }

    def dead_letters(
        self, dead_letter_topic: str, limit: int = 100, reason: str | None = None
    ) -> list[DeadLetterSummary]:
        """The newest `limit` dead letters (of one reason, when given), read a page at a time:
        the reason is a header, so the filter cannot go into the query. Metadata only: the
        original bytes may hold personal data."""
        out: list[DeadLetterSummary] = []
        before: int | None = None
        with self.store.engine.connect() as conn:
            while len(out) < limit:
                query = select(t.outbox).where(t.outbox.c.topic == dead_letter_topic)
                if before is not None:
                    query = query.where(t.outbox.c.id < before)
                rows = conn.execute(query.order_by(t.outbox.c.id.desc()).limit(MAX_PAGE)).all()
                for row in rows:
                    letter = _dead_letter(row)
                    if reason is None or letter.reason == reason:
                        out.append(letter)
                        if len(out) == limit:
                            break
                if len(rows) < MAX_PAGE:
                    break
                before = rows[-1].id
        return out

    def referring_practices(self, referral_ids: list[str], bsn: str | None) -> set[str]:
        """The practices that sent the named referrals the hub holds; with none named,
        those that sent the patient's (by BSN)."""
        query = select(t.referrals.c.practice_id).distinct()
        if referral_ids:
            query = query.where(t.referrals.c.referral_id.in_(referral_ids))
        elif bsn:
            query = query.where(t.referrals.c.patient_bsn == bsn)
        else:
            return set()
        with self.store.engine.connect() as conn:
            return {practice for practice in conn.execute(query).scalars() if practice}

    def tasks_of_practice(self, practice_id: str, referral_id: str) -> list[dict[str, Any]]:
        """The registrations of one of the practice's referrals with their latest feedback."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                select(t.referrals.c.registration_id, t.referrals.c.body, t.registrations)
                .join(
                    t.registrations,
                    t.registrations.c.registration_id == t.referrals.c.registration_id,
                )
                .where(
                    t.referrals.c.referral_id == referral_id,
                    t.referrals.c.practice_id == practice_id,
                )
            ).all()
            result = []
            for row in rows:
                latest = conn.execute(
                    select(t.feedback)
                    .where(t.feedback.c.registration_id == row.registration_id)
                    .order_by(t.feedback.c.occurred_at.desc(), t.feedback.c.id.desc())
                ).first()
                released = conn.execute(  # this referral reached the organisation
                    select(t.releases.c.released_at, t.releases.c.revoked_at).where(
                        t.releases.c.referral_id == referral_id,
                        t.releases.c.recipient_id == row.recipient_id,
                    )
                ).first()
                if released is None:
                    continue
                result.append(
                    {
                        "registration_id": row.registration_id,
                        "referral": StoredReferral.model_validate_json(row.body).referral,
                        "recipient_id": row.recipient_id,
                        "status": latest.status if latest else None,
                        "modified": latest.occurred_at if latest else released.released_at,
                        "overdue": row.overdue_at is not None and row.contact_made_at is None,
                        "revoked": released.revoked_at is not None,
                    }
                )
        return result
