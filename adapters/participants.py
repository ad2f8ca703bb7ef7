"""The participants file (CONTRACT §1): TOML in, validated `Participants` out.

Errors name the file, the entry (index and id) and the field, and then the hub refuses to
start: a routing table that is half right sends personal data to the wrong place.
"""

from __future__ import annotations

import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.errors import ConfigurationError
from schemas.participants import Participants, ParticipantsFile


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _entry_label(data: dict[str, Any], index: int) -> str:
    entries = data.get("participant")
    pid = None
    if isinstance(entries, list) and index < len(entries) and isinstance(entries[index], dict):
        pid = entries[index].get("id")
    return f"participant[{index}]" + (f" (id {pid!r})" if isinstance(pid, str) else "")


def _explain(source: str, data: dict[str, Any], exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        msg = error["msg"].removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == "participant" and isinstance(loc[1], int):
            where = _entry_label(data, loc[1])
            field = _field(loc[2:]) or "(entry)"
            lines.append(f"{source}: {where}: field {field!r}: {msg}")
        else:
            lines.append(f"{source}: field {_field(loc) or '(file)'!r}: {msg}")
    return "\n".join(lines)


def parse_participants(data: dict[str, Any], source: str = "<participants>") -> Participants:
    try:
        parsed = ParticipantsFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(_explain(source, data, exc)) from None

    problems = []
    seen: dict[str, int] = {}
    owners: dict[tuple[str, str], str] = {}
    serving: dict[str, list[str]] = defaultdict(list)
    tokens: dict[str, int] = {}
    for index, participant in enumerate(parsed.participant):
        label = f"{source}: participant[{index}] (id {participant.id!r})"
        if participant.id in seen:
            problems.append(
                f"{label}: field 'id': also used by participant[{seen[participant.id]}]"
            )
        seen.setdefault(participant.id, index)
        for ident in participant.identifiers:
            key = (ident.system, ident.value)
            if key in owners and owners[key] != participant.id:
                problems.append(
                    f"{label}: field 'identifiers': {ident.system}|{ident.value} also belongs to {owners[key]!r}"
                )
            owners.setdefault(key, participant.id)
        for code in participant.serves:
            serving[code].append(participant.id)
        digest = participant.api_token_sha256
        if digest is not None and digest in tokens:
            # one token, two participants: its bearer would be taken for either of them
            problems.append(
                f"{label}: field 'api_token_sha256': the same token as participant[{tokens[digest]}]"
            )
        if digest is not None:
            tokens.setdefault(digest, index)
    for code, ids in sorted(serving.items()):
        if len(ids) > 1:
            problems.append(
                f"{source}: municipality {code} is served by {', '.join(ids)}: routing must be unambiguous"
            )
    if problems:
        raise ConfigurationError("\n".join(problems))
    return Participants(parsed, source)


def load_participants(path: Path) -> Participants:
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"{source}: cannot read participants file: {exc.strerror}"
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigurationError(f"{source}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML: {exc}") from None
    return parse_participants(data, source)
