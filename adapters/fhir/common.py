"""Small readers over validated FHIR R4 JSON (dicts), shared by the resource parsers."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from schemas.errors import InvalidBsnError, InvalidReferralError, SchakelError
from schemas.identifiers import BSN_SYSTEM, bsn_is_test_number, bsn_valid

Json = dict[str, Any]

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
"""Where a FHIR date without a time is a calendar day: Dutch GP systems mean local dates."""

_REFERENCE_ID = re.compile(r"^[\x21-\x7e]{1,64}\Z")  # printable ASCII, no spaces: a Kafka key


def identifier_value(resource: Json, system: str) -> str | None:
    for ident in resource.get("identifier") or ():
        if ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


def check_id(value: object, what: str, error: type[SchakelError] = InvalidReferralError) -> str:
    if not isinstance(value, str) or not _REFERENCE_ID.match(value):
        raise error(f"{what} must be 1-64 printable characters without spaces")
    return value


def check_bsn(value: str, where: str, *, allow_test_bsn: bool) -> str:
    if not bsn_valid(value):
        raise InvalidBsnError(f"{where}: BSN fails the 11-proef")
    if not allow_test_bsn and bsn_is_test_number(value):
        raise InvalidBsnError(f"{where}: BSN from the test range is refused in production")
    return value


def patient_bsn(resource: Json, where: str, *, allow_test_bsn: bool) -> str | None:
    value = identifier_value(resource, BSN_SYSTEM)
    return None if value is None else check_bsn(value, where, allow_test_bsn=allow_test_bsn)


_LEAP_SECOND = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:)60(?:\.\d+)?(Z|[+-]\d{2}:\d{2})?\Z")


def parse_time_of(value: str) -> datetime:
    """A FHIR dateTime or instant with a time (its own offset kept, naive without one); raises
    ValueError for anything else.

    FHIR's dateTime and instant allow second 60, a leap second (`2016-12-31T23:59:60Z`), and
    fhir.resources accepts it on both validation paths (lean and full); Python's datetime
    cannot hold it. It is read as the last microsecond of its minute (`23:59:59.999999`, any
    fraction of the leap second dropped), not as the next minute's `:00`. In UTC the leap
    second comes after every instant of its minute and before the next minute, so either
    neighbour keeps its order against every other time (ties aside); this one also keeps the
    day, month and year the sender wrote: a consent recorded, or a period ending, at
    31 December 23:59:60 stays in that year and does not reach into the next day (the same
    bound `local_period_end` gives the end of a day). The welfare feedback's `occurred_at`
    is read the same way (`schemas.feedback`), and java.time's parsers also move 23:59:60
    into second 59. Two leap seconds of one minute read as the same instant."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        leap = _LEAP_SECOND.match(value)
        if leap is None:
            raise
        zone = leap[2] or ""
        return datetime.fromisoformat(f"{leap[1]}59.999999{'+00:00' if zone == 'Z' else zone}")


