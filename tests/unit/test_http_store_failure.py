"""A store that fails while the HTTP side answers (down, locked past its wait) gives 503
with `Retry-After`, an OperationOutcome on the FHIR facade, never a bare 500; the log line
names the error's type, never its text, which holds the statement's parameters."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from adapters.storage.views import Views
from tests.conftest import api_request, hub_on

PATIENT_NAME = "Eva Jansen"
PATIENT_BSN = "999990019"


class FailingViews(Views):
    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise OperationalError(
            "SELECT * FROM referrals WHERE patient_bsn = ? AND name = ?",
            (PATIENT_BSN, PATIENT_NAME),
            sqlite3.OperationalError("database is locked"),
        )

    registrations = registration = tasks_of_practice = _fail


def _get(tmp_path: Path, path: str, token: str) -> httpx.Response:
    hub = hub_on(f"sqlite:///{tmp_path / 'hub.db'}")

    async def publish(*args: object) -> None:
        raise AssertionError("nothing is published by a read")

    return api_request(
        hub, "GET", path, token=token, publish=publish, views=FailingViews(hub.store)
    )


@pytest.mark.parametrize(
    ("path", "token", "fhir"),
    [
        ("/api/v1/registrations", "demo-token-welzijn-hoogeveen", False),
        (
            "/api/v1/registrations/00000000-0000-0000-0000-000000000000",
            "demo-token-gemeente-hoogeveen",
            False,
        ),
        ("/fhir/Task?based-on=VERW-SF-1", "demo-token-praktijk-de-linde", True),
    ],
)
def test_a_failing_store_is_answered_503_and_logged_without_its_parameters(
    tmp_path: Path, log_capture: io.StringIO, path: str, token: str, fhir: bool
) -> None:
    answer = _get(tmp_path, path, token)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    assert answer.headers["cache-control"] == "no-store"
    if fhir:
        assert answer.headers["content-type"].startswith("application/fhir+json")
        assert answer.json()["issue"][0]["code"] == "transient"
    else:
        assert answer.json() == {"detail": "the hub's store did not answer; try again"}
    logged = log_capture.getvalue()
    assert '"error": "OperationalError"' in logged or '"error":"OperationalError"' in logged
    for personal in (PATIENT_BSN, PATIENT_NAME, "SELECT"):
        assert personal not in logged and personal not in answer.text
