"""Hostile input (issue #8): every parser the hub runs on inbound records - referral Bundle,
Consent (granted and withdrawn), feedback JSON - answers a reasoned refusal or a value for
whatever arrives: random bytes, invalid UTF-8, wrong types, deep nesting, huge messages.
No other exception, no hang."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.fhir.consent import WITHDRAWN, consent_from_bytes
from adapters.fhir.referral import referral_from_bytes
from adapters.welfare.feedback import feedback_from_bytes
from schemas.errors import SchakelError
from schemas.participants import Participants
from services.demo.samples import consent_resource, referral_bundle, to_bytes
from tests.unit.mutation import mutate

FEEDBACK = {
    "referral_id": "VERW-1",
    "organisation": "welzijn-hoogeveen",
    "status": "contacted",
    "occurred_at": "2026-12-02T10:00:00+01:00",
    "summary": "Contact gehad.",
}


def _parsers(participants: Participants) -> dict[str, Any]:
    return {
        "referral": lambda raw: referral_from_bytes(raw, participants),
        "consent": lambda raw: consent_from_bytes(raw, participants),
        "withdrawal": lambda raw: consent_from_bytes(raw, participants, expected_status=WITHDRAWN),
        "feedback": feedback_from_bytes,
    }


def _only_reasoned(parse: Any, raw: bytes) -> None:
    try:
        parse(raw)
    except SchakelError as exc:
        assert exc.reason
        assert exc.detail


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=400))
def test_random_bytes(raw: bytes, participants: Participants) -> None:
    for parse in _parsers(participants).values():
        _only_reasoned(parse, raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_any_json_value(value: Any, participants: Participants) -> None:
    raw = orjson.dumps(value)
    for parse in _parsers(participants).values():
        _only_reasoned(parse, raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_feedback(data: st.DataObject) -> None:
    _only_reasoned(feedback_from_bytes, orjson.dumps(mutate(FEEDBACK, data)))


@pytest.mark.parametrize(
    "raw",
    [
        b'\xff\xfe\x00{"resourceType": "Bundle"}',  # invalid UTF-8
        b'{"resourceType": "Bundle", "id": "\xed\xa0\x80"}',  # a lone surrogate, encoded
        b"[" * 100_000 + b"]" * 100_000,  # deep nesting
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b" " * 5_000_000,  # too large
        orjson.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {"resourceType": "Patient"}}] * 20_000,
            }
        ),
        b"\x00" * 1000,
        b'{"resourceType": "Bundle", "type": "collection", "entry": "not a list"}',
        b'{"referral_id": 1, "organisation": [], "status": {}, "occurred_at": null}',
    ],
    ids=[
        "invalid-utf8",
        "surrogate",
        "deep-array",
        "deep-object",
        "too-large",
        "many-entries",
        "nul-bytes",
        "wrong-type",
        "feedback-wrong-types",
    ],
)
def test_known_hostile_shapes(raw: bytes, participants: Participants) -> None:
    for parse in _parsers(participants).values():
        with pytest.raises(SchakelError):
            parse(raw)


def test_valid_inputs_still_pass(participants: Participants) -> None:
    parsers = _parsers(participants)
    assert parsers["referral"](to_bytes(referral_bundle())).referral_id == "VERW-2026-0001"
    assert parsers["consent"](to_bytes(consent_resource())).status == "active"
    assert parsers["withdrawal"](to_bytes(consent_resource(status="inactive"))).status == "inactive"
    assert parsers["feedback"](orjson.dumps(FEEDBACK)).status == "contacted"
