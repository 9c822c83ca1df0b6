"""Alembic is the only way the schema is made: head must match the ORM models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import migrations
from registry import models  # noqa: F401 - registers the tables
from registry.db import Base, tune_engine

TABLES = {
    "registered_models",
    "model_versions",
    "aliases",
    "promotions",
    "events",
    "api_tokens",
    "token_epoch",
}


def _engine(url: str):
    engine = create_engine(url)
    tune_engine(engine)
    return engine


def test_upgrade_empty_database_to_head_matches_models(database_url):
    engine = _engine(database_url)
    try:
        migrations.upgrade(engine)
        assert migrations.current_revision(engine) == migrations.head_revision()
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(database_url):
    engine = _engine(database_url)
    try:
        migrations.upgrade(engine)
        migrations.downgrade(engine, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        migrations.upgrade(engine)
        assert not migrations.pending(engine)
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(database_url):
    engine = _engine(database_url)
    try:
        migrations.upgrade(engine)
        migrations.upgrade(engine)
        assert migrations.current_revision(engine) == migrations.head_revision()
    finally:
        engine.dispose()
