"""Reading the audit trail: verify the chain, a referral's trail, a patient's access report
(AVG art. 15). Pure over the store; the CLI prints what these return."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from adapters.fhir.audit_event import HUB_SYSTEM, chain_fields
from adapters.storage.store import Store, Tx
from schemas.access import OPERATOR_ROLE
from schemas.audit import AuditEntry, AuditRecord
from schemas.participants import Participants
from services.audit_log import append, pseudonym
from services.domain.audit_chain import Link, Verdict, verify
from services.runtime import Hub

DISCLOSURES = (
    "release",
    "registration",
    "update",
    "revoke-notice",
    "feedback-forwarded",
    "overdue-notice",
)


@dataclass(frozen=True)
class VerifyReport:
    verdict: Verdict
    seconds: float

    @property
    def rate(self) -> float:
        return self.verdict.checked / self.seconds if self.seconds > 0 else 0.0


_moment = datetime.fromisoformat
_NO_TIME = timedelta(0)
_MILLISECOND = timedelta(milliseconds=1)


class _Columns:
    """Does an entry's row say what its canonical form says? The canonical form is the one
    `adapters.fhir.audit_event.audit_event` builds from the same AuditRecord as the row:

    | column | in the canonical form |
    |---|---|
    | recorded_at | `recorded` (RFC 3339, milliseconds) |
    | action | `subtype[0].code` |
    | actor | `agent[requestor=true].who.identifier` |
    | recipient | `agent[requestor=false].who.identifier` (none without a recipient) |
    | consent_id | `agent[requestor=true].policy` = `["Consent/<id>"]` |
    | patient | `entity[type 1].what.identifier.value`: the same keyed pseudonym of the BSN |
    | registration_id | `entity[type 2].detail[type registration].valueString` |
    | referral_id | `entity[type 2].what.identifier.value` (the registration id without one) |

    A participant is named in the canonical form by its first identifier in the participants
    file of the day (AGB, URA, CBS code), anyone else (the hub, an operator) by its own id
    with system `urn:schakel:participant`. The latter is checked always; the former with the
    participants file, if given: the identifier must be one of that participant's, or, for
    an id the file does not know (any more), an identifier that no participant has.
    """

    def __init__(self, participants: Participants | None) -> None:
        self._participants = participants
        self._named: dict[tuple[str | None, Any, Any], bool] = {}

    def _names(self, column: str | None, agent: dict[str, Any]) -> bool:
        ident = agent["who"]["identifier"]
        key = (column, ident["system"], ident["value"])
        named = self._named.get(key)
        if named is None:
            named = self._named[key] = self._decide(*key)
        return named

    def _decide(self, column: str | None, system: Any, value: Any) -> bool:
        if system == HUB_SYSTEM:
            return value == column
        if self._participants is None:
            return column is not None  # which id an AGB/URA/CBS code stands for: the file knows
        known = self._participants.get(column) if column is not None else None
        if known is not None:
            return any(i.system == system and i.value == value for i in known.identifiers)
        return column is not None and self._participants.by_identifier(system, value) is None

    def mismatch(self, row: tuple[Any, ...], event: Any) -> str | None:
        """The first column that does not match the canonical form, or None. Never a value."""
        try:
            return self._mismatch(row, event)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            return "canonical"  # not an AuditEvent the columns can be read from

    def _mismatch(self, row: tuple[Any, ...], event: dict[str, Any]) -> str | None:
        # the row's columns in the order of adapters.storage.store.AUDIT_ROW
        _, _, _, _, recorded, action, actor, recipient, referral, registration, patient, consent = (
            row
        )
        # The canonical form has milliseconds, the column microseconds.
        if not _NO_TIME <= recorded - _moment(event["recorded"]) < _MILLISECOND:
            return "recorded_at"
        if event["subtype"][0]["code"] != action:
            return "action"
        agents = event["agent"]  # the requestor, then the destination if there is one
        requestor = agents[0]
        if not requestor["requestor"] or not self._names(actor, requestor):
            return "actor"
        if len(agents) > 1:
            if agents[1]["requestor"] or len(agents) > 2 or not self._names(recipient, agents[1]):
                return "recipient"
        elif recipient is not None:
            return "recipient"
        if requestor.get("policy") != ([f"Consent/{consent}"] if consent else None):
            return "consent_id"
        pseudonym = named = claimed_registration = None
        for entity in event.get("entity", ()):
            code = entity["type"]["code"]
            if code == "1":
                pseudonym = entity["what"]["identifier"]["value"]
            elif code == "2":
                named = entity["what"]["identifier"]["value"]
                for detail in entity.get("detail", ()):
                    if detail["type"] == "registration":
                        claimed_registration = detail["valueString"]
        if pseudonym != (patient or None):
            return "patient"
        if claimed_registration != (registration or None):
            return "registration_id"
        if named != (referral or registration or None):
            return "referral_id"
        return None


def verify_store(
    store: Store,
    progress: Callable[[int], None] | None = None,
    every: int = 50_000,
    participants: Participants | None = None,
) -> VerifyReport:
    """Walk the chain (services.domain.audit_chain) and check, for every entry, that the
    columns the reports select by and show say what its hashed canonical form says. A
    column that does not is reported as the entry's break, after the chain's own checks of
    that entry. Pass the participants file to check actor and recipient columns that the
    canonical form names by an organisation identifier (see _Columns)."""
    started = time.perf_counter()
    columns = _Columns(participants)
    unmatched: list[tuple[int, str]] = []

    def links() -> Iterator[Link]:
        for count, row in enumerate(store.audit_rows(), 1):
            seq, prev, digest, form = row[0], row[1], row[2], row[3]
            try:
                event = orjson.loads(form)
            except (orjson.JSONDecodeError, TypeError):
                event = None
            claimed_seq, claimed_prev = chain_fields(event)
            if progress is not None and count % every == 0:
                progress(count)
            yield Link(seq, prev, digest, form, claimed_seq, claimed_prev)
            # Back here only once the chain's checks passed this entry.
            column = columns.mismatch(row, event)
            if column is not None:
                unmatched.append((seq, column))
                return

    verdict = verify(links())
    if verdict.ok and unmatched:
        seq, column = unmatched[0]
        problem = (
            "its content cannot be read as an AuditEvent"
            if column == "canonical"
            else f"its {column} column does not match its hashed content (changed)"
        )
        verdict = Verdict(False, verdict.checked - 1, seq, problem)
    return VerifyReport(verdict, time.perf_counter() - started)


@dataclass(frozen=True)
class TrailLine:
    seq: int
    at: datetime
    action: str
    by: str
    recipient: str | None
    data: str
    consent_id: str | None
    outcome: str
    detail: str = ""
    """What happened, in words, where the action alone does not say it (a revoke notice
    because the consent's period ended: `consent-expired`)."""

    @property
    def what(self) -> str:
        """The action as the reports name it: a revoke notice with its reason where it was not
        a withdrawal (`revoke-notice (consent-expired)`), any other action alone (their
        details are for operators, not a kind of event)."""
        if self.action == "revoke-notice" and self.detail:
            return f"{self.action} ({self.detail})"
        return self.action

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "action": self.action,
            "by": self.by,
            "recipient": self.recipient,
            "data": self.data,
            "consent_id": self.consent_id,
            "outcome": self.outcome,
            "detail": self.detail,
        }


