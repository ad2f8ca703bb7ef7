"""Settings shared by every service: `SCHAKEL_*` plus the bare `KAFKA_BOOTSTRAP_SERVERS`."""

from __future__ import annotations

import getpass
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.access import OPERATOR_NAME, OPERATOR_NAME_RULE, operator_actor

DEMO_PARTICIPANTS = Path(__file__).parent / "demo" / "participants.toml"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _login_name() -> str | None:
    """The name of the account running this process, when it has a usable one."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError, ImportError):  # an account with no name (a container's uid)
        return None
    return name if OPERATOR_NAME.fullmatch(name) else None


def _named(value: str) -> dict[str, str]:
    """`name=digest,name=digest` read, or ValueError naming the entry by position (a digest
    is a secret's hash and is never repeated in an error)."""
    named: dict[str, str] = {}
    for i, entry in enumerate((e.strip() for e in value.split(",") if e.strip()), start=1):
        name, sep, digest = (part.strip() for part in entry.partition("="))
        if not sep or not OPERATOR_NAME.fullmatch(name):
            raise ValueError(f"entry {i} must be name=<SHA-256 hex>; the name {OPERATOR_NAME_RULE}")
        if not _SHA256.fullmatch(digest.lower()):
            raise ValueError(f"entry {i} ({name}): the SHA-256 of the token, 64 hex digits")
        if name in named:
            raise ValueError(f"entry {i}: {name} is named twice")
        named[name] = digest.lower()
    return named


class HubSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SCHAKEL_", extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="Kafka to use; unset: start the embedded broker",
    )
    topic_prefix: str = Field(default="", description="prepended to every topic name, as given")
    database_url: str = Field(default="sqlite:///var/schakel.db")
    participants: Path | None = Field(
        default=None, description="participants TOML; unset: the demo file (with a warning)"
    )
    env: Literal["development", "production"] = Field(
        default="development", description="production refuses BSNs from the test range"
    )
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1)
    consumer_group_prefix: str = Field(
        default="schakel", description="group ids: <prefix>-<service>"
    )
    max_message_bytes: int = Field(default=1_000_000, ge=1024)
    fetch_max_wait_ms: int = Field(default=50, ge=0)
    session_timeout_ms: int | None = Field(
        default=None, description="unset: 1000 on the embedded broker, 10000 on Kafka"
    )
    heartbeat_interval_ms: int | None = None
    retention_days: int = Field(
        default=7305, ge=1, description="closed registrations are kept this long (WGBO: 20 years)"
    )
    outbox_keep_days: float = Field(
        default=7.0,
        gt=0,
        description="the store's copies of published messages are deleted this long after "
        "publishing (dead letters stay until `schakel dlq` handles them)",
    )
    http_enabled: bool = Field(default=True, description="serve the HTTP API and console")
    http_host: str = Field(default="127.0.0.1")
    http_port: int = Field(default=8080, ge=0, le=65535, description="0: a free port")
    operator_token_sha256: SecretStr | None = Field(
        default=None, description="SHA-256 (hex) of the operator's bearer token"
    )
    operator_tokens_sha256: SecretStr | None = Field(
        default=None,
        description="named operators' bearer tokens: name=<SHA-256 hex>, comma-separated; "
        "each one's reads are audited under its name",
    )
    operator: str | None = Field(
        default=None,
        description="who runs the operator commands, recorded as the actor of their audit "
        "entries; unset: the login name of the account running them",
    )
    session_secret: SecretStr | None = Field(
        default=None, description="signs console sessions; unset: a random one per process"
    )
    session_cookie_secure: bool = Field(
        default=True,
        description="console session cookies go only over HTTPS (browsers send them to "
        "http://localhost and 127.0.0.1 too); false only for a console served over plain HTTP "
        "to another host",
    )
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    broker_watch_seconds: float = Field(
        default=2.0,
        ge=0,
        description="how often to check that the broker kept its state (0: never)",
    )
    embedded_broker_port: int | None = None
    embedded_broker_log_dir: Path | None = None

    @field_validator("operator_token_sha256")
    @classmethod
    def _a_digest(cls, value: SecretStr | None) -> SecretStr | None:
        # The token itself pasted here would give no operator access, silently.
        if value is not None and not _SHA256.fullmatch(value.get_secret_value().strip().lower()):
            raise ValueError("must be the SHA-256 of the token: 64 hex digits, not the token")
        return value

    @field_validator("operator_tokens_sha256")
    @classmethod
    def _named_digests(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _named(value.get_secret_value())  # refused at start, not at the first sign-in
        return value

    @field_validator("operator")
    @classmethod
    def _a_name(cls, value: str | None) -> str | None:
        name = (value or "").strip()
        if name and not OPERATOR_NAME.fullmatch(name):
            raise ValueError(OPERATOR_NAME_RULE)
        return name or None  # empty, as an unset variable often is: the login name

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"not a log level; use one of {', '.join(LOG_LEVELS)}")
        return level

    @property
    def allow_test_bsn(self) -> bool:
        return self.env != "production"

    @property
    def operator_actor(self) -> str:
        """The actor of an operator command's audit entries: `operator` named, else the
        login name, else the role alone."""
        return operator_actor(self.operator or _login_name())

    @property
    def operator_digests(self) -> dict[str, str]:
        """The named operators' token digests, by name."""
        tokens = self.operator_tokens_sha256
        return _named(tokens.get_secret_value()) if tokens is not None else {}

    def group_id(self, service: str) -> str:
        return f"{self.topic_prefix}{self.consumer_group_prefix}-{service}"
