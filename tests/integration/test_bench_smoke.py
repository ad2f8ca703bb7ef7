"""The bench's smoke mode (issue #9) runs on a real broker (KAFKA_BOOTSTRAP_SERVERS when
set, else the embedded one the bench starts) and writes well-formed results.

Benchmarks are not timed tests: no figure is compared with a number here. What is checked
is that every measurement was made, counted everything that was sent (a lost or doubled
release fails this test), and ended up in the JSON, the Markdown table and the plot."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.pipeline import ON_LOOP_RECORDS
from tests.conftest import ARTIFACTS

ROOT = Path(__file__).resolve().parents[2]
GOALS = 4


def _numbers(node: Any) -> list[float]:
    if isinstance(node, bool) or node is None or isinstance(node, str):
        return []
    if isinstance(node, int | float):
        return [float(node)]
    if isinstance(node, dict):
        return [n for v in node.values() for n in _numbers(v)]
    if isinstance(node, list | tuple):
        return [n for v in node for n in _numbers(v)]
    return []


def test_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results"
    ARTIFACTS.mkdir(exist_ok=True)  # the hub's logs land there: the run's privacy check reads them
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--log-dir", str(ARTIFACTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "[bench" in run.stdout  # progress is printed while it runs

    document = orjson.loads((out / "latest.json").read_bytes())
    sizes, results = document["sizes"], document["results"]
    assert document["environment"]["smoke"] is True
    n = sizes["referrals"]

    raw, hub = results["throughput"]["raw"], results["throughput"]["hub"]
    assert raw["events"] == 2 * n
    assert hub["events"] == 2 * n
    assert hub["releases_counted"] == n
    assert hub["duplicates"] == 0
    assert hub["audit_entries"] == n  # one release each, every one audited and published

    replay = results["replay"]
    assert replay["raw_read"]["records"] == 2 * n
    assert replay["replay"]["records"] == 2 * n
    assert replay["replay"]["differences"] == 0
    audit = results["audit"]
    assert audit["raw_read"]["records"] == n
    assert audit["hub_chain"]["entries"] >= n
    assert audit["filled"]["entries"] == sizes["audit_entries"]

    for kind in ("raw", "hub"):
        assert sorted(results["latency"][kind], key=int) == [str(r) for r in sizes["rates"]]
        for stats in results["latency"][kind].values():
            assert stats["complete"] and stats["missing"] == 0
            assert stats["measured"] > 0
            assert stats["p50_ms"] is not None and stats["p99_ms"] >= stats["p50_ms"]
            rounds = stats["runs"]  # every round measured its own sends, all of them
            assert len(rounds) == sizes["latency_repeats"] >= 2
            assert (
                stats["sent"] == sum(r["sent"] for r in rounds) == len(rounds) * rounds[0]["sent"]
            )
            assert all(r["complete"] and r["p99_ms"] is not None for r in rounds)
            assert all(r["cpu_ms_per_event"] > 0 and r["cpu_share"] > 0 for r in rounds)
            if kind == "hub":  # split at the commit: every measured release was committed
                assert all(r["split_measured"] == r["measured"] for r in rounds)
                for part in ("until_commit", "after_commit"):
                    assert all(0 < r[f"{part}_p50_ms"] <= r[f"{part}_p99_ms"] for r in rounds)
                # told apart by their commit stamps: never more than a transaction holds
                assert all(
                    1 <= r["releases_per_transaction_mean"] <= ON_LOOP_RECORDS
                    and r["transactions"] * r["releases_per_transaction_mean"]
                    == pytest.approx(r["sent"])
                    for r in rounds
                )

    for when in ("start", "end"):  # the machine's speed for the hub's Python, both ends
        calibration = results["calibration"][when]
        assert calibration["referrals"] == sizes["calibration_referrals"]
        assert len(calibration["ms_per_referral"]) == sizes["calibration_runs"]
        assert all(x > 0 for x in calibration["ms_per_referral"])
    over = [row for row in document["figures"] if "over its pipelines'" in row["figure"]]
    assert len(over) == 1 and over[0]["hub"] == pytest.approx(
        results["throughput"]["hub"]["cpu_ms_per_referral"]
        / results["calibration"]["start"]["median_ms"]
    )

    for kind in ("raw", "hub"):
        soak = results["soak"][kind]
        assert soak["events"] >= sizes["soak_events"]
        assert soak["samples"] and all(s[2] > 0 for s in soak["samples"])

    goals = document["goals"]
    assert len(goals) == GOALS
    assert all(g["pass"] in (True, False) for g in goals), goals  # all measured
    assert all(math.isfinite(x) for x in _numbers(document))
    for row in document["figures"]:
        assert set(row) == {"section", "figure", "unit", "hub", "raw", "ratio"}
        if row["ratio"] is not None:
            assert row["ratio"] == row["hub"] / row["raw"]

    table = (out / "latest.md").read_text(encoding="utf-8")
    assert "## Goals (issue #9)" in table
    lines = table.splitlines()
    goal_rows = [line for line in lines if "| PASS |" in line or "| FAIL |" in line]
    assert len(goal_rows) == GOALS
    figure_rows = [line for line in lines if line.startswith("| ") and line.count("|") == 7]
    assert len(figure_rows) == len(document["figures"]) + 1  # and the header
    assert "latest.png" in table
    assert "rounds of every rate, the raw pipe's and the hub's alternating" in table
    assert table.count(f"p99 of {sizes['latency_repeats']} rounds") >= 2 * len(sizes["rates"])

    png = (out / "latest.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 500 and height > 400
