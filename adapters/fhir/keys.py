"""The Kafka key of an inbound event, read from its content (CONTRACT §2), for senders."""

from __future__ import annotations

from typing import Any

from schemas import topics
from schemas.errors import InvalidJsonError


def key_for(logical_topic: str, data: dict[str, Any]) -> str:
    """Referral id for referrals, feedback and single-referral consents; else the Consent id."""
    if logical_topic == topics.REFERRAL_CREATED:
        for entry in data.get("entry") or ():
            resource = entry.get("resource") or {}
            if resource.get("resourceType") == "ServiceRequest":
                idents = resource.get("identifier") or [{}]
                if idents[0].get("value"):
                    return str(idents[0]["value"])
        raise InvalidJsonError("no ServiceRequest.identifier[0].value to use as key")
    if logical_topic in (topics.CONSENT_GRANTED, topics.CONSENT_WITHDRAWN):
        data_refs = [
            ((d.get("reference") or {}).get("identifier") or {}).get("value")
            for d in (data.get("provision") or {}).get("data") or ()
        ]
        refs = [r for r in data_refs if r]
        if len(refs) == 1:
            return str(refs[0])
        if data.get("id"):
            return str(data["id"])
        raise InvalidJsonError("no referral reference and no Consent.id to use as key")
    if logical_topic == topics.FEEDBACK_RETURNED:
        if data.get("referral_id"):
            return str(data["referral_id"])
        raise InvalidJsonError("no referral_id to use as key")
    raise InvalidJsonError(f"{logical_topic} is not an inbound topic")
