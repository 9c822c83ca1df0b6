"""Composition root: `create_app()` wires everything; `cli` is `modelreg ...` around it."""

from __future__ import annotations

import atexit
import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

import migrations
from config import Config, load_config
from registry import access
from registry.access import SAFE_METHODS
from registry.answers import AnswerFinisher, Finished, request_id_from
from registry.auth import Authenticator
from registry.bounded import BoundedLookups
from registry.cli import build_cli
from registry.cors import CorsPolicy
from registry.db import Base, engine_options, tune_engine
from registry.http import EXTENSION_KEY, AppServices, reject_malformed_paths
from registry.policies.service import version_for_serving
from registry.problems import register_error_handlers
from registry.services.versions import ready_version_numbers
from registry.unit_of_work import UnitOfWorkFactory
from storage import open_store

log = logging.getLogger("modelreg")


def _resolve_config(config: Config | Mapping[str, Any] | None) -> Config:
    if config is None:
        return load_config()
    if isinstance(config, Config):
        return config.resolved()
    base = load_config()
    return dataclasses.replace(base, **dict(config)).resolved()


def _prepare_embedded_paths(config: Config) -> None:
    url = make_url(config.DATABASE_URL)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def create_app(config: Config | Mapping[str, Any] | None = None) -> Flask:
    """Build a fully wired application. Nothing is created at import time."""
    # The serving stack (numpy, pandas, onnxruntime...) is imported here, not by the command
    # line: a gunicorn master or `modelreg tokens` never needs it.
    from serving.dataplane import DataPlane
    from serving.formats import TrustPolicy
    from serving.inspection import make_inspector
    from serving.metrics import Metrics
    from serving.runtime import ServingRuntime

    config = _resolve_config(config)
    _prepare_embedded_paths(config)
    # No static route: the docs page serves its own files (registry/openapi_views.py).
    app = Flask("modelreg", instance_path=config.INSTANCE_PATH, static_folder=None)
    # werkzeug answers a path with "//" by a 308 to the merged path, an absolute URL built
    # from the client's Host header, before any auth: an open redirect. No route has an empty
    # segment, so such a path is simply not found. Set before any rule is added.
    app.url_map.merge_slashes = False
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
    store = open_store(config.STORAGE_URL, config=config)

    def fetch(name: str, ref: Any) -> Any:
        # An alias comes with its traffic policy: serving re-reads both together.
        return version_for_serving(uow, name, ref)

    metrics = Metrics(max_model_labels=config.METRICS_MAX_MODEL_LABELS)
    lookups = BoundedLookups()  # serving-path registry queries, each with a deadline
    serving = ServingRuntime(
        fetch,
        store,
        config,
        on_cache_event=metrics.on_cache_event,
        on_batch=metrics.on_batch,
        lookups=lookups,
    )
    uow.subscribe(serving.on_registry_change)  # committed registry changes reach its cache
    authenticator = Authenticator(
        uow,
        cache_seconds=config.AUTH_CACHE_SECONDS,
        # Read twice per bound: a revocation committed just after a read is still refused
        # within ALIAS_REFRESH_SECONDS, query and answer included (one tiny query per half
        # second per process, only while requests arrive).
        refresh_seconds=config.ALIAS_REFRESH_SECONDS / 2,
        lookups=lookups,
        lookup_timeout=config.REGISTRY_LOOKUP_TIMEOUT,
    )
    dataplane = DataPlane(
        serving,
        ready_versions=lambda name: lookups.call(
            ("ready-versions", name),
            lambda: ready_version_numbers(uow, name),
            config.REGISTRY_LOOKUP_TIMEOUT,
        ),
        alias_refresh_seconds=config.ALIAS_REFRESH_SECONDS,
        on_policy_route=metrics.on_policy_route,
    )
    if config.SHADOWS:
        from serving.shadow_process import ShadowProcess

        dataplane.shadows = ShadowProcess(
            config, dataplane.policy_stats, on_outcome=metrics.on_shadow_outcome
        )
    finisher = AnswerFinisher(
        metrics,
        knows_model=dataplane.knows_model,
        auth_disabled=config.AUTH_DISABLED,
        access_log=config.ACCESS_LOG,
        compress_min_bytes=config.COMPRESS_MIN_BYTES,
        cors=CorsPolicy.from_setting(config.CORS_ALLOWED_ORIGINS),
    )
    webhooks = _webhook_dispatcher(uow, config, metrics)
    from serving.monitoring.setup import EXTENSION_KEY as MONITORING_KEY
    from serving.monitoring.setup import build_monitoring

    app.extensions[MONITORING_KEY] = build_monitoring(
        uow, config, dataplane, metrics, serving.check_version
    )
    metrics.before_scrape.append(dataplane.policy_stats.publish)
    app.extensions[CANARY_KEY] = _canary_controller(uow, config, dataplane, serving)
    app.extensions[EXTENSION_KEY] = AppServices(
        config=config,
        engine=engine,
        uow=uow,
        store=store,
        inspect_artifact=make_inspector(TrustPolicy.from_config(config)),
        check_version=serving.check_version,
        authenticator=authenticator,
        lookups=lookups,
        metrics=metrics,
        serving=serving,
        dataplane=dataplane,
        finisher=finisher,
        webhooks=webhooks,
    )
    register_error_handlers(app)
    _register_request_hooks(app, finisher)
    access.install(
        app, authenticator, disabled=config.AUTH_DISABLED, local_actor=config.LOCAL_ACTOR
    )

    from registry.monitoring.views import bp as monitoring_bp
    from registry.openapi_views import bp as openapi_bp
    from registry.policies.views import bp as policies_bp
    from registry.token_views import bp as tokens_bp
    from registry.ui.root import root_bp as ui_root_bp
    from registry.ui.views import bp as ui_bp
    from registry.views import bp as registry_bp
    from registry.webhook_views import bp as webhooks_bp
    from serving.invocations import bp as invocations_bp
    from serving.metrics import bp as metrics_bp
    from serving.ops import bp as ops_bp
    from serving.v1 import bp as v1_bp
    from serving.v2 import bp as v2_bp
    from serving.views import bp as serving_bp

    app.register_blueprint(registry_bp)
    app.register_blueprint(tokens_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(monitoring_bp)
    app.register_blueprint(policies_bp)
    app.register_blueprint(serving_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(v2_bp)
    app.register_blueprint(v1_bp)
    app.register_blueprint(invocations_bp)
    app.register_blueprint(openapi_bp)
    app.register_blueprint(ui_bp)
    app.register_blueprint(ui_root_bp)
    from serving.fastpath import PredictFastPath

    app.wsgi_app = PredictFastPath(  # type: ignore[method-assign]
        app.wsgi_app,
        dataplane,
        authenticator,
        finisher,
        auth_disabled=config.AUTH_DISABLED,
        local_actor=config.LOCAL_ACTOR,
        max_body_bytes=config.MAX_PREDICT_BODY_BYTES,
    )
    return app


CANARY_KEY = "modelreg.canary"


def _canary_controller(uow: UnitOfWorkFactory, config: Config, dataplane: Any, serving: Any) -> Any:
    """This process's canary controller; its thread runs where CANARY_BACKGROUND is on (every
    `modelreg serve` process; test apps tick it by hand)."""
    import atexit

    from registry.services import aliases as alias_service
    from serving.canary import CanaryController

    def promote(name: str, version: int, alias: str, control: int) -> Any:
        return alias_service.promote_version(
            uow,
            name,
            version,
            alias=alias,
            reason="canary completed: every step held its guardrails",
            expected_version=control,
            actor="canary",
            check=serving.check_version,
            example_required_for=alias_service.example_required_for(
                config.REQUIRE_INPUT_EXAMPLE_FOR
            ),
        )

    controller = CanaryController(
        uow, dataplane.policy_stats, promote, tick_seconds=float(config.CANARY_TICK_SECONDS)
    )
    if config.CANARY_BACKGROUND:
        controller.start()
        atexit.register(controller.stop)
    return controller


def _webhook_dispatcher(uow: UnitOfWorkFactory, config: Config, metrics: Any) -> Any:
    """This process's webhook sender; its thread starts only where WEBHOOK_DISPATCH is on
    (every `modelreg serve` process; test apps send by hand)."""
    from registry.webhooks.dispatcher import Dispatcher, DispatchSettings
    from registry.webhooks.metrics import WebhookMetrics
    from registry.webhooks.targets import TargetPolicy

    webhook_metrics = WebhookMetrics(metrics.registry)
    dispatcher = Dispatcher(
        uow.session_factory,
        DispatchSettings.from_config(config),
        TargetPolicy.from_config(config),
        on_outcome=webhook_metrics.outcome,
        on_queue=webhook_metrics.queue,
    )
    if config.WEBHOOK_DISPATCH:
        dispatcher.start()
        atexit.register(dispatcher.stop)
    return dispatcher


def _register_request_hooks(app: Flask, finisher: AnswerFinisher) -> None:
    from serving.monitoring.context import CURRENT_REQUEST_ID

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.request_id = request_id_from(request.headers.get("X-Request-ID", ""))
        CURRENT_REQUEST_ID.set(g.request_id)  # for the payload log (serving/monitoring/)

    app.before_request(reject_malformed_paths)

    @app.before_request
    def _preflight() -> Response | None:
        # Before authentication: browsers send a CORS preflight without credentials.
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        extra = finisher.cors.preflight_headers(request.headers.get("Origin", ""))
        return None if extra is None else Response(status=204, headers=extra)

    @app.after_request
    def _finish(response: Response) -> Response:
        headers = response.headers
        request_id = g.get("request_id", "")
        headers.extend(
            finisher.trailer(
                request_id,
                has_cache_control="Cache-Control" in headers,
                origin=request.headers.get("Origin", ""),
            )
        )
        accept = request.headers.get("Accept-Encoding", "")
        # Not file downloads (streamed, with their own ETag) nor bodies already encoded.
        streamed = response.is_streamed or response.direct_passthrough
        if accept and not streamed and "Content-Encoding" not in headers:
            body, coding = finisher.compress(response.get_data(), accept)
            if coding:
                response.set_data(body)
                headers.extend(coding)
        status = response.status_code
        mutation = (
            request.method not in SAFE_METHODS
            and status < 300
            and request.blueprint in ("registry", "tokens")
        )
        finisher.record(
            Finished(
                route=request.url_rule.rule if request.url_rule is not None else "unmatched",
                method=request.method,
                path=request.path,
                status=status,
                seconds=time.perf_counter() - g.get("started", time.perf_counter()),
                model=(request.view_args or {}).get("name"),
                version=headers.get("X-Model-Version", ""),
                actor=g.get("actor"),
                request_id=request_id,
                model_exists=status < 400 and request.blueprint == "registry",
            )
        )
        if mutation:
            finisher.count_mutation(request.endpoint.rsplit(".", 1)[-1])
        return response


# ---- command line: registry/cli.py, around this module's app factory --------------------

cli = build_cli(create_app)
