"""The bench's stores (issue #9): a fresh SQLite file per hub run by default, or with
`--store` a fresh database per run on a real PostgreSQL server, dropped at the end; and a
smoke run of the hub's phases on PostgreSQL that counts every release and replays the live
store without a difference."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import psycopg
import pytest
from sqlalchemy.engine import make_url

from bench.stores import StoreError, Stores
from tests.conftest import ARTIFACTS

ROOT = Path(__file__).resolve().parents[2]


def _databases(admin_url: str, like: str) -> set[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (like,))
        return {row[0] for row in rows}


def test_sqlite_by_default(tmp_path: Path) -> None:
    stores = Stores(tmp_path, "abc123")
    assert stores.url("throughput") == f"sqlite:///{tmp_path / 'throughput.db'}"
    assert stores.server_cpu() is None
    assert stores.shown_url is None
    stores.drop_all()  # nothing to drop


def test_postgresql_database_per_run_created_once_and_dropped(
    tmp_path: Path, postgres_admin_url: str
) -> None:
    stores = Stores(tmp_path, "t0a1b2", postgres_admin_url)
    url = stores.url("latency-500")
    assert make_url(url).database == "schakel_bench_t0a1b2_latency_500"
    assert _databases(postgres_admin_url, "schakel_bench_t0a1b2_%") == {
        "schakel_bench_t0a1b2_latency_500"
    }
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
    assert stores.url("latency-500") == url  # the same store again (replay reads the live one)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
    held = psycopg.connect(url)  # a connection left open (a hub that died) does not stop it
    try:
        stores.drop_all()
    finally:
        held.close()
    assert _databases(postgres_admin_url, "schakel_bench_t0a1b2_%") == set()


def test_postgresql_server_cpu_counted_where_it_runs_here(
    tmp_path: Path, postgres_admin_url: str
) -> None:
    stores = Stores(tmp_path, "cpu001", postgres_admin_url)
    cpu = stores.server_cpu()
    if _postgres_runs_here():
        assert isinstance(cpu, float) and cpu > 0
    else:
        assert cpu is None


def _postgres_runs_here() -> bool:
    return any(
        (p.info.get("name") or "").startswith("postgres") for p in psutil.process_iter(["name"])
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite:///elsewhere.db", "takes a PostgreSQL URL"),
        ("::not a url", "not a database URL"),
        ("postgresql://nobody@127.0.0.1:1/none", "PostgreSQL does not answer"),
    ],
)
def test_unusable_store_is_said_plainly(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(StoreError, match=says):
        Stores(tmp_path, "bad000", url)


def test_bad_store_ends_the_bench_with_a_message() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--store", "mysql://x@localhost/y"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert "FAILED: --store takes a PostgreSQL URL" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    assert "broker" not in run.stdout  # said before a broker was started


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--hub-processes", "2"], "needs --store (PostgreSQL)"),
        (["--hub-processes", "0"], "must be 1 or more"),
        (["--latency-repeats", "0"], "--latency-repeats must be 1 or more"),
        (["--rates", "500,fast"], "not 'fast'"),
        (["--rates", "0"], "0 is not an offered rate"),
        (
            ["--hub-processes", "4", "--partitions", "3", "--store", "postgresql://x@h/d"],
            "more than",
        ),
    ],
)
def test_bad_options_refused_before_anything_runs(options: list[str], says: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert says in run.stderr
    assert "[bench" not in run.stdout  # refused before a broker or a store was touched


def test_smoke_run_of_two_hubs_on_postgresql(tmp_path: Path, postgres_admin_url: str) -> None:
    """Two hub processes share the throughput run (one consumer group, one store)."""
    out = tmp_path / "results"
    started = time.time() - 1
    ARTIFACTS.mkdir(exist_ok=True)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--phases",
            "throughput,offline",
            "--store",
            postgres_admin_url,
            "--hub-processes",
            "2",
            "--out",
            str(out),
            "--log-dir",
            str(ARTIFACTS),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    document = orjson.loads((out / "latest.json").read_bytes())
    results, n = document["results"], document["sizes"]["referrals"]
    assert results["store"]["kind"].startswith("PostgreSQL at ")
    hub = results["throughput"]["hub"]
    assert hub["processes"] == 2
    assert hub["releases_counted"] == n and hub["duplicates"] == 0
    assert hub["audit_entries"] == n
    replay = results["replay"]["replay"]
    assert replay["records"] == 2 * n and replay["differences"] == 0
    if _postgres_runs_here():  # its processes' CPU is counted (else there is none to count)
        assert hub["store_cpu_ms_per_referral"] > 0
    else:
        assert hub["store_cpu_ms_per_referral"] is None
    table = (out / "latest.md").read_text(encoding="utf-8")
    assert "Store: PostgreSQL at " in table and " --store postgresql://" in table
    assert "--hub-processes 2" in table and "; 2 hub processes |" in table
    hub_logs = sorted(ARTIFACTS.glob("bench-hub-throughput*.log"))
    assert [p.name for p in hub_logs] == ["bench-hub-throughput-2.log", "bench-hub-throughput.log"]
    for log in hub_logs:  # both written by this run, each by a hub that started
        assert log.stat().st_mtime >= started
        assert "hub started" in log.read_text(encoding="utf-8")
    assert _databases(postgres_admin_url, "schakel_bench_%") == set()  # all dropped
