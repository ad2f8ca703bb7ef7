"""Bearer tokens (CONTRACT §9): only their SHA-256 is configured; comparison is constant
time and always runs over every known token, so timing does not tell which one matched
or how far a guess got. Console sessions are HMAC-signed cookies, each with an id of its
own: signing out records the id in the store (`Store.end_session`), and every instance
refuses the cookie from then on, a copy of it included."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.access import Viewer
from schemas.participants import Participants

SESSION_SECONDS = 8 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    viewer: Viewer
    session_id: str
    expires: int
    """Unix seconds."""


class Authenticator:
    def __init__(
        self,
        participants: Participants,
        operator_sha256: str | None,
        session_secret: str | None,
        named_operators: Mapping[str, str] | None = None,
    ) -> None:
        """`operator_sha256` is the shared operator token's digest (its reads are audited as
        `operator`), `named_operators` each person's own, by name (`operator:<name>`)."""
        self._known: list[tuple[str, Viewer]] = [
            (p.api_token_sha256, Viewer(p.kind, p.id)) for p in participants if p.api_token_sha256
        ]
        if operator_sha256:
            self._known.append((operator_sha256.strip().lower(), Viewer("operator")))
        for person, digest in (named_operators or {}).items():
            self._known.append((digest.strip().lower(), Viewer("operator", person=person)))
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
        payload = f"{viewer.name}|{expires}|{secrets.token_hex(16)}"
        return f"{payload}|{self._sign(payload)}"

    def from_session(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie signed here names, unexpired and of a known viewer; whether
        it was signed out is the store's to say (`Store.session_ended`)."""
        if not cookie or cookie.count("|") != 3:
            return None
        name, expires, session_id, signature = cookie.split("|")
        expected = self._sign(f"{name}|{expires}|{session_id}").encode()
        if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
            return None
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        viewer = self._by_name.get(name)
        return Session(viewer, session_id, int(expires)) if viewer is not None else None
