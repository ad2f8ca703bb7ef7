"""Structural validation of inbound FHIR R4 JSON.

Two layers: fhir.resources' R4B models (types, cardinality, unknown elements), then the
rules the reference validator applies and fhir.resources does not (empty arrays, Period
order, absolute fullUrls, HTML in strings, active content in narrative). The corpus in
`shared/corpus/fhir/fhir-test-cases` holds one example of each.

The first layer has a fast path: the lean models of `adapters.fhir.lean`, never more
permissive than fhir.resources, cover the referral Bundles and Consents GP systems send.
What they accept is valid for fhir.resources too; anything else is judged by
fhir.resources, so the verdicts and error texts are those of fhir.resources alone.

Both paths refuse a resource nested deeper than `MAX_DEPTH` levels, with the same error,
before either looks at it: fhir.resources validates nested elements by recursion and would
run out of Python stack on deep input where the lean models (pydantic-core) go on.

Error details name paths and rules, never values: they go into dead-letter headers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from adapters.fhir import lean
from adapters.fhir.common import (
    LISTED_KEYS,
    PERSONAL_DEPTH,
    parse_time_of,
    personal_of_object,
    personal_strings,
)
from schemas.errors import InvalidFhirError, InvalidJsonError, TooLargeError

DEFAULT_MAX_BYTES = 1_000_000
MAX_REPORTED_ERRORS = 3
MAX_DEPTH = 64
"""How deep a resource may nest: its own object is at depth 0, every object or array in it
one deeper than the one holding it; a resource with an object or array deeper than this is
refused `invalid-fhir` ("nested deeper than 64 levels") by the lean and the full path alike.
The deepest message of the FHIR corpus is at depth 8, a referral Bundle at 7; .NET's JSON
reader (the Firely SDK's) stops at 64 too. fhir.resources takes up to 8 Python frames per
level (an Identifier.assigner.identifier chain), so at 64 it needs about 520 of the 1,000
Python allows, with room for the caller's own. orjson refuses more than 1,024 levels
(`invalid-json`), far more than that stack holds, so the limit is the hub's own; `_walk`,
which every message takes anyway, stops at it (one comparison per object or array), and
only a message it flags gets the exact check (`_nested_too_deep`). Not below
`PERSONAL_DEPTH` (the same 64), so every personal string of a message within it is found."""

_HTML_IN_STRING = re.compile(r"<\s*[A-Za-z/!?]")
_ACTIVE_XHTML = re.compile(
    r"<\s*(script|iframe|object|embed|form|input|style|applet|base|link|meta|frame|frameset"
    r"|button|textarea|select)\b|\son[a-z]+\s*=|javascript:",
    re.IGNORECASE,
)
_ABSOLUTE_URL = re.compile(r"^(urn:uuid:|urn:oid:|[A-Za-z][A-Za-z0-9+.-]*://)")


def load_json(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Bytes to a JSON object, or a reasoned error (never a stack trace)."""
    if raw is None or raw == b"":
        raise InvalidJsonError("empty message")
    if len(raw) > max_bytes:
        raise TooLargeError(f"message has {len(raw)} bytes, limit is {max_bytes}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson's message names line/column and the rule broken, not the content.
        raise InvalidJsonError(f"not valid JSON: {str(exc).splitlines()[0][:160]}") from None
    if not isinstance(data, dict):
        raise InvalidJsonError("expected a JSON object")
    duplicate = _duplicate_key(raw, data)
    if duplicate is not None:
        raise InvalidJsonError(
            f"an object has {duplicate} twice (JSON names must be unique: readers differ on "
            "which one counts)"
        )
    return data


_KEY_GAP = re.compile(rb'"[ \t\r\n]+:')
_QUOTE_OR_COLON_ESCAPED = (b"\\u0022", b"\\u003a", b"\\u003A")
"""A quote or a colon written as an escape in a string: orjson's rewriting writes them
plainly, so counting `":` in both would no longer compare like with like."""
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}\Z")


class _DuplicateKey(Exception):
    pass


def _duplicate_key(raw: bytes, data: dict[str, Any]) -> str | None:
    """`key "name"` (or `a key` when it is no plain name) of an object that has one key
    twice, else None.

    orjson, like most readers, keeps the last of two equal keys; others keep the first or
    refuse, so the sender's system and the hub could read one message two ways (a Consent's
    `status` or a referral's BSN twice). Exact, and cheap where it can be:
    - `raw` is what orjson writes for `data` (the hub's own tools, `schakel send`, the
      bench): a dict cannot hold a key twice, so neither can `raw` (about 1.5 us a Bundle);
    - else, when every key's closing quote is followed by its colon directly and no quote
      or colon in a string is written as an escape (`\\u0022`, `\\u003a`), `"` + `:`
      occurs in `raw` once per key written plus once per quote followed by a colon inside
      a string, and in orjson's rewriting of `data` once per key
      kept plus the same inside the strings kept: the counts differ exactly when a key was
      dropped (about 8 us more);
    - else (a space before a colon, as Jackson's pretty printer writes) Python's own reader
      with a check per object (about 40 us a 2 KB Bundle)."""
    try:
        again = orjson.dumps(data)
    except TypeError:  # nested deeper than orjson writes (255): Python's reader judges
        return _named_duplicate(raw)
    if again == raw:
        return None
    if _KEY_GAP.search(raw) is None and not any(e in raw for e in _QUOTE_OR_COLON_ESCAPED):
        if raw.count(b'":') == again.count(b'":'):
            return None
    return _named_duplicate(raw)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f'key "{key}"' if _NAME.match(key) else "a key")
            seen.add(key)
    return found


