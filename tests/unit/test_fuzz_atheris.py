"""The atheris run of every inbound parser (tests/fuzz/parsers.py), bounded in time and
memory: no crash, no hang, no refusal without a reason (issue #8)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ARTIFACTS

ROOT = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("SCHAKEL_FUZZ_SECONDS", "20"))
RSS_LIMIT_MB = 1024


def _without_dictionary(output: str) -> str:
    """libFuzzer ends with a 'recommended dictionary', and its progress lines name the
    dictionary entries a mutation used (`DE: "..."`): snippets of fuzz inputs (seeded from
    the synthetic fixtures), not log output. The rest goes to the run's log check."""
    output = re.sub(
        r"###### Recommended dictionary\. ######.*?###### End of recommended dictionary\. ######\n?",
        "",
        output,
        flags=re.S,
    )
    return re.sub(r' DE: (?:"(?:[^"\\\n]|\\.)*"-?)+', " DE: [fuzz input]-", output)


def test_atheris_finds_nothing_in_a_bounded_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.parsers",
            f"-max_total_time={SECONDS}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            "-timeout=10",  # one input taking 10 s counts as a hang
            "-print_final_stats=1",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    output = _without_dictionary(result.stdout + result.stderr)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fuzz-atheris.log").write_text(output, encoding="utf-8")
    assert result.returncode == 0, output[-3000:]
    assert list(tmp_path.iterdir()) == [], "libFuzzer wrote a crash, leak or timeout artifact"
    stats = dict(re.findall(r"stat::(\w+):\s+(\d+)", output))
    assert int(stats["number_of_executed_units"]) > 10_000, stats
    assert int(stats["peak_rss_mb"]) < RSS_LIMIT_MB, stats
    print(
        f"atheris: {stats['number_of_executed_units']} inputs in {SECONDS} s, "
        f"{stats['new_units_added']} new coverage units, peak RSS {stats['peak_rss_mb']} MB"
    )
