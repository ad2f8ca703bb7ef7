"""Text as every output format can carry it (XML 1.0 refuses most control characters)."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def plain(value: str | None) -> str:
    """Control characters as spaces, runs of white space as one, trimmed."""
    return " ".join(_CONTROL.sub(" ", str(value or "")).split())