def _named_duplicate(raw: bytes) -> str | None:
    try:
        json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        return str(exc)
    except (ValueError, RecursionError):  # orjson read it: nothing to add here
        return None
    return None


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    parts = [f"{_path(e['loc'])}: {e['msg']}" for e in errors[:MAX_REPORTED_ERRORS]]
    more = len(errors) - MAX_REPORTED_ERRORS
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def validate_resource(
    data: dict[str, Any], *, personal: Callable[[set[str]], None] | None = None
) -> str:
    """Validate any R4 resource; returns its resourceType or raises `InvalidFhirError`.

    With `personal`, it is first given the personal strings of `data` (what
    `personal_strings` finds, valid or not), before anything can fail: the hub's intake
    hands them to the log redaction. They are gathered in the same walk that checks the
    rules (`_walk`), not in a second pass over the message."""
    found: set[str] = set()
    broken: bool | None
    try:
        broken = _walk(data, found, 0 if personal is not None else _PAST_PERSONAL)
    except Exception:  # noqa: BLE001 - input the walk's rules were not written for
        broken = None  # not known: `_check_rules` decides once the models accepted it
        if personal is not None:
            found = personal_strings(data)
    if personal is not None:
        personal(found)
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidFhirError("no resourceType: not a FHIR resource")
    # `_walk` flags anything nested deeper than MAX_DEPTH as broken (and stops there): only
    # then, or when it gave up, can the message be too deep for the models; this refusal
    # is the full path's first (`_validate_full`), so both answer the same.
    if broken is not False and _nested_too_deep(data):
        raise _too_deep(resource_type)
    if not lean.accepts(data):
        _validate_full(data, resource_type)
    if broken is not False:
        _check_rules(data, resource_type)  # the walk that names where; raises
        if broken:
            raise InvalidFhirError(f"{resource_type}: breaks a rule of FHIR R4 JSON")
    return resource_type


_PYTHON_NAME = re.compile(r"(_fhir|__ext)\Z|\Aresource_type\Z")
"""fhir.resources' Python names of elements (`class_fhir` for `class`, `birthDate__ext` for
`_birthDate`, `resource_type`), which its models also take as keys (`populate_by_name`)."""