async def published_check(store: Store, head: int, bootstrap: str, topic: str) -> tuple[int, str]:
    """The chain's anchor outside the store: every entry is published on the `audit` topic
    with its hash. The newest copy there (by sequence number, of each partition's last
    record) must be in the store, `head` entries long, with the same hash; removing the
    newest entries from the store leaves the chain itself intact, not this. Returns (the
    newest published entry, 0 when none; the problem, "" when none)."""
    from adapters.broker.reading import last_records
    from adapters.fhir.audit_event import published_link

    links = [published_link(record.value) for record in await last_records(bootstrap, topic)]
    found = [link for link in links if link is not None]
    if not found:
        return 0, ""
    seq, digest = max(found)
    if seq > head:
        return seq, (
            f"the audit topic holds entry {seq}, but the store's chain ends at entry {head}: "
            "entries were removed from the store"
        )
    if store.audit_hash(seq) != digest:
        return seq, f"entry {seq} differs from its copy on the audit topic"
    return seq, ""


def _line(entry: AuditEntry) -> TrailLine:
    event = orjson.loads(entry.canonical)
    data = ""
    for entity in event.get("entity", ()):
        for detail in entity.get("detail", ()):
            if detail.get("type") == "data":
                data = detail.get("valueString", "")
    outcome = {"0": "success"}.get(event.get("outcome", ""), "refused")
    recorded = event.get("recorded")  # the column has microseconds the hash does not cover
    return TrailLine(
        entry.seq,
        datetime.fromisoformat(recorded) if isinstance(recorded, str) else entry.recorded,
        entry.action,
        entry.actor,
        entry.recipient,
        data,
        entry.consent_id,
        outcome,
        str(event.get("outcomeDesc", "")),
    )


def referral_trail(store: Store, referral_id: str) -> list[TrailLine]:
    return [_line(e) for e in store.audit_entries(referral_id=referral_id)]


def patient_entries(hub: Hub, bsn: str, asked_by: str) -> list[TrailLine]:
    """A patient's entries; the question itself is audited (in the same transaction)."""

    def work(tx: Tx) -> str | None:
        key = pseudonym(tx, bsn)
        append(
            hub,
            tx,
            AuditRecord(
                action="subject-access",
                recorded=hub.clock(),
                actor=asked_by,
                actor_role=OPERATOR_ROLE,
                patient=key,
                data=("access-report",),
            ),
        )
        return key

    key = hub.store.run(work)
    return [_line(e) for e in hub.store.audit_entries(patient=key) if e.action != "subject-access"]


