"""The durable store: SQLAlchemy 2 Core, one code path for SQLite and PostgreSQL."""
