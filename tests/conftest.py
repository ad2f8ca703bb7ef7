"""Shared fixtures. The broker comes from the environment: `KAFKA_BOOTSTRAP_SERVERS` if
set, else testcontainers' Kafka where a Docker engine answers, else the embedded Tansu.
PostgreSQL is required (127.0.0.1:5432 by default, `SCHAKEL_TEST_POSTGRES_URL` to change):
if it does not answer, the tests that need it fail; they are never skipped."""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from adapters.participants import load_participants
from schemas.participants import Participants
from services.settings import DEMO_PARTICIPANTS

if TYPE_CHECKING:
    from services.runtime import Hub

ROOT = Path(__file__).resolve().parents[1]
# The official FHIR examples live beside the project (../shared), read in place.
CORPUS = Path(os.environ.get("SCHAKEL_FHIR_CORPUS", ROOT.parent / "shared" / "corpus" / "fhir"))
POSTGRES_URL = os.environ.get(
    "SCHAKEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def participants() -> Participants:
    return load_participants(DEMO_PARTICIPANTS)


def _docker_answers() -> bool:
    try:
        import docker  # testcontainers depends on it

        docker.from_env(timeout=2).ping()
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: all mean "no"
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield bootstrap
    elif _docker_answers():  # pragma: no cover - no Docker engine on our machines
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield container.get_bootstrap_server()
    else:
        from adapters.broker.embedded import EmbeddedBroker

        ARTIFACTS.mkdir(exist_ok=True)
        with EmbeddedBroker(log_dir=ARTIFACTS) as broker:
            yield broker.bootstrap


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    import psycopg

    try:
        with psycopg.connect(
            POSTGRES_URL.replace("postgresql://", "postgresql://", 1), connect_timeout=5
        ):
            pass
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is required for the tests and does not answer at {POSTGRES_URL}: {exc}"
        )
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database per test, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"schakel_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def log_capture() -> Iterator[io.StringIO]:
    """All log output (structlog and stdlib) of one test, as JSON lines."""
    from adapters.logging import configure_logging

    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    yield buffer
    configure_logging("INFO", "json", stream=_run_stream())


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite tests/golden files (review the diff)"
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Compare text with tests/golden/<name>; `--update-golden` rewrites it instead."""

    def check(name: str, text: str | bytes) -> None:
        """Byte for byte: line ends (CRLF in iWmo XML) are part of the format."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        path = ROOT / "tests" / "golden" / name
        if request.config.getoption("--update-golden"):
            path.write_bytes(data)
        assert path.exists(), f"no golden file {path}; run pytest --update-golden and review it"
        assert data == path.read_bytes()

    return check


# --- privacy under failure -------------------------------------------------------------
# Every log line of the whole run (in-process hubs, libraries, tracebacks) goes to
# test-artifacts/test-run.log through the redacting handler; hub processes started by
# tests write their logs under test-artifacts/ too. At the end the run fails if any of it
# holds a fixture BSN or patient name.
RUN_LOG = ARTIFACTS / "test-run.log"
FIXTURE_NAMES = ("Vries-Bakker", "Wilhelmina", "Oosterhuis-Smit", "Bram Bos", "Claassen", "Zoë")


_RUN_STREAMS: list[io.TextIOWrapper] = []


def _run_stream() -> io.TextIOWrapper:
    if not _RUN_STREAMS:
        ARTIFACTS.mkdir(exist_ok=True)
        _RUN_STREAMS.append(RUN_LOG.open("w", encoding="utf-8"))
    return _RUN_STREAMS[0]


def pytest_configure(config: pytest.Config) -> None:
    import faulthandler
    import signal

    from adapters.logging import configure_logging

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` shows where a run hangs
    configure_logging("INFO", "json", stream=_run_stream())


def _personal_data_in(text: str) -> list[str]:
    import re

    from schemas.identifiers import bsn_valid

    found = sorted(
        {
            m
            for m in re.findall(r"(?<![0-9])(9999[0-9]{5}|123456782)(?![0-9])", text)
            if bsn_valid(m)
        }
    )
    found += [name for name in FIXTURE_NAMES if name in text]
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for stream in _RUN_STREAMS:
        stream.flush()
    problems = []
    for path in sorted(ARTIFACTS.glob("*.log")):
        leaked = _personal_data_in(path.read_text("utf-8", "replace"))
        if leaked:
            problems.append(f"{path.name}: {len(leaked)} fixture BSN(s)/name(s)")
    if problems:
        session.config.get_terminal_writer().line(
            "PERSONAL DATA IN LOG OUTPUT: " + "; ".join(problems), red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def hub_on(url: str, **kwargs: object) -> Hub:
    """A hub that is never started (its pipelines driven in-process) on the store at `url`,
    migrated, with the demo participants and no topic prefix; `kwargs` go to `Hub` (e.g.
    `clock`)."""
    from adapters.storage.store import Store
    from schemas.topics import Topics
    from services.runtime import Hub
    from services.settings import HubSettings

    store = Store(url)
    store.migrate()
    return Hub(
        settings=HubSettings(database_url=url),
        participants=load_participants(DEMO_PARTICIPANTS),
        store=store,
        topics=Topics(""),
        **kwargs,  # type: ignore[arg-type]
    )


def api_request(
    hub: Hub,
    method: str,
    path: str,
    *,
    token: str,
    publish: Any,
    views: Any = None,
    content: bytes | None = None,
) -> Any:
    """One request to the HTTP app in-process (ASGI, no server), on `hub`'s store with the
    demo participants' tokens, `publish` standing in for the broker edge and `views` for
    the store's views (default: the real ones); the `httpx.Response`."""
    import httpx

    from adapters.storage.views import Views
    from services.api.app import create_app
    from services.api.auth import Authenticator
    from services.api.context import ApiContext

    async def ready() -> dict[str, str]:
        return {}

    context = ApiContext(
        hub=hub,
        views=views if views is not None else Views(hub.store),
        auth=Authenticator(hub.participants, None, "a-session-secret"),
        publish=publish,
        ready=ready,
    )

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(context))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return await client.request(
                method, path, content=content, headers={"Authorization": f"Bearer {token}"}
            )

    return asyncio.run(call())


class HeldWriteLock:
    """Another writer holding an SQLite database's write lock until the first `release`.
    A watchdog thread releases it after `timeout` seconds: only a regression that blocks
    the event loop (so that nothing on it can let go) leaves it to the watchdog, and the
    test then fails on `released_by` instead of hanging."""

    def __init__(self, db: Path, timeout: float) -> None:
        self._conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self._conn.execute("BEGIN IMMEDIATE")
        self._lock = threading.Lock()
        self.released = threading.Event()
        self.released_by: list[str] = []
        self._watchdog = threading.Timer(timeout, self.release, ("watchdog",))
        self._watchdog.start()

    def release(self, by: str) -> None:
        with self._lock:
            if not self.released.is_set():
                self.released_by.append(by)
                self.released.set()  # before the COMMIT: nothing can be applied before it
                self._conn.execute("COMMIT")

    def close(self) -> None:
        self._watchdog.cancel()
        self.release("test end")
        self._conn.close()


class LoopTurns:
    """Counts the event loop's turns from a task of its own (start it on the loop)."""

    def __init__(self) -> None:
        self.count = 0
        self._ticked = asyncio.Event()
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            self.count += 1
            self._ticked.set()
            await asyncio.sleep(0)

    async def wait(self, n: int) -> None:
        """Until the loop has turned `n` more times."""
        for _ in range(n):
            self._ticked.clear()
            await self._ticked.wait()

    def stop(self) -> None:
        self._task.cancel()
