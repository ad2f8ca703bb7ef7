"""Bearer tokens (CONTRACT §9): only their SHA-256 is configured; comparison is constant
time and always runs over every known token, so timing does not tell which one matched
or how far a guess got. Console sessions are HMAC-signed cookies."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from schemas.access import Viewer
from schemas.participants import Participants

SESSION_SECONDS = 8 * 3600


class Authenticator:
    def __init__(
        self, participants: Participants, operator_sha256: str | None, session_secret: str | None
    ) -> None:
        self._known: list[tuple[str, Viewer]] = [
            (p.api_token_sha256, Viewer(p.kind, p.id)) for p in participants if p.api_token_sha256
        ]
        if operator_sha256:
            self._known.append((operator_sha256.strip().lower(), Viewer("operator")))
        self._by_name = {viewer.name: viewer for _, viewer in self._known}
        self._secret = (session_secret or secrets.token_hex(32)).encode()

    def viewer(self, token: str | None) -> Viewer | None:
        if not token:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        found: Viewer | None = None
        for known, viewer in self._known:
            if hmac.compare_digest(known, digest):
                found = viewer
        return found

    def from_header(self, authorization: str | None) -> Viewer | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.viewer(token.strip())

    # --- console sessions --------------------------------------------------------------
    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def session_for(self, viewer: Viewer, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_SECONDS)
        payload = f"{viewer.name}|{expires}"
        return f"{payload}|{self._sign(payload)}"

    def from_session(self, cookie: str | None, now: float | None = None) -> Viewer | None:
        if not cookie or cookie.count("|") != 2:
            return None
        name, expires, signature = cookie.split("|")
        expected = self._sign(f"{name}|{expires}").encode()
        if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
            return None
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        return self._by_name.get(name)
