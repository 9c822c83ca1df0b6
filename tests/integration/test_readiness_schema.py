"""/readyz is not ready on a database whose schema this server cannot use.

In production migrations are a separate step (`modelreg db upgrade`, AUTO_MIGRATE off). A
server started on a database nobody migrated answered `ready` (SELECT 1 works) and then 500
on every request touching a table; a load balancer would route traffic to it.
"""

from __future__ import annotations

from sqlalchemy import text

import migrations
from tests.conftest import make_config


def _app(tmp_path, database_url):
    from manage import create_app

    return create_app(make_config(tmp_path, database_url, AUTO_MIGRATE=False))


def test_readyz_waits_for_the_migrations_and_accepts_a_newer_schema(tmp_path, database_url):
    app = _app(tmp_path, database_url)
    engine = app.extensions["modelreg"].engine
    client = app.test_client()
    try:
        ready = client.get("/readyz")  # never migrated
        assert ready.status_code == 503
        database = ready.json["checks"]["database"]
        assert database["status"] == "migration_required"
        assert "none" in database["detail"] and "modelreg db upgrade" in database["detail"]
        assert ready.json["checks"]["storage"]["status"] == "ok"

        migrations.upgrade(engine, "0001")  # behind this code's head
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "revision 0001" in ready.json["checks"]["database"]["detail"]

        migrations.upgrade(engine)
        assert client.get("/readyz").status_code == 200

        # Migrated ahead by a newer release during a rollout: this server keeps serving.
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'f999_future'"))
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json
        assert ready.json["checks"]["database"]["status"] == "ok"
    finally:
        engine.dispose()
