"""Reading the audit trail: verify the chain, a referral's trail, a patient's access report
(AVG art. 15). Pure over the store; the CLI prints what these return."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from adapters.fhir.audit_event import chain_fields
from adapters.storage.store import Store, Tx
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


def verify_store(
    store: Store, progress: Callable[[int], None] | None = None, every: int = 50_000
) -> VerifyReport:
    started = time.perf_counter()

    def links() -> Iterator[Link]:
        for count, (seq, prev, digest, form) in enumerate(store.audit_links(), 1):
            claimed_seq, claimed_prev = chain_fields(form)
            if progress is not None and count % every == 0:
                progress(count)
            yield Link(seq, prev, digest, form, claimed_seq, claimed_prev)

    verdict = verify(links())
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
        }


def _line(entry: AuditEntry) -> TrailLine:
    event = orjson.loads(entry.canonical)
    data = ""
    for entity in event.get("entity", ()):
        for detail in entity.get("detail", ()):
            if detail.get("type") == "data":
                data = detail.get("valueString", "")
    outcome = {"0": "success"}.get(event.get("outcome", ""), "refused")
    return TrailLine(
        entry.seq,
        entry.recorded,
        entry.action,
        entry.actor,
        entry.recipient,
        data,
        entry.consent_id,
        outcome,
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
                actor_role="operator",
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
    return (
        participant.name if participant else ("Beheerder / operator" if pid == "operator" else pid)
    )


def subject_access_html(lines: list[TrailLine], participants: Participants, made: datetime) -> str:
    """A readable HTML document in Dutch and English. Names organisations, never the patient."""
    sections = []
    for lang, index in (("nl", 0), ("en", 1)):
        text = _TEXT[lang]
        rows = []
        for line in lines:
            receiver = line.recipient if line.action in DISCLOSURES else line.by
            what = _ACTIONS.get(line.action, (line.action, line.action))[index]
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
