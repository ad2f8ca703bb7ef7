"""The HTTP app (FastAPI), built by the composition root from an `ApiContext`, and the
uvicorn server that `schakel run` serves it with. Nothing connects at import time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.exc import DBAPIError

from adapters.logging import get_logger
from schemas.errors import ConfigurationError
from services.api import console, fhir_facade, rest
from services.api.context import ApiContext

log = get_logger("schakel.http")

OPENAPI_PATH = Path(__file__).resolve().parents[2] / "schemas" / "generated" / "openapi.json"


def create_app(context: ApiContext | None) -> FastAPI:
    app = FastAPI(
        title="Schakel",
        version="1",
        summary="The shared registration, the FHIR REST facade and the console of the Schakel hub.",
        description="Authentication: `Authorization: Bearer <token>` with a participant's or the operator's "
        "token (only their SHA-256 is configured). A registration the caller may not see answers 404.",
    )
    app.state.context = context
    app.include_router(rest.router)
    app.include_router(fhir_facade.router)
    app.include_router(console.router)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console")

    @app.exception_handler(DBAPIError)
    async def store_unavailable(request: Request, exc: DBAPIError) -> Response:
        """The store failed (down, locked past its wait, out of space): 503, to be asked
        again, never a bare 500. Logged by the error's type alone: its text holds the
        statement's parameters, personal data among them."""
        log.error(
            "the store failed answering a request",
            path=request.url.path,
            error=type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__,
        )
        detail = "the hub's store did not answer; try again"
        if request.url.path.startswith("/fhir/"):
            return fhir_facade.unavailable(detail)
        return JSONResponse(
            {"detail": detail},
            status_code=503,
            headers={"Retry-After": fhir_facade.RETRY_AFTER_SECONDS},
        )

    @app.middleware("http")
    async def personal_data_is_not_cached(request: Request, call_next: Any) -> Response:
        """Answers that may hold personal data are not kept by a browser or a proxy (a
        shared workstation's cache); nor is the console framed by another site."""
        response: Response = await call_next(request)
        if request.url.path.startswith(PERSONAL_PATHS):
            response.headers["Cache-Control"] = "no-store"
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["X-Frame-Options"] = "DENY"
        return response

    return app


PERSONAL_PATHS = ("/api/", "/fhir/", "/console")


def openapi_document() -> dict[str, Any]:
    return create_app(None).openapi()


def render_openapi() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


class HttpServer:
    """uvicorn in the hub's event loop; `url` once it listens (port 0 picks a free one)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None
        self.url: str | None = None

    async def start(self, timeout: float = 10.0) -> str:
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self.server.serve(), name="schakel-http")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.server.started:
            if self._task.done():
                with contextlib.suppress(BaseException):
                    self._task.result()
                config = self.server.config
                raise ConfigurationError(
                    f"the HTTP server cannot listen on {config.host}:{config.port} (in use?); "
                    "set SCHAKEL_HTTP_PORT, or 0 for a free port"
                )
            if loop.time() > deadline:
                raise TimeoutError("the HTTP server did not start")
            await asyncio.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)


logging.getLogger("uvicorn.error").propagate = True
