"""Composition root and command line: `create_app()` wires everything; `modelreg ...` drives it."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

import migrations
from config import Config
from registry.db import Base, engine_options, tune_engine
from registry.http import Wiring
from registry.problems import register_error_handlers
from registry.services.versions import get_version
from registry.unit_of_work import UnitOfWorkFactory
from serving.formats import make_inspector
from serving.runtime import ServingRuntime
from storage import open_store

log = logging.getLogger("modelreg")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _resolve_config(config: Config | Mapping[str, Any] | None) -> Config:
    if config is None:
        return Config.from_env()
    if isinstance(config, Config):
        return config.resolved()
    base = Config.from_env()
    return dataclasses.replace(base, **dict(config)).resolved()


def _prepare_embedded_paths(config: Config) -> None:
    url = make_url(config.DATABASE_URL)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def create_app(config: Config | Mapping[str, Any] | None = None) -> Flask:
    """Build a fully wired application. Nothing is created at import time."""
    config = _resolve_config(config)
    _prepare_embedded_paths(config)
    app = Flask("modelreg", instance_path=config.INSTANCE_PATH)
    app.config.from_mapping(config.as_flask_mapping())
    app.config["SQLALCHEMY_DATABASE_URI"] = config.DATABASE_URL
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(config.DATABASE_URL, config)
    app.config["MAX_CONTENT_LENGTH"] = config.MAX_PREDICT_BODY_BYTES

    db = SQLAlchemy(metadata=Base.metadata)
    db.init_app(app)
    with app.app_context():
        engine: Engine = db.engine
    tune_engine(engine)
    if config.AUTO_MIGRATE:
        migrations.upgrade(engine)

    uow = UnitOfWorkFactory(sessionmaker(bind=engine, expire_on_commit=False))
    store = open_store(config.STORAGE_URL)

    def fetch(name: str, ref: Any) -> Any:
        return get_version(uow, name, ref)

    serving = ServingRuntime(fetch, store, config)
    app.extensions["modelreg"] = Wiring(
        config=config,
        uow=uow,
        store=store,
        inspect_artifact=make_inspector(allow_pickle=config.ALLOW_PICKLE),
        check_version=serving.check_version,
        serving=serving,
        extras={"engine": engine},
    )
    register_error_handlers(app)
    _register_request_hooks(app)

    from registry.views import bp as registry_bp
    from serving.ops import bp as ops_bp
    from serving.views import bp as serving_bp

    app.register_blueprint(registry_bp)
    app.register_blueprint(serving_bp)
    app.register_blueprint(ops_bp)
    return app


def _register_request_hooks(app: Flask) -> None:
    @app.before_request
    def _assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        valid = 0 < len(incoming) <= 64 and incoming.isprintable() and incoming.isascii()
        g.request_id = incoming if valid else uuid.uuid4().hex

    @app.after_request
    def _decorate(response: Response) -> Response:
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response


# ---- command line ----------------------------------------------------------------------
