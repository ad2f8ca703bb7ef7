"""Welfare feedback JSON in (CONTRACT §5). Pure."""

from __future__ import annotations

from pydantic import ValidationError

from adapters.fhir.validate import DEFAULT_MAX_BYTES, load_json
from schemas.errors import InvalidFeedbackError
from schemas.feedback import WelfareFeedback


def feedback_from_bytes(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> WelfareFeedback:
    """Errors name the field and the rule, never the value (it may be personal)."""
    data = load_json(raw, max_bytes)
    try:
        return WelfareFeedback.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)[:3]
        ]
        raise InvalidFeedbackError("; ".join(problems)) from None