def _python_name(node: Any) -> str | None:
    """The first key of `node` (at any depth) that is a Python name, not a FHIR JSON one."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(key, str) and _PYTHON_NAME.search(key):
                    return key
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _nested_too_deep(node: Any) -> bool:
    """Whether `node` holds an object or array deeper than `MAX_DEPTH` (without recursion)."""
    stack = [(node, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _too_deep(resource_type: str) -> InvalidFhirError:
    return InvalidFhirError(f"{resource_type[:40]}: nested deeper than {MAX_DEPTH} levels")


def _validate_full(data: dict[str, Any], resource_type: str) -> None:
    """fhir.resources' R4B model of `resource_type`; raises `InvalidFhirError`. A resource
    nested deeper than `MAX_DEPTH` is refused first (the models would run out of stack on
    it). A key that is the models' Python name of an element is refused next: FHIR JSON
    does not have it, and the hub reads the JSON names (`provision.class_fhir` read as no
    class at all would make a consent cover every class)."""
    if _nested_too_deep(data):
        raise _too_deep(resource_type)
    python_name = _python_name(data)
    if python_name is not None:
        raise InvalidFhirError(
            f"{resource_type}: {python_name[:40]!r} is not an element of FHIR R4 JSON"
        )
    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        raise InvalidFhirError(f"unknown resourceType {resource_type[:40]!r}") from None
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise InvalidFhirError(f"{resource_type}: {_describe(exc)}") from None
    except KeyError:
        # fhir_core looks nested resourceTypes up in a table and raises KeyError for unknown ones
        raise InvalidFhirError(
            f"{resource_type}: a nested resource has an unknown resourceType"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the validator's own failure is still bad input
        raise InvalidFhirError(f"{resource_type}: not valid FHIR ({type(exc).__name__})") from None


def _walk(node: Any, found: set[str], depth: int = 0) -> bool:
    """`personal_strings(node)` and the rules of `_check_rules` in one pass (every
    inbound message takes both): adds to `found` what `personal_strings` finds, and
    returns whether `_check_rules` would raise. From `depth` `_PAST_PERSONAL` on it looks
    for the rules alone (`found` stays as it is). It runs before the models have judged
    `node`, so it does not stop at the first rule broken (every personal string is
    wanted) and builds no paths (most input breaks no rule; `_check_rules` then names
    where); input that its checks were not written for (a Bundle entry that is no object,
    a value of a type JSON does not have, say) may make it raise anything, and
    `validate_resource` then takes `personal_strings` and, once the models accepted the
    message, `_check_rules`. It knows the types of parsed JSON by `type(...) is`, not
    `isinstance`, and refuses any other (`_JsonLeafError`); with that and the key checks
    before `personal_of_object`, the walk of a referral Bundle took 20 µs instead of 24.
    It goes no deeper than `MAX_DEPTH` below where it started (the walk for the rules alone
    starts at `_PAST_PERSONAL`): a node past it is broken, as for `_check_rules`, and not
    looked into, so the walk needs no more stack than that. tests/unit/test_rule_scan.py
    holds it to the two."""
    if depth > MAX_DEPTH and (depth < _PAST_PERSONAL or depth > _PAST_DEEPEST):
        return True  # nested too deep (one comparison per node in the intake's walk)
    broken = False
    kind = type(node)
    if kind is dict:
        personal = depth <= PERSONAL_DEPTH
        if personal and ("family" in node or "given" in node or "system" in node):
            personal_of_object(node, found)
        if "fhir_comments" in node:
            broken = True
        if node.get("resourceType") == "Bundle":
            try:
                _check_bundle(node, "")
            except InvalidFhirError:
                broken = True
        if "start" in node and "end" in node:
            start, end = node["start"], node["end"]
            if isinstance(start, str) and isinstance(end, str) and not _ordered(start, end):
                broken = True
        for key, value in node.items():
            kind = type(value)
            if kind is str:
                if key == "div":
                    if _ACTIVE_XHTML.search(value):
                        broken = True
                elif "<" in value and _HTML_IN_STRING.search(value):
                    broken = True
                if key == "postalCode" and personal:
                    found.add(value)
            elif kind is list:
                if personal and key in LISTED_KEYS:
                    found.update(v for v in value if isinstance(v, str))
                if _walk(value, found, depth + 1):  # its items at depth + 2
                    broken = True
            elif kind is dict:
                if _walk(value, found, depth + 1):
                    broken = True
            elif kind not in _JSON_LEAVES:
                raise _JsonLeafError(kind.__name__)
    elif kind is list:
        if not node:
            broken = True
        for item in node:
            kind = type(item)
            if kind is str:
                if "<" in item and _HTML_IN_STRING.search(item):
                    broken = True
            elif kind is dict or kind is list:
                if _walk(item, found, depth + 1):
                    broken = True
            elif kind not in _JSON_LEAVES:
                raise _JsonLeafError(kind.__name__)
    elif kind is str:
        if _HTML_IN_STRING.search(node):
            broken = True
    elif kind not in _JSON_LEAVES:
        raise _JsonLeafError(kind.__name__)
    return broken


_JSON_LEAVES = frozenset({int, float, bool, type(None)})
"""The types of parsed JSON other than str, list and dict."""
_PAST_PERSONAL = 1 << 20
"""A depth at which `_walk` gathers no personal strings: the rules alone. Past
`PERSONAL_DEPTH`, and far enough from 0 that the walk's two ranges of depths (from 0 and
from here, each `MAX_DEPTH` + 1 long) cannot meet."""
_PAST_DEEPEST = _PAST_PERSONAL + MAX_DEPTH


class _JsonLeafError(TypeError):
    """A value of a type parsed JSON does not have: `_walk` leaves it to the two passes."""


def _check_rules(node: Any, path: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH and isinstance(node, dict | list):
        raise InvalidFhirError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, dict):
        if "fhir_comments" in node:
            raise InvalidFhirError(f"{path}: fhir_comments is not part of FHIR R4 JSON")
        if node.get("resourceType") == "Bundle":
            _check_bundle(node, path)
        start, end = node.get("start"), node.get("end")
        if isinstance(start, str) and isinstance(end, str) and not _ordered(start, end):
            raise InvalidFhirError(f"{path}: per-1: period start must not be after its end")
        for key, value in node.items():
            child = f"{path}.{key}"
            if key == "div" and isinstance(value, str):
                if _ACTIVE_XHTML.search(value):
                    raise InvalidFhirError(f"{child}: txt-1: narrative holds active content")
                continue
            _check_rules(value, child, depth + 1)
    elif isinstance(node, list):
        if not node:
            raise InvalidFhirError(f"{path}: an array must not be empty")
        for index, item in enumerate(node):
            _check_rules(item, f"{path}[{index}]", depth + 1)
    elif isinstance(node, str) and _HTML_IN_STRING.search(node):
        raise InvalidFhirError(f"{path}: text looks like embedded HTML, which is not allowed")


def _check_bundle(bundle: dict[str, Any], path: str) -> None:
    seen: set[str] = set()
    for index, entry in enumerate(bundle.get("entry") or ()):
        full_url = entry.get("fullUrl")
        if full_url is not None and not _ABSOLUTE_URL.match(full_url):
            raise InvalidFhirError(f"{path}.entry[{index}].fullUrl: must be an absolute URL")
        if full_url is not None:
            # bdl-7: fullUrl unique, unless the entries are different versions.
            version = ((entry.get("resource") or {}).get("meta") or {}).get("versionId")
            key = f"{full_url}|{version}"
            if key in seen and bundle.get("type") != "history":
                raise InvalidFhirError(f"{path}.entry[{index}].fullUrl: bdl-7: duplicate in Bundle")
            seen.add(key)


def _ordered(start: str, end: str) -> bool:
    """FHIR per-1, with FHIRPath's rule that a comparison across precisions that cannot be
    decided (same day, one side without a time) fails."""
    start_has_time, end_has_time = "T" in start, "T" in end
    if start_has_time and end_has_time:
        try:
            return _instant(start) <= _instant(end)
        except (ValueError, TypeError):
            return True  # the R4B model already judged the format
    a = start.split("T")[0]
    b = end.split("T")[0]
    common = min(len(a), len(b))
    if a[:common] != b[:common]:
        return a[:common] < b[:common]
    return len(a) == len(b) and start_has_time == end_has_time


def _instant(value: str) -> datetime:
    return parse_time_of(value)  # a leap second as the last microsecond of its minute