def parse_datetime(value: str | None) -> datetime | None:
    """A FHIR dateTime/instant as an aware UTC datetime; partial dates become their start
    at 00:00 UTC (which falls on the same calendar day in Europe/Amsterdam). A date that
    bounds what may be disclosed is a local calendar day: use `local_period_start` and
    `local_period_end` for those. A leap second (`...T23:59:60Z`) is the last microsecond of
    its minute (`parse_time_of`)."""
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    if "T" not in text:
        parts = text.split("-")
        year = int(parts[0])
        month = int(parts[1]) if len(parts) > 1 else 1
        day = int(parts[2]) if len(parts) > 2 else 1
        return datetime(year, month, day, tzinfo=UTC)
    parsed = parse_time_of(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _local_days(value: str) -> tuple[date, date] | None:
    """First and last calendar day of a date-only or partial FHIR date (YYYY, YYYY-MM,
    YYYY-MM-DD); None for a value with a time."""
    if "T" in value:
        return None
    parts = value.split("-")
    if len(parts) > 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError("not a FHIR date")
    year = int(parts[0])
    if len(parts) == 1:
        return date(year, 1, 1), date(year, 12, 31)
    month = int(parts[1])
    if len(parts) == 2:
        return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
    day = date(year, month, int(parts[2]))
    return day, day


def local_period_start(value: str | None) -> datetime | None:
    """A Period.start that bounds consent or disclosure, as an aware UTC datetime. A date
    without a time (or a partial date: YYYY-MM, YYYY) begins at 00:00 Europe/Amsterdam on
    its first day; a dateTime with a time keeps its own offset."""
    if not value:
        return None
    days = _local_days(value)
    if days is None:
        return parse_datetime(value)
    return datetime.combine(days[0], time.min, AMSTERDAM).astimezone(UTC)


def local_period_end(value: str | None) -> datetime | None:
    """A Period.end that bounds consent or disclosure, as an aware UTC datetime. A date
    without a time (or a partial date: YYYY-MM, YYYY) includes the whole of its last day in
    Europe/Amsterdam (its last microsecond, 23:59:59.999999 local); a dateTime with a time
    keeps its own offset."""
    if not value:
        return None
    days = _local_days(value)
    if days is None:
        return parse_datetime(value)
    return datetime.combine(days[1], time.max, AMSTERDAM).astimezone(UTC)


def parse_full_date(value: str | None) -> date | None:
    """Only a complete YYYY-MM-DD is a birth date the social domain gets; partial dates drop."""
    if not value or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def human_name(resource: Json) -> tuple[str, tuple[str, ...]] | None:
    """Display name and its parts (given names, family) from the best HumanName."""
    names = [n for n in resource.get("name") or () if isinstance(n, dict)]
    if not names:
        return None
    chosen = next((n for n in names if n.get("use") == "official"), names[0])
    given = [g for g in chosen.get("given") or () if isinstance(g, str) and g.strip()]
    family = chosen.get("family") if isinstance(chosen.get("family"), str) else None
    text = chosen.get("text") if isinstance(chosen.get("text"), str) else None
    display = (text or " ".join([*given, family or ""])).strip()
    if not display:
        return None
    parts = tuple(
        dict.fromkeys(
            p for p in [*given, *(family.split() if family else ()), *display.split()] if p
        )
    )
    return display, parts


_OWN_PREFIX = "http://hl7.org/fhir/StructureDefinition/humanname-own-prefix"
_OWN_NAME = "http://hl7.org/fhir/StructureDefinition/humanname-own-name"
DUTCH_PREFIXES = frozenset(
    "van de der den het ten ter te in op aan bij uit 't d' la le du da di del des von vom zu".split()
)


def name_parts(resource: Json) -> tuple[tuple[str, ...], str | None, str | None]:
    """Given names, voorvoegsel and achternaam (nl-core extensions first, else the leading
    lower-case Dutch prefixes of `family`)."""
    names = [n for n in resource.get("name") or () if isinstance(n, dict)]
    if not names:
        return (), None, None
    chosen = next((n for n in names if n.get("use") == "official"), names[0])
    given = tuple(g for g in chosen.get("given") or () if isinstance(g, str) and g.strip())
    family = chosen.get("family") if isinstance(chosen.get("family"), str) else None
    exts = {
        e.get("url"): e.get("valueString")
        for e in ((chosen.get("_family") or {}).get("extension") or ())
        if isinstance(e, dict)
    }
    own, own_prefix = exts.get(_OWN_NAME), exts.get(_OWN_PREFIX)
    if isinstance(own, str) and own.strip():  # a blank one says nothing: `family` does
        prefix_given = own_prefix if isinstance(own_prefix, str) and own_prefix.strip() else None
        return given, prefix_given, own
    if not family:
        return given, None, None
    words = family.split()
    prefix: list[str] = []
    while len(words) > 1 and words[0] in DUTCH_PREFIXES:
        prefix.append(words.pop(0))
    return given, " ".join(prefix) or None, " ".join(words)


def first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return line[:limit]


def personal_strings(node: Any, found: set[str] | None = None, depth: int = 0) -> set[str]:
    """Every name, telecom value and address line in a FHIR JSON tree, valid or not, so the
    log redaction can mask them even for a message that failed validation. The hub's
    intake gathers the same in the walk that also checks the FHIR rules
    (`adapters.fhir.validate.validate_resource(..., personal=...)`), held to this one by
    tests; this one is what that walk falls back on."""
    found = set() if found is None else found
    if depth > PERSONAL_DEPTH:
        return found
    if isinstance(node, dict):
        personal_of_object(node, found)
        for key, value in node.items():
            if isinstance(value, str):
                if key == "postalCode":
                    found.add(value)
            elif isinstance(value, list):
                if key in LISTED_KEYS:
                    found.update(v for v in value if isinstance(v, str))
                for item in value:
                    if isinstance(item, dict | list):
                        personal_strings(item, found, depth + 2)
            elif isinstance(value, dict):
                personal_strings(value, found, depth + 1)
    elif isinstance(node, list):
        for item in node:
            personal_strings(item, found, depth + 1)
    return found


def personal_of_object(node: dict[str, Any], found: set[str]) -> None:
    """What `personal_strings` takes from an object's own name and telecom fields (the
    postal codes, name parts and address lines among its items are taken as it walks
    them)."""
    if "family" in node or "given" in node:
        for key in ("family", "text"):
            value = node.get(key)
            if isinstance(value, str):
                found.add(value)
    if node.get("system") in TELECOM_SYSTEMS and isinstance(node.get("value"), str):
        found.add(node["value"])


# What `personal_strings` takes (adapters.fhir.validate walks for it too).
TELECOM_SYSTEMS = ("phone", "email", "sms")
LISTED_KEYS = frozenset({"given", "prefix", "line"})
PERSONAL_DEPTH = 64


def bsn_in(value: bytes | None) -> str | None:
    """The first valid BSN named as such (an identifier with the BSN system) anywhere in a
    JSON message, or None: for the audit trail of a read of a message that may not be
    valid FHIR at all (a dead letter)."""
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found = item.get("value")
            if item.get("system") == BSN_SYSTEM and isinstance(found, str) and bsn_valid(found):
                return found
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return None


_URI = re.compile(r"\S+\Z")


def uri_or_none(value: Any, where: str) -> str | None:
    """A FHIR uri: no white space anywhere (fhir.resources' pattern does not anchor it)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _URI.match(value):
        raise InvalidReferralError(f"{where} must be a URI without spaces")
    return value


def not_understood(nodes: Any, what: str, error: type[SchakelError] = InvalidReferralError) -> None:
    """FHIR: a resource (or element) with a modifier extension or implicit rules that the
    receiver does not know must not be processed as if they were absent; the hub knows
    none, so it refuses the message."""
    for node in nodes:
        if not isinstance(node, dict):
            continue
        for key in ("modifierExtension", "implicitRules"):
            if node.get(key):
                kind = str(node.get("resourceType") or "element")[:40]
                raise error(f"{kind}.{key}: not understood by the hub, so the {what} is refused")
