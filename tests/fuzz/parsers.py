"""Coverage-guided fuzzing of every parser the hub runs on bytes from outside (atheris,
libFuzzer). The first byte of each input picks the parser: referral Bundle, Consent
(granted), Consent (withdrawn), feedback JSON, XML through the hub's safe lxml parser and
XSD. Anything but a reasoned refusal (`SchakelError`) or a value is a finding.

    python -m tests.fuzz.parsers -max_total_time=30 -rss_limit_mb=2048 -timeout=10

(`tests/unit/test_fuzz_atheris.py` runs it for a bounded time in the test suite.)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["adapters", "schemas"]):
    from adapters.fhir.consent import WITHDRAWN, consent_from_bytes
    from adapters.fhir.referral import referral_from_bytes
    from adapters.municipal.iwmo import validate
    from adapters.participants import load_participants
    from adapters.welfare.feedback import feedback_from_bytes
    from schemas.errors import SchakelError

from services.demo.samples import consent_resource, fictional_bsn, referral_bundle, to_bytes
from services.settings import DEMO_PARTICIPANTS

PARTICIPANTS = load_participants(DEMO_PARTICIPANTS)
PARSERS = (
    lambda raw: referral_from_bytes(raw, PARTICIPANTS),
    lambda raw: consent_from_bytes(raw, PARTICIPANTS),
    lambda raw: consent_from_bytes(raw, PARTICIPANTS, expected_status=WITHDRAWN),
    feedback_from_bytes,
    validate,
)
XML_BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;">]><r xmlns="urn:schakel:wmo:registratie:1">&c;</r>'
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<r xmlns="urn:schakel:wmo:registratie:1">&x;</r>'
)


def seeds() -> list[bytes]:
    """Valid inputs for each parser (synthetic fixtures), and the classic XML attacks."""
    feedback = (
        b'{"referral_id": "VERW-F-1", "organisation": "welzijn-hoogeveen", "status": '
        b'"contacted", "occurred_at": "2026-12-02T10:00:00+01:00", "summary": "Contact gehad."}'
    )
    return [
        b"\x00" + to_bytes(referral_bundle("VERW-F-1", bsn=fictional_bsn(1))),
        b"\x01" + to_bytes(consent_resource("c-F-1", referral_id="VERW-F-1")),
        b"\x02" + to_bytes(consent_resource("c-F-1", referral_id="VERW-F-1", status="inactive")),
        b"\x03" + feedback,
        b"\x04" + XML_BOMB,
        b"\x04" + XXE,
    ]


def one_input(data: bytes) -> None:
    if not data:
        return
    parse = PARSERS[data[0] % len(PARSERS)]
    try:
        parse(data[1:])
    except SchakelError as exc:
        if not (exc.reason and exc.detail):
            raise AssertionError("a refusal without reason or detail") from exc


def main(argv: list[str]) -> None:
    corpus = Path(tempfile.mkdtemp(prefix="schakel-fuzz-"))
    for i, seed in enumerate(seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    atheris.Setup([argv[0], *argv[1:], str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
