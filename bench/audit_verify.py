"""How fast does `schakel audit verify` walk the chain? Fills a store with N real
AuditEvents (built and chained by the hub's own code, inserted in bulk) and times the
verification, on SQLite and optionally PostgreSQL.

    python bench/audit_verify.py [N] [--postgres URL]
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from adapters.fhir.audit_event import audit_event, canonical
from adapters.participants import load_participants
from adapters.storage import tables as t
from adapters.storage.store import Store
from schemas.audit import AuditRecord
from services.audit_reports import verify_store
from services.domain.audit_chain import GENESIS, entry_hash
from services.settings import DEMO_PARTICIPANTS


def fill(store: Store, n: int) -> float:
    participants = load_participants(DEMO_PARTICIPANTS)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    prev, rows, started = GENESIS, [], time.perf_counter()
    for seq in range(1, n + 1):
        record = AuditRecord(
            action="release",
            recorded=start + timedelta(seconds=seq),
            actor="schakel-hub",
            actor_role="hub",
            recipient="welzijn-hoogeveen",
            referral_id=f"VERW-{seq:08d}",
            registration_id=f"reg-{seq}",
            patient=f"{seq:032x}",
            consent_id=f"c-{seq}",
            data=("referral", "contact-phone"),
        )
        form = canonical(audit_event(record, seq=seq, prev_hash=prev, participants=participants))
        digest = entry_hash(form)
        rows.append(
            {
                "seq": seq,
                "recorded_at": record.recorded,
                "action": record.action,
                "actor": record.actor,
                "recipient": record.recipient,
                "referral_id": record.referral_id,
                "registration_id": record.registration_id,
                "patient": record.patient,
                "consent_id": record.consent_id,
                "canonical": form,
                "hash": digest,
                "prev_hash": prev,
            }
        )
        prev = digest
        if len(rows) == 20_000:
            with store.engine.begin() as conn:
                conn.execute(insert(t.audit_log), rows)
            rows = []
    if rows:
        with store.engine.begin() as conn:
            conn.execute(insert(t.audit_log), rows)
    return time.perf_counter() - started


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv and argv[0].isdigit() else 200_000
    urls = []
    with tempfile.TemporaryDirectory() as tmp:
        urls.append(("sqlite", f"sqlite:///{Path(tmp) / 'audit.db'}"))
        if "--postgres" in argv:
            urls.append(("postgresql", argv[argv.index("--postgres") + 1]))
        for name, url in urls:
            store = Store(url)
            store.migrate()
            filled = fill(store, n)
            report = verify_store(store, participants=load_participants(DEMO_PARTICIPANTS))
            assert report.verdict.ok and report.verdict.checked == n
            size = len(next(store.audit_rows())[3])
            print(
                f"{name}: {n} entries (~{size} B each) written in {filled:.1f} s; verified in "
                f"{report.seconds:.2f} s = {report.rate:,.0f} entries/s; 20 M would take "
                f"{20_000_000 / report.rate / 60:.1f} min"
            )
            store.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
