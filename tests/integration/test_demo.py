"""`schakel demo` as a user runs it: exits 0, shows the journey, shows no BSN."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from schemas.identifiers import bsn_valid
from services.demo.samples import DEMO_BSN

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_release_only_after_consent_and_no_bsn() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "100", "HOME": str(ROOT)},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    steps = [
        "received",
        "waiting for consent",
        "dead-lettered",
        "consent received",
        "released to Welzijn De Schakel Hoogeveen",
    ]
    positions = [output.find(step) for step in steps]
    assert -1 not in positions, positions
    assert positions == sorted(positions), "the journey is printed in order"
    assert '"referral_id": "VERW-2026-0001"' in output
    assert "released to Gemeente Hoogeveen" in output
    assert "<Bsn>*********</Bsn>" in output, "the municipal XML is shown with the BSN masked"
    assert "<Type>02</Type>" in output
    assert DEMO_BSN not in output
    assert not [n for n in re.findall(r"(?<!\d)\d{9}(?!\d)", output) if bsn_valid(n)]
    assert "FAILED" not in output
    # the hub's own /metrics, scraped at the end
    assert 'schakel_releases_total{recipient_kind="welfare"} 1' in output
    assert 'schakel_releases_total{recipient_kind="municipality"} 1' in output
    assert re.search(
        r'schakel_dead_letters_total\{reason="invalid-bsn",\s*topic="referral-created"\} 1', output
    )
