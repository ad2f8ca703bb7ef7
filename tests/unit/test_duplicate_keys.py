"""A JSON object with one key twice is refused `invalid-json` (RFC 8259 §4: names SHOULD be
unique; readers differ on which one counts, so the sender's system and the hub could read
one Consent two ways), whatever the message's spelling: compact as orjson writes it,
indented, with spaces before colons, with quotes escaped as \\u0022."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.fhir.consent import consent_from_bytes
from adapters.fhir.validate import load_json
from adapters.welfare.feedback import feedback_from_bytes
from schemas.errors import InvalidJsonError, SchakelError
from schemas.participants import Participants
from services.demo.samples import consent_resource, to_bytes

# An object is a list of (key, value) pairs, so that it can hold a key twice.
_KEYS = st.sampled_from(["a", "b", "status", "é", 'q"', 'x":', "\\", "", ':"'])
_LEAVES = st.one_of(
    st.integers(-5, 5), st.booleans(), st.none(), st.sampled_from(["", "v", 'a":b', '"', "\\"])
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(st.tuples(_KEYS, inner), max_size=4).map(lambda pairs: ("obj", pairs)),
    ),
    max_leaves=12,
)
_STYLES = st.fixed_dictionaries(
    {
        "colon": st.sampled_from([":", ": ", " : ", "\n:"]),
        "comma": st.sampled_from([",", ", ", ",\n  "]),
        "quote": st.sampled_from(['\\"', "\\u0022"]),
        "colon_escaped": st.booleans(),
        "ascii": st.booleans(),
    }
)


def _string(text: str, style: dict[str, Any]) -> str:
    body = json.dumps(text, ensure_ascii=style["ascii"])[1:-1].replace('\\"', style["quote"])
    if style["colon_escaped"]:
        body = body.replace(":", "\\u003a")
    return '"' + body + '"'


def _write(value: Any, style: dict[str, Any]) -> str:
    if isinstance(value, tuple):
        return (
            "{"
            + style["comma"].join(
                _string(k, style) + style["colon"] + _write(v, style) for k, v in value[1]
            )
            + "}"
        )
    if isinstance(value, list):
        return "[" + style["comma"].join(_write(v, style) for v in value) + "]"
    if isinstance(value, str):
        return _string(value, style)
    return json.dumps(value)


def _has_duplicate(value: Any) -> bool:
    if isinstance(value, tuple):
        keys = [k for k, _ in value[1]]
        return len(keys) != len(set(keys)) or any(_has_duplicate(v) for _, v in value[1])
    if isinstance(value, list):
        return any(_has_duplicate(v) for v in value)
    return False


@settings(max_examples=600, suppress_health_check=list(HealthCheck), deadline=None)
@given(pairs=st.lists(st.tuples(_KEYS, _VALUES), max_size=5), style=_STYLES)
def test_refused_exactly_when_an_object_has_a_key_twice(
    pairs: list[tuple[str, Any]], style: dict[str, Any]
) -> None:
    document = ("obj", pairs)
    raw = _write(document, style).encode()
    assert json.loads(raw) is not None  # the spelling is valid JSON
    if _has_duplicate(document):
        with pytest.raises(InvalidJsonError, match="twice"):
            load_json(raw)
    else:
        assert isinstance(load_json(raw), dict)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"resourceType":"Consent","status":"inactive","status":"active"}',
        b'{"resourceType": "Consent", "status": "inactive", "status": "active"}',
        b'{\n  "resourceType" : "Consent",\n  "status" : "inactive",\n  "status" : "active"\n}',
        # an escaped colon after an escaped quote made the two counts agree (a final read)
        b'{"resourceType":"Consent","status":"active","status":"inactive","id":"a\\"\\u003a"}',
    ],
)
def test_a_consent_with_its_status_twice_is_refused(participants: Participants, raw: bytes) -> None:
    with pytest.raises(SchakelError) as refused:
        consent_from_bytes(raw, participants)
    assert refused.value.reason == "invalid-json"
    assert 'key "status" twice' in refused.value.detail


def test_feedback_with_a_key_twice_is_refused() -> None:
    raw = (
        b'{"referral_id":"VERW-1","organisation":"welzijn-hoogeveen","status":"declined",'
        b'"status":"contacted","occurred_at":"2026-12-04T15:30:00+01:00"}'
    )
    with pytest.raises(SchakelError) as refused:
        feedback_from_bytes(raw)
    assert refused.value.reason == "invalid-json"


def test_a_valid_consent_in_any_spelling_is_read(participants: Participants) -> None:
    resource = consent_resource("c-dup-1", referral_id="VERW-1")
    for raw in (
        to_bytes(resource),
        json.dumps(resource, indent=2).encode(),
        json.dumps(resource, indent=2).replace('":', '" :').encode(),
    ):
        assert consent_from_bytes(raw, participants).consent_id == "c-dup-1"
