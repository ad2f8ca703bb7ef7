"""The Kafka key of an inbound event, read from its content (CONTRACT §2), for senders."""

from __future__ import annotations

from typing import Any

from schemas import topics
from schemas.errors import InvalidJsonError


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _array(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _first_identifier(resource: dict[str, Any]) -> Any:
    idents = _array(resource.get("identifier"))
    return _object(idents[0]).get("value") if idents else None


def _key(value: Any) -> str | None:
    """A value that can be a key: a non-empty string or a number."""
    return str(value) if isinstance(value, str | int) and str(value) else None


def key_for(logical_topic: str, data: Any) -> str:
    """Referral id for referrals, feedback and single-referral consents; else the Consent id
    (its `id`, or its first identifier's value, as the hub reads it). A field of the wrong
    JSON type counts as absent: the hub dead-letters such an event, the sender names it."""
    data = _object(data)
    if logical_topic == topics.REFERRAL_CREATED:
        for entry in _array(data.get("entry")):
            resource = _object(_object(entry).get("resource"))
            if resource.get("resourceType") == "ServiceRequest":
                key = _key(_first_identifier(resource))
                if key is not None:
                    return key
        raise InvalidJsonError("no ServiceRequest.identifier[0].value to use as key")
    if logical_topic in (topics.CONSENT_GRANTED, topics.CONSENT_WITHDRAWN):
        data_refs = [
            _object(_object(_object(d).get("reference")).get("identifier")).get("value")
            for d in _array(_object(data.get("provision")).get("data"))
        ]
        refs = [key for key in map(_key, data_refs) if key is not None]
        if len(refs) == 1:
            return refs[0]
        for consent_id in map(_key, (data.get("id"), _first_identifier(data))):
            if consent_id is not None:
                return consent_id
        raise InvalidJsonError(
            "no referral reference, Consent.id or Consent.identifier[0].value to use as key"
        )
    if logical_topic == topics.FEEDBACK_RETURNED:
        referral_id = _key(data.get("referral_id"))
        if referral_id is not None:
            return referral_id
        raise InvalidJsonError("no referral_id to use as key")
    raise InvalidJsonError(f"{logical_topic} is not an inbound topic")