_TEXT = {
    "nl": {
        "title": "Overzicht van verstrekte gegevens",
        "intro": "Dit overzicht toont elke organisatie die via Schakel gegevens over u heeft ontvangen of "
        "ingezien: wanneer, welke soort gegevens en op basis van welke toestemming (AVG artikel 15).",
        "when": "Wanneer",
        "who": "Organisatie",
        "what": "Wat",
        "kind": "Soort gegevens",
        "basis": "Toestemming",
        "none": "Er zijn geen gegevens over u verstrekt of ingezien.",
        "made": "Opgesteld op",
    },
    "en": {
        "title": "Report of data disclosed",
        "intro": "This report lists every organisation that received or viewed data about you through "
        "Schakel: when, what kind of data and on which consent (GDPR article 15).",
        "when": "When",
        "who": "Organisation",
        "what": "What",
        "kind": "Kind of data",
        "basis": "Consent",
        "none": "No data about you was disclosed or viewed.",
        "made": "Made on",
    },
}
_ACTIONS = {
    "release": ("verwijzing ontvangen", "received the referral"),
    "registration": (
        "registratie ontvangen (gemeente)",
        "received the registration (municipality)",
    ),
    "update": ("wijziging ontvangen", "received an update"),
    "revoke-notice": ("bericht: toestemming ingetrokken", "notice: consent withdrawn"),
    "revoke-notice (consent-expired)": (
        "bericht: toestemming verlopen",
        "notice: consent period ended",
    ),
    "feedback-forwarded": ("terugkoppeling ontvangen", "received feedback"),
    "overdue-notice": ("bericht: contacttermijn verstreken", "notice: contact term passed"),
    "read": ("gegevens ingezien", "viewed data"),
    "submit": ("gegevens aangeleverd", "submitted data"),
}
_DATA = {
    "referral": (
        "verwijzing (naam, geboortedatum, reden, verwijzer)",
        "referral (name, birth date, reason, referrer)",
    ),
    "contact-phone": ("telefoonnummer", "phone number"),
    "contact-email": ("e-mailadres", "e-mail address"),
    "contact-address": ("adres", "address"),
    "reason": ("reden van verwijzing", "reason for referral"),
    "bsn": ("BSN", "BSN"),
    "ids": ("alleen kenmerken", "identifiers only"),
    "feedback-status": ("status", "status"),
    "feedback-summary": ("samenvatting", "summary"),
}


def _org(participants: Participants, pid: str | None) -> str:
    if not pid:
        return "—"
    participant = participants.get(pid)
    if participant is not None:
        return participant.name
    # an operator, by role: the patient's report names organisations, not their staff
    return "Beheerder / operator" if pid.split(":")[0] == OPERATOR_ROLE else pid


def subject_access_html(lines: list[TrailLine], participants: Participants, made: datetime) -> str:
    """A readable HTML document in Dutch and English. Names organisations, never the patient."""
    sections = []
    for lang, index in (("nl", 0), ("en", 1)):
        text = _TEXT[lang]
        rows = []
        for line in lines:
            receiver = line.recipient if line.action in DISCLOSURES else line.by
            what = _ACTIONS.get(line.what, (line.what, line.what))[index]
            kinds = ", ".join(_DATA.get(k, (k, k))[index] for k in line.data.split(",") if k)
            rows.append(
                "<tr>"
                f"<td>{html.escape(line.at.strftime('%Y-%m-%d %H:%M'))}</td>"
                f"<td>{html.escape(_org(participants, receiver))}</td>"
                f"<td>{html.escape(what)}</td>"
                f"<td>{html.escape(kinds)}</td>"
                f"<td>{html.escape(line.consent_id or '—')}</td>"
                "</tr>"
            )
        table = (
            f"<table><thead><tr><th>{text['when']}</th><th>{text['who']}</th><th>{text['what']}</th>"
            f"<th>{text['kind']}</th><th>{text['basis']}</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            if rows
            else f"<p>{text['none']}</p>"
        )
        sections.append(
            f'<section lang="{lang}"><h1>{text["title"]}</h1><p>{text["intro"]}</p>{table}'
            f"<p><small>{text['made']} {made.strftime('%Y-%m-%d %H:%M')} UTC</small></p></section>"
        )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#1d2733}"
        "table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.4rem;border-bottom:1px solid #ccd}"
        "section{margin-bottom:3rem}"
    )
    return (
        '<!doctype html><html lang="nl"><head><meta charset="utf-8">'
        f"<title>Schakel — {_TEXT['nl']['title']} / {_TEXT['en']['title']}</title><style>{style}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )
