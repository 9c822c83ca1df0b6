"""Alembic environment: runs against the engine handed in by `migrations.upgrade`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from registry import models  # noqa: F401 - registers the tables on the metadata
from registry.db import Base, tune_engine

ADVISORY_LOCK_ID = 0x6D6F64656C726567 & 0x7FFFFFFFFFFFFFFF  # "modelreg"


def run_migrations() -> None:
    config = context.config
    engine = config.attributes.get("engine")
    if engine is None:  # plain `alembic` CLI use
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        tune_engine(engine)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Several processes may start at once; one migrates, the others wait.
                connection.execute(text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_ID})"))
            context.run_migrations()


run_migrations()
