"""Database plumbing: declarative base with a naming convention, engine options, SQLite tuning."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

# Named constraints make migrations reproducible and let SQLite batch mode find them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def engine_options(database_url: str, config: Any) -> dict[str, Any]:
    """Engine keyword arguments for the URL's backend."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        # One connection per thread is fine for SQLite; a long busy timeout turns lock
        # contention between processes into waiting instead of errors.
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    options: dict[str, Any] = {
        "pool_size": config.DB_POOL_SIZE,
        "max_overflow": config.DB_MAX_OVERFLOW,
        "pool_timeout": config.DB_POOL_TIMEOUT,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
    }
    if url.get_backend_name() == "postgresql":
        # connect_args replaces the URL's own `options`, so carry those over (search_path...).
        server_options = f"-c statement_timeout={int(config.DB_STATEMENT_TIMEOUT_MS)}"
        if url.query.get("options"):
            server_options = f"{url.query['options']} {server_options}"
        options["connect_args"] = {
            "connect_timeout": max(1, int(config.DB_CONNECT_TIMEOUT)),
            "options": server_options,
        }
    return options


WRITE_OPTION = "modelreg_write"


def tune_engine(engine: Engine) -> None:
    """SQLite: WAL, foreign keys, and BEGIN IMMEDIATE for write units of work.

    pysqlite's own transaction handling starts transactions lazily, so two writers can both
    read and then deadlock on the upgrade to a write lock; taking the write lock at BEGIN for
    units of work that write makes them queue on the busy timeout instead.
    """
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
