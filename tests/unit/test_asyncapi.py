"""The AsyncAPI document (issue #10): committed, current, and naming every topic of
CONTRACT §2 with the messages the hub really sends there."""

from __future__ import annotations

import json
import re
from typing import Any

from schemas import topics as names
from schemas.export import GENERATED
from services.asyncapi import CBS_CODE, PARTICIPANT, references, render_asyncapi
from services.settings import HubSettings
from tests.conftest import ROOT

CONTRACT = ROOT.parent / "shared" / "CONTRACT.md"


def _document() -> dict[str, Any]:
    return json.loads((GENERATED / "asyncapi.json").read_text("utf-8"))


def _contract_topics() -> set[str]:
    text = CONTRACT.read_text("utf-8")
    section = text.split("## 2. Topics", 1)[1].split("\n## ", 1)[0]
    found = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.M))
    return {
        t.replace("<participant-id>", PARTICIPANT).replace("<cbs-code>", CBS_CODE) for t in found
    }


def test_the_committed_document_is_current() -> None:
    assert (GENERATED / "asyncapi.json").read_text("utf-8") == render_asyncapi(), (
        "run: python -m services.export"
    )


def test_every_topic_of_the_contract_is_a_channel() -> None:
    addresses = {c["address"] for c in _document()["channels"].values()}
    from_code = set(names.FIXED_TOPICS) | {
        names.welfare_referrals(PARTICIPANT),
        names.wmo_registrations(CBS_CODE),
        names.his_feedback(PARTICIPANT),
    }
    contract = _contract_topics()
    assert len(contract) == 9, contract
    assert addresses == from_code == contract


def test_messages_per_topic_are_the_hubs() -> None:
    doc = _document()
    sent: dict[str, set[str]] = {}
    received: dict[str, set[str]] = {}
    for op in doc["operations"].values():
        channel = doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]
        for ref in op["messages"]:
            key = ref["$ref"].rsplit("/", 1)[1]
            assert key in channel["messages"], ref
            name = doc["components"]["messages"][key]["name"]
            into = sent if op["action"] == "send" else received
            into.setdefault(channel["address"], set()).add(name)
    assert received == {t: {names.INBOUND_CE_TYPES[t]} for t in names.INBOUND_CE_TYPES}
    assert sent == {
        names.welfare_referrals(PARTICIPANT): {
            names.CE_REFERRAL_RELEASED,
            names.CE_REFERRAL_UPDATED,
            names.CE_REFERRAL_REVOKED,
            names.CE_CONTACT_REMINDER,
        },
        names.wmo_registrations(CBS_CODE): {
            names.CE_REFERRAL_RELEASED,
            names.CE_REFERRAL_UPDATED,
            names.CE_REFERRAL_REVOKED,
        },
        names.his_feedback(PARTICIPANT): {names.CE_FEEDBACK_FORWARDED, names.CE_CONTACT_OVERDUE},
        names.DEAD_LETTER: {"dead-letter"},  # no ce_type of its own: the original's headers
        names.AUDIT: {names.ce_type("audit-recorded")},
        # the FHIR facade writes checked submissions onto the GP topics
        names.REFERRAL_CREATED: {names.CE_REFERRAL_CREATED},
        names.CONSENT_GRANTED: {names.CE_CONSENT_GRANTED},
    }


def test_the_dead_letter_reasons_are_every_errors_code() -> None:
    """The exported enum of `schakel-error-reason` is exactly the codes the hub's errors
    carry (each module defining errors imported, the base class's placeholder aside)."""
    import adapters.fhir.to_fhir
    import adapters.municipal.iwmo  # noqa: F401 - their errors count too
    from schemas.errors import DEAD_LETTER_REASONS, SchakelError

    def codes(cls: type[SchakelError]) -> set[str]:
        return {cls.reason} | {c for sub in cls.__subclasses__() for c in codes(sub)}

    assert set(DEAD_LETTER_REASONS) == codes(SchakelError) - {SchakelError.reason}
    assert len(DEAD_LETTER_REASONS) == len(set(DEAD_LETTER_REASONS))
    header = _document()["components"]["schemas"]["DeadLetterHeaders"]["properties"]
    assert header[names.Header.ERROR_REASON]["enum"] == list(DEAD_LETTER_REASONS)


def test_inbound_payloads_carry_no_id_that_would_rebase_their_references() -> None:
    assert "$id" not in json.dumps(_document()["components"]["schemas"])


def test_consumer_groups_are_the_hubs() -> None:
    settings = HubSettings(topic_prefix="", consumer_group_prefix="schakel")
    doc = _document()
    groups = {
        doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]["address"]: op["bindings"][
            "kafka"
        ]["groupId"]["enum"]
        for op in doc["operations"].values()
        if op["action"] == "receive"
    }
    assert groups == {
        names.REFERRAL_CREATED: [settings.group_id("intake")],
        names.CONSENT_GRANTED: [settings.group_id("consent")],
        names.CONSENT_WITHDRAWN: [settings.group_id("consent-withdrawn")],
        names.FEEDBACK_RETURNED: [settings.group_id("feedback")],
    }


def test_every_reference_resolves_and_component_names_are_valid() -> None:
    doc = _document()
    for ref in references(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        assert isinstance(node, dict), ref
    for kind in ("schemas", "messages"):
        for key in doc["components"][kind]:
            assert re.fullmatch(r"[A-Za-z0-9._-]+", key), key
    assert doc["asyncapi"] == "3.0.0"
