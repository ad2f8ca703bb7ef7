"""`python -m bench.pipeline`: the hub's pipelines in-process, without a broker. Its figures
are not checked (benchmarks are not timed tests); that it measures a run in which every
referral was released, and refuses what it cannot measure, is; and that the bench's table
relates the live hub's CPU to it as it says."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import pipeline, report

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.pipeline", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_small_run_reports_cpu_per_referral_for_each_run() -> None:
    done = _run("--referrals", "30", "--runs", "2", "--batch", "8")
    assert done.returncode == 0, done.stderr
    runs = re.findall(r"^run (\d)/2: (\d+\.\d+) ms CPU per referral$", done.stdout, re.M)
    assert [n for n, _ in runs] == ["1", "2"]
    assert all(float(ms) > 0 for _, ms in runs)
    assert re.search(
        r"^CPU per referral: median \d+\.\d+ ms, lowest \d+\.\d+ ms", done.stdout, re.M
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("option", ["--referrals", "--runs", "--batch"])
def test_sizes_below_one_are_refused(option: str) -> None:
    done = _run(option, "0")
    assert done.returncode == 2
    assert f"{option} must be at least 1" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_run_that_releases_fewer_referrals_than_it_sent_gives_no_figure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def short(folder: Path, n: int, batch: int, run: str) -> tuple[float, int]:
        return 1.0, n - 1

    monkeypatch.setattr(pipeline, "one_run", short)
    out = io.StringIO()
    with pytest.raises(RuntimeError, match="run 1: 9 releases stored for 10 referrals"):
        asyncio.run(pipeline.measure(10, 1, 4, out))
    assert out.getvalue() == ""


def test_one_run_releases_every_referral_of_its_own_store(tmp_path: Path) -> None:
    cpu, released = asyncio.run(pipeline.one_run(tmp_path, 12, 5, "unit"))
    assert released == 12
    assert cpu > 0


def _machine_rows(results: dict[str, object]) -> dict[str, float]:
    return {
        row["figure"]: row["hub"] for row in report.figures(results) if row["section"] == "machine"
    }


def test_the_table_gives_the_live_hubs_cpu_over_its_pipelines_at_the_start() -> None:
    calibration = {"start": {"median_ms": 0.8}, "end": {"median_ms": 1.6}}
    throughput = {"hub": {"cpu_ms_per_referral": 1.0, "processes": 1}}
    sqlite = {"kind": "SQLite (a fresh file per run)", "url": None}
    rows = _machine_rows({"calibration": calibration, "throughput": throughput, "store": sqlite})
    (over,) = (value for figure, value in rows.items() if "over its pipelines'" in figure)
    assert over == pytest.approx(1.25)  # the start's figure, not the end's

    # not where the hub ran otherwise than the pipelines (another store, several processes),
    # nor without both figures
    postgresql = {"kind": "PostgreSQL", "url": "postgresql://postgres@127.0.0.1:5432/test"}
    two = {"hub": {"cpu_ms_per_referral": 1.0, "processes": 2}}
    for results in (
        {"calibration": calibration, "throughput": throughput, "store": postgresql},
        {"calibration": calibration, "throughput": two, "store": sqlite},
        {"throughput": throughput, "store": sqlite},
        {"calibration": calibration, "store": sqlite},
    ):
        assert not any("over its pipelines'" in figure for figure in _machine_rows(results))
