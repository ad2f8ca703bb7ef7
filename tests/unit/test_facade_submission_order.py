"""A FHIR facade submission is audited before it is handed to the broker, so none reaches
the broker unaudited; a broker that does not take it is audited as such and answered 503
with an OperationOutcome (send it again), never a bare 500. The app runs in-process
(ASGI), with the hub's store and a publish function standing in for the broker edge."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest

from adapters.broker.admin import BrokerError
from schemas.messages import Headers
from services.demo.samples import consent_resource, referral_bundle, to_bytes
from services.runtime import Hub
from tests.conftest import api_request, hub_on

PRACTICE_TOKEN = "demo-token-praktijk-de-linde"


class Broker:
    """Takes or refuses what the facade publishes; notes what the trail held by then."""

    def __init__(self, hub: Hub, *, takes: bool) -> None:
        self.hub, self.takes = hub, takes
        self.submits_seen: list[int] = []

    async def publish(self, topic: str, value: bytes, key: bytes, headers: Headers) -> None:
        entries = await asyncio.to_thread(self.hub.store.audit_entries)
        self.submits_seen.append(sum(1 for e in entries if e.action == "submit"))
        if not self.takes:
            raise BrokerError("KafkaConnectionError")


def _post(hub: Hub, broker: Broker, path: str, body: bytes) -> httpx.Response:
    return api_request(
        hub, "POST", path, token=PRACTICE_TOKEN, publish=broker.publish, content=body
    )


SUBMISSIONS = [
    ("/fhir/Bundle", to_bytes(referral_bundle("VERW-FO-1")), "referral"),
    ("/fhir/Consent", to_bytes(consent_resource("c-FO-1", referral_id="VERW-FO-1")), "consent"),
]


@pytest.mark.parametrize(("path", "body", "what"), SUBMISSIONS)
def test_a_submission_is_audited_before_the_broker_has_it(
    tmp_path: Path, path: str, body: bytes, what: str
) -> None:
    hub = hub_on(f"sqlite:///{tmp_path / 'hub.db'}")
    broker = Broker(hub, takes=True)
    answer = _post(hub, broker, path, body)
    assert answer.status_code == 202, answer.text
    assert broker.submits_seen == [1], "the submit entry was in the trail when it was sent"
    [entry] = [e for e in hub.store.audit_entries() if e.action == "submit"]
    assert orjson.loads(entry.canonical)["outcome"] == "0"


@pytest.mark.parametrize(("path", "body", "what"), SUBMISSIONS)
def test_a_submission_the_broker_does_not_take_is_answered_503_and_audited(
    tmp_path: Path, path: str, body: bytes, what: str
) -> None:
    hub = hub_on(f"sqlite:///{tmp_path / 'hub.db'}")
    answer = _post(hub, Broker(hub, takes=False), path, body)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"
    submits = [orjson.loads(e.canonical) for e in hub.store.audit_entries()]
    assert [(e["outcome"], e.get("outcomeDesc", "")) for e in submits] == [
        ("0", ""),
        ("4", f"{what} not published: the broker did not take it"),
    ]


def test_the_hubs_publish_tells_a_send_the_broker_refused_as_a_broker_error(
    tmp_path: Path,
) -> None:
    """The composition root's publish turns the broker client's errors into `BrokerError`,
    which the facade answers with 503."""
    from aiokafka.errors import KafkaConnectionError

    from services.hub import _api_context

    class Refusing:
        async def send(self, *args: object, **kwargs: object) -> None:
            raise KafkaConnectionError("no broker")

    context = _api_context(hub_on(f"sqlite:///{tmp_path / 'hub.db'}"), "127.0.0.1:1", Refusing())  # type: ignore[arg-type]
    with pytest.raises(BrokerError, match="KafkaConnectionError"):
        asyncio.run(context.publish("referral-created", b"{}", b"VERW-FO-1", ()))
