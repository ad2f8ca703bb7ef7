"""`/api/v1`: the shared registration, as each party may see it (CONTRACT §9).

Anything a caller may not see answers 404, so existence does not leak. Every read of
personal data is recorded as an access event (the audit trail, issue #7, is built on it).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import AfterValidator, AwareDatetime, BeforeValidator

from schemas.access import DeadLetterSummary, RegistrationDetail, RegistrationSummary, Viewer
from services.api.context import ApiContext
from services.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

router = APIRouter()
_DATE_START = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T")


def _not_a_number(value: object) -> object:
    """pydantic would read a number as a Unix timestamp; the contract says RFC 3339."""
    if isinstance(value, str) and not _DATE_START.match(value):
        raise ValueError("give an RFC 3339 date-time, e.g. 2026-12-01T09:00:00+01:00")
    return value


def _in_utc(value: datetime | None) -> datetime | None:
    """The store compares in UTC: a moment that has none (year 1 east of Greenwich, 9999
    west of it) is a bad parameter, not a server error."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the moment lies outside the years 1-9999 in UTC") from None


Moment = Annotated[AwareDatetime | None, BeforeValidator(_not_a_number), AfterValidator(_in_utc)]


def context(request: Request) -> ApiContext:
    return request.app.state.context  # type: ignore[no-any-return]


def viewer(request: Request) -> Viewer:
    found = context(request).auth.from_header(request.headers.get("authorization"))
    if found is None:
        raise HTTPException(
            401, "missing or unknown bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return found


Ctx = Annotated[ApiContext, Depends(context)]
Caller = Annotated[Viewer, Depends(viewer)]


@router.get("/healthz", tags=["operations"], summary="alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"], summary="connected to broker and store")
async def readyz(ctx: Ctx) -> dict[str, str]:
    state = await ctx.ready()
    if any(v != "ok" for v in state.values()):
        raise HTTPException(503, state)
    return state


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics (text format; no token: bind to a private interface)",
    response_class=Response,
    responses={
        200: {
            "description": "counters, histograms and gauges; labels never hold personal data",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(ctx: Ctx) -> Response:
    body = await ctx.hub.metrics.render(ctx.views)
    return Response(body, media_type=METRICS_CONTENT_TYPE)


@router.get(
    "/api/v1/registrations",
    response_model=list[RegistrationSummary],
    tags=["registrations"],
    summary="the registrations the caller may see",
    responses={401: {"description": "missing or unknown token"}},
)
async def list_registrations(
    ctx: Ctx,
    caller: Caller,
    status: Annotated[str | None, Query(max_length=32)] = None,
    overdue: bool | None = None,
    organisation: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z0-9-]{2,40}$")] = None,
    since: Annotated[
        Moment, Query(description="received at or after (RFC 3339, with offset)")
    ] = None,
    until: Annotated[
        Moment, Query(description="received at or before (RFC 3339, with offset)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[RegistrationSummary]:
    found = ctx.views.registrations(
        caller,
        status=status,
        overdue=overdue,
        organisation=organisation,
        since=since,
        until=until,
        limit=limit,
    )
    await ctx.record(
        caller, "read", what="registration-list", registrations=[r.registration_id for r in found]
    )
    return found


@router.get(
    "/api/v1/registrations/{registration_id}",
    response_model=RegistrationDetail,
    tags=["registrations"],
    summary="one registration with its timeline",
    responses={
        401: {"description": "missing or unknown token"},
        404: {"description": "not found for this caller"},
    },
)
async def get_registration(ctx: Ctx, caller: Caller, registration_id: str) -> RegistrationDetail:
    found = ctx.views.registration(caller, registration_id[:64])
    if found is None:
        await ctx.record(caller, "read", what="registration", outcome="not-found")
        raise HTTPException(404, "no such registration")
    await ctx.record(caller, "read", what="registration", registrations=[found.registration_id])
    return found


@router.get(
    "/api/v1/dead-letters",
    response_model=list[DeadLetterSummary],
    tags=["operations"],
    summary="dead letters with their reasons (operators only; metadata, never the body)",
    responses={
        401: {"description": "missing or unknown token"},
        403: {"description": "operators only"},
    },
)
async def dead_letters(
    ctx: Ctx, caller: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[DeadLetterSummary]:
    if caller.kind != "operator":
        await ctx.record(caller, "read", what="dead-letters", outcome="refused")
        raise HTTPException(403, "operators only")
    await ctx.record(caller, "read", what="dead-letters")
    return ctx.views.dead_letters(ctx.hub.topics.dead_letter, limit)
