"""What the HTTP side is given by the composition root."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from adapters.storage.views import Views
from schemas.messages import Headers
from services.api.auth import Authenticator
from services.runtime import Hub

Publish = Callable[[str, bytes, bytes, Headers], Awaitable[None]]
Ready = Callable[[], Awaitable[dict[str, str]]]


@dataclass
class ApiContext:
    hub: Hub
    views: Views
    auth: Authenticator
    publish: Publish
    ready: Ready
