"""Alembic, run from code: `upgrade(engine)` brings any store to the newest schema.

On PostgreSQL an advisory lock makes concurrent start-ups of several hubs safe.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x5C4A_4B31  # arbitrary, fixed: "schakel migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config()
    if engine.dialect.name != "postgresql":
        _upgrade(engine, config, revision)
        return
    # The lock is taken on a connection of its own, outside any transaction: the upgrade's
    # transaction must begin only once the lock is held, or under SERIALIZABLE it would
    # see the schema as it was before the instance that held the lock migrated it.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock:
        lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
        try:
            _upgrade(engine, config, revision)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})


def _upgrade(engine: Engine, config: Config, revision: str) -> None:
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()
