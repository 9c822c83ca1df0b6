"""A traffic policy and a version's monitoring, as the API reports them."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from flask import render_template, request

from registry.access import public
from registry.endpoints import undocumented
from registry.errors import (
    InvalidInput,
)
from registry.http import app_services
from registry.monitoring import service as monitoring_service
from registry.names import validate_alias
from registry.policies import service as policy_service
from registry.ui.blueprint import (
    UI_ROUTE,
    bp,
    reference,
    viewer_for,
)

# ---- traffic policy and monitoring -----------------------------------------------------------


@bp.get("/models/<name>/aliases/<alias>/policy")
@undocumented(UI_ROUTE)
@public
def policy(name: str, alias: str) -> str:
    viewer = viewer_for(name)
    deps = app_services()
    current = policy_service.get_policy(deps.uow, name, validate_alias(alias))
    stats = None
    if current["state"] == "active":
        resolution = deps.dataplane.resolve(name, alias)
        stats = deps.dataplane.policy_stats.view(name, resolution.policy)
    return render_template(
        "policy.html",
        viewer=viewer,
        name=name,
        alias=alias,
        policy=current,
        stats=stats,
        pid=os.getpid(),
        may_change=viewer.identity.has_role("operator"),
    )


@bp.get("/models/<name>/versions/<int:number>/monitoring")
@undocumented(UI_ROUTE)
@public
def monitoring(name: str, number: int) -> str:
    viewer = viewer_for(name)
    deps = app_services()
    default_window = deps.config.MONITOR_WINDOW_SECONDS
    raw = request.args.get("window", "")
    if raw and not (raw.isdigit() and raw.isascii() and int(raw) > 0):
        raise InvalidInput("invalid window", {"window": "a whole number of seconds"})
    since = None
    if request.args.get("since"):
        try:
            since = datetime.fromtimestamp(float(request.args["since"]), UTC)
        except (ValueError, OverflowError, OSError):
            raise InvalidInput("invalid since", {"since": "epoch seconds"}) from None
    report = monitoring_service.monitoring_report(
        deps.uow,
        name,
        reference(str(number)),
        since=since,
        window=int(raw) if raw else None,
        default_window=default_window,
    )
    features = sorted({f for w in report["windows"] for f in w["features"]})
    chart = {  # what ui.js plots: PSI per feature over the windows (the table has it all)
        "window": report["window_seconds"],
        "x": [datetime.fromisoformat(w["start"]).timestamp() for w in report["windows"]],
        "series": {
            f: [(w["features"].get(f) or {}).get("psi") for w in report["windows"]]
            for f in features
        },
    }
    return render_template(
        "monitoring.html", viewer=viewer, report=report, features=features, chart=chart
    )
