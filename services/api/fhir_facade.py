"""The FHIR REST facade for GP systems that cannot publish to Kafka (CONTRACT §9).

`POST /fhir/Bundle` and `POST /fhir/Consent` run the very checks the Kafka intake runs,
then put the event on `referral-created` / `consent-granted` and answer 202; a refusal is
an OperationOutcome naming what is wrong (400 not JSON or not FHIR, 413 too large, 422
not a referral or consent the hub accepts, 403 another practice's referral or a token of
another kind). `GET /fhir/Task?based-on=` lets a practice pull the feedback Tasks of its
own referrals (notified pull).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from adapters.broker.admin import BrokerError
from adapters.broker.client import inbound_headers
from adapters.broker.cloudevents import continue_trace
from adapters.fhir.consent import GRANTED, consent_from_fhir
from adapters.fhir.referral import referral_from_fhir
from adapters.fhir.to_fhir import current_task, operation_outcome, searchset
from adapters.fhir.validate import load_json, validate_resource
from adapters.logging import get_logger
from schemas import topics as names
from schemas.access import Viewer
from schemas.consent import Consent
from schemas.errors import SchakelError
from schemas.identifiers import AGB_SYSTEM
from schemas.messages import Headers
from schemas.referral import Referral
from services.api.context import ApiContext
from services.domain.routing import route

router = APIRouter(prefix="/fhir", tags=["fhir"])
T = TypeVar("T")
FHIR_JSON = "application/fhir+json"
log = get_logger("schakel.fhir-facade")
RETRY_AFTER_SECONDS = "5"
_STATUS = {"invalid-json": 400, "invalid-fhir": 400, "too-large": 413}
_OUTCOME_SCHEMA = {"description": "FHIR OperationOutcome", "content": {FHIR_JSON: {}}}


def _outcome(status: int, reason: str, detail: str, code: str = "invalid") -> JSONResponse:
    return JSONResponse(
        operation_outcome(reason, detail, code=code), status_code=status, media_type=FHIR_JSON
    )


def unavailable(detail: str) -> JSONResponse:
    """503 as an OperationOutcome, to be sent again after `Retry-After` seconds: what the
    facade answers when the broker or the store did not do their part."""
    response = _outcome(503, "unavailable", detail, code="transient")
    response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


async def _practice(request: Request) -> tuple[ApiContext, Viewer | None, JSONResponse | None]:
    ctx: ApiContext = request.app.state.context
    caller = ctx.auth.from_header(request.headers.get("authorization"))
    if caller is None:
        response = _outcome(401, "unauthorised", "missing or unknown bearer token", code="login")
        response.headers["WWW-Authenticate"] = "Bearer"
        return ctx, None, response
    if caller.kind != "gp-practice":
        await ctx.record(caller, "submit", what="fhir-facade", outcome="refused")
        return (
            ctx,
            caller,
            _outcome(
                403, "forbidden", "only a gp-practice may use the FHIR facade", code="forbidden"
            ),
        )
    return ctx, caller, None


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return b"\x00" * (limit + 1)  # refused as too-large without reading it
    return await request.body()


_SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _OUTCOME_SCHEMA,
    401: _OUTCOME_SCHEMA,
    403: _OUTCOME_SCHEMA,
    413: _OUTCOME_SCHEMA,
    422: _OUTCOME_SCHEMA,
    503: _OUTCOME_SCHEMA,
}
_FHIR_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            FHIR_JSON: {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


async def _checked(
    request: Request, what: str, check: Callable[[ApiContext, dict[str, Any]], T]
) -> tuple[ApiContext, Viewer, bytes, T] | JSONResponse:
    """Token, body and the Kafka intake's own checks; a refusal is audited and answered with
    an OperationOutcome."""
    ctx, caller, refused = await _practice(request)
    if refused is not None or caller is None:
        return refused or _outcome(
            401, "unauthorised", "missing or unknown bearer token", code="login"
        )
    raw = await _body(request, ctx.hub.settings.max_message_bytes)
    try:
        data = load_json(raw, ctx.hub.settings.max_message_bytes)
        validate_resource(data)
        parsed = check(ctx, data)
    except SchakelError as exc:
        await ctx.record(caller, "submit", what=f"{what} refused: {exc.reason}", outcome="refused")
        return _refusal(exc)
    return ctx, caller, raw, parsed


async def _submitted(
    ctx: ApiContext,
    caller: Viewer,
    what: str,
    topic: str,
    raw: bytes,
    key: str,
    headers: Headers,
    *,
    referral_id: str | None,
    traceparent: str,
    bsn: str | None,
) -> JSONResponse | None:
    """Audit the submission, then hand it to the broker: a submission that reached the
    broker is always in the trail (a store that fails first ends the request before
    anything is sent). A broker that does not take it is audited too and answered 503,
    to be sent again; None when it was sent."""
    await ctx.record(
        caller, "submit", what=what, referral_id=referral_id, traceparent=traceparent, bsn=bsn
    )
    try:
        await ctx.publish(topic, raw, key.encode(), headers)
    except BrokerError as exc:
        log.warning("facade submission not published", what=what, error=str(exc))
        await ctx.record(
            caller,
            "submit",
            what=f"{what} not published: the broker did not take it",
            referral_id=referral_id,
            traceparent=traceparent,
            bsn=bsn,
            outcome="refused",
        )
        return unavailable("the hub could not hand the message to its broker; send it again")
    return None


def _refusal(exc: SchakelError) -> JSONResponse:
    return _outcome(
        _STATUS.get(exc.reason, 422),
        exc.reason,
        exc.detail,
        "structure" if exc.reason in _STATUS else "invalid",
    )


def _referral(ctx: ApiContext, data: dict[str, Any]) -> Referral:
    referral = referral_from_fhir(
        data, ctx.hub.participants, allow_test_bsn=ctx.hub.settings.allow_test_bsn
    )
    route(referral, ctx.hub.participants)
    return referral


def _consent(ctx: ApiContext, data: dict[str, Any]) -> Consent:
    return consent_from_fhir(
        data,
        ctx.hub.participants,
        expected_status=GRANTED,
        allow_test_bsn=ctx.hub.settings.allow_test_bsn,
    )


@router.post(
    "/Bundle",
    status_code=202,
    summary="submit a referral Bundle (as on referral-created)",
    responses=_SUBMIT_RESPONSES,
    openapi_extra=_FHIR_BODY,
)
async def post_bundle(request: Request) -> Any:
    checked = await _checked(request, "referral", _referral)
    if isinstance(checked, JSONResponse):
        return checked
    ctx, caller, raw, referral = checked
    if referral.referrer.practice_id != caller.participant_id:
        await ctx.record(
            caller,
            "submit",
            what="referral of another practice",
            referral_id=referral.referral_id,
            outcome="refused",
        )
        return _outcome(
            403,
            "forbidden",
            "the requester organisation of this referral is another practice",
            code="forbidden",
        )
    trace = continue_trace(request.headers.get("traceparent"))
    headers = inbound_headers(names.REFERRAL_CREATED, traceparent=trace)
    failed = await _submitted(
        ctx,
        caller,
        "referral",
        ctx.hub.topics.referral_created,
        raw,
        referral.referral_id,
        headers,
        referral_id=referral.referral_id,
        traceparent=trace,
        bsn=str(referral.client.bsn),
    )
    if failed is not None:
        return failed
    return JSONResponse({"referral_id": referral.referral_id}, status_code=202)


@router.post(
    "/Consent",
    status_code=202,
    summary="submit a Consent (as on consent-granted)",
    responses=_SUBMIT_RESPONSES,
    openapi_extra=_FHIR_BODY,
)
async def post_consent(request: Request) -> Any:
    checked = await _checked(request, "consent", _consent)
    if isinstance(checked, JSONResponse):
        return checked
    ctx, caller, raw, consent = checked
    named = consent.referrals[0].value if consent.referrals else None
    # A practice records consent for its own patients' referrals: one naming a referral
    # the hub holds from another practice, or (naming none) a patient whose referrals the
    # hub holds only from other practices, is refused. A consent sent before its referral
    # is taken, as on Kafka.
    practices = ctx.views.referring_practices(
        [r.value for r in consent.referrals], consent.patient_bsn
    )
    if consent.referrals:
        refused = bool(practices - {caller.participant_id})
    else:
        refused = bool(practices) and caller.participant_id not in practices
    if refused:
        await ctx.record(
            caller,
            "submit",
            what="consent for another practice's referral",
            referral_id=named,
            outcome="refused",
        )
        return _outcome(
            403,
            "forbidden",
            "this consent concerns a referral or patient of another practice",
            code="forbidden",
        )
    trace = continue_trace(request.headers.get("traceparent"))
    headers = inbound_headers(names.CONSENT_GRANTED, traceparent=trace)
    # The patient the consent is about: its BSN, or (a consent naming its referral by
    # reference only) the patient of that referral, when the hub holds it.
    bsn = consent.patient_bsn or (
        await asyncio.to_thread(ctx.hub.store.patient_of_referral, named) if named else None
    )
    failed = await _submitted(
        ctx,
        caller,
        "consent",
        ctx.hub.topics.consent_granted,
        raw,
        consent.key,
        headers,
        referral_id=named,
        traceparent=trace,
        bsn=str(bsn) if bsn else None,
    )
    if failed is not None:
        return failed
    referral_id = named if len(consent.referrals) == 1 else None
    return JSONResponse(
        {"referral_id": referral_id, "consent_id": consent.consent_id}, status_code=202
    )


@router.get(
    "/Task",
    summary="the feedback Tasks of one of the caller's referrals (searchset Bundle)",
    responses={
        401: _OUTCOME_SCHEMA,
        403: _OUTCOME_SCHEMA,
        400: _OUTCOME_SCHEMA,
        200: {"description": "searchset Bundle", "content": {FHIR_JSON: {}}},
    },
)
async def search_tasks(
    request: Request,
    based_on: Annotated[str | None, Query(alias="based-on", max_length=64)] = None,
    based_on_identifier: Annotated[
        str | None, Query(alias="based-on:identifier", max_length=300)
    ] = None,
) -> Any:
    ctx, caller, refused = await _practice(request)
    if refused is not None or caller is None:
        return refused
    system: str | None = None
    if based_on_identifier:
        system, _, value = based_on_identifier.rpartition("|")
        referral_id = value
    else:
        referral_id = (based_on or "").removeprefix("ServiceRequest/")
    if not referral_id:
        return _outcome(
            400, "invalid-search", "give based-on=<referral-id> or based-on:identifier=system|value"
        )
    rows = ctx.views.tasks_of_practice(caller.participant_id or "", referral_id)
    practice = ctx.hub.participants.by_id[caller.participant_id or ""]
    practice_agb = next((i.value for i in practice.identifiers if i.system == AGB_SYSTEM), "")
    tasks = []
    shown: list[str] = []  # the registrations whose Task is in the answer
    for row in rows:
        referral = row["referral"]
        if system and referral.identifier_system and system != referral.identifier_system:
            continue
        shown.append(row["registration_id"])
        owner = ctx.hub.participants.by_id[row["recipient_id"]]
        tasks.append(
            current_task(
                registration_id=row["registration_id"],
                referral_system=referral.identifier_system,
                referral_id=referral.referral_id,
                feedback_status=row["status"],
                overdue=row["overdue"],
                practice_agb=practice_agb,
                owner_system=owner.identifiers[0].system,
                owner_value=owner.identifiers[0].value,
                owner_name=owner.name,
                modified=row["modified"],
                revoked=row["revoked"],
            )
        )
    # Only what the answer disclosed names a patient: an empty searchset (no such referral
    # of this practice, or one under another identifier system) is a not-found read of
    # nobody, as a registration not found is.
    await ctx.record(
        caller,
        "read",
        what="feedback-tasks",
        registrations=shown,
        referral_id=referral_id,
        outcome="success" if shown else "not-found",
    )
    base = str(request.base_url).rstrip("/") + "/fhir"
    return JSONResponse(searchset(tasks, ctx.hub.clock(), base), media_type=FHIR_JSON)
