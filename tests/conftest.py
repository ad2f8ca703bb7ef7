"""Shared fixtures. The broker comes from the environment: `KAFKA_BOOTSTRAP_SERVERS` if
set, else testcontainers' Kafka where a Docker engine answers, else the embedded Tansu.
PostgreSQL is required (127.0.0.1:5432 by default, `SCHAKEL_TEST_POSTGRES_URL` to change):
if it does not answer, the tests that need it fail; they are never skipped."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.participants import load_participants
from schemas.participants import Participants
from services.settings import DEMO_PARTICIPANTS

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
    configure_logging("WARNING", "json")


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
