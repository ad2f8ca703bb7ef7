"""The web console: server-rendered HTML for welfare workers, practices, municipalities
and operators. No build step, no script: forms and links. Each page shows only what the
signed-in organisation may see, through the same views as the API, and each page view is
an audited access."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from schemas.access import Viewer
from services.api.auth import SESSION_SECONDS, Session
from services.api.context import ApiContext

COOKIE = "schakel_session"
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(prefix="/console", include_in_schema=False)


def _ctx(request: Request) -> ApiContext:
    return request.app.state.context  # type: ignore[no-any-return]


async def _signed_in(request: Request) -> Viewer | None:
    session = await _session(request)
    return session.viewer if session is not None else None


async def _session(request: Request) -> Session | None:
    """The signed-in session, unless it was signed out (on any instance: the store says)."""
    ctx = _ctx(request)
    session = ctx.auth.from_session(request.cookies.get(COOKIE))
    if session is None:
        return None
    if await asyncio.to_thread(ctx.hub.store.session_ended, session.session_id):
        return None
    return session


def _page(
    request: Request, template: str, viewer: Viewer | None, http_status: int = 200, **values: Any
) -> HTMLResponse:
    ctx = _ctx(request)
    who = None
    if viewer is not None:
        participant = ctx.hub.participants.get(viewer.participant_id or "")
        who = participant.name if participant else "Operator"
    return templates.TemplateResponse(
        request,
        template,
        {"viewer": viewer, "who": who, "participants": ctx.hub.participants.by_id, **values},
        status_code=http_status,
    )


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    return _page(request, "login.html", None)


@router.post("/login", response_model=None)
async def login(request: Request, token: Annotated[str, Form(max_length=200)] = "") -> Response:
    viewer = _ctx(request).auth.viewer(token.strip())
    if viewer is None:
        return _page(request, "login.html", None, http_status=401, error="Onbekend token.")
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(
        COOKIE,
        _ctx(request).auth.session_for(viewer),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=_ctx(request).hub.settings.session_cookie_secure,
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    """Ends the session for good: its cookie, or a copy of it, no longer signs anyone in."""
    session = await _session(request)
    if session is not None:
        ends = datetime.fromtimestamp(session.expires, UTC)
        await asyncio.to_thread(_ctx(request).hub.store.end_session, session.session_id, ends)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(
        COOKIE,
        httponly=True,
        samesite="strict",
        secure=_ctx(request).hub.settings.session_cookie_secure,
    )
    return response


@router.get("", response_class=HTMLResponse, response_model=None)
async def registrations(
    request: Request, status: str | None = None, overdue: bool | None = None
) -> Response:
    viewer = await _signed_in(request)
    if viewer is None:
        return RedirectResponse("/console/login", status_code=303)
    ctx = _ctx(request)
    rows = ctx.views.registrations(viewer, status=status or None, overdue=overdue, limit=200)
    await ctx.record(
        viewer, "read", what="registration-list", registrations=[r.registration_id for r in rows]
    )
    return _page(
        request, "registrations.html", viewer, rows=rows, status=status or "", overdue=overdue
    )


@router.get("/registrations/{registration_id}", response_class=HTMLResponse, response_model=None)
async def registration(request: Request, registration_id: str) -> Response:
    viewer = await _signed_in(request)
    if viewer is None:
        return RedirectResponse("/console/login", status_code=303)
    ctx = _ctx(request)
    found = ctx.views.registration(viewer, registration_id[:64])
    if found is None:
        await ctx.record(viewer, "read", what="registration", outcome="not-found")
        return _page(request, "not_found.html", viewer, http_status=404)
    await ctx.record(viewer, "read", what="registration", registrations=[found.registration_id])
    return _page(request, "registration.html", viewer, reg=found)


@router.get("/dead-letters", response_class=HTMLResponse, response_model=None)
async def dead_letters(request: Request) -> Response:
    viewer = await _signed_in(request)
    if viewer is None:
        return RedirectResponse("/console/login", status_code=303)
    ctx = _ctx(request)
    if viewer.kind != "operator":
        await ctx.record(viewer, "read", what="dead-letters", outcome="refused")
        return _page(request, "not_found.html", viewer, http_status=404)
    await ctx.record(viewer, "read", what="dead-letters")
    return _page(
        request,
        "dead_letters.html",
        viewer,
        letters=ctx.views.dead_letters(ctx.hub.topics.dead_letter, 200),
    )
