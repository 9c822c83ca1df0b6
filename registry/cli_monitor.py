"""`modelreg monitor ...`: references, windows, labels and a model's monitor."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import click

from registry.cli_support import client, emit_json, json_option, remote_options, table


@click.group()
def monitor() -> None:
    """Monitoring per version: reference profiles, drift and data-quality windows, live
    metrics from labels, and alerts (see docs/monitoring.md)."""


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """CSV with a header, or JSON rows (a list of objects)."""
    text = path.read_text()
    if path.suffix.lower() == ".json":
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise click.BadParameter("a JSON reference is a list of objects", param_hint="FILE")
        return rows
    reader = csv.DictReader(text.splitlines())
    return [{k: _cell(v) for k, v in row.items()} for row in reader]


def _cell(value: str | None) -> Any:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        return value


@monitor.command("reference")
@click.argument("name")
@click.argument("ref")
@click.argument(
    "path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--target", help="The target column in FILE (for the reference metric).")
@json_option
@remote_options
@click.pass_context
def monitor_reference(
    ctx: click.Context, name: str, ref: str, path: Path, target: str | None, as_json: bool
) -> None:
    """Set FILE (CSV or JSON rows) as the reference of version REF of NAME."""
    rows = _read_rows(path)
    y = None
    if target is not None:
        if not rows or target not in rows[0]:
            raise click.BadParameter(f"no column {target!r} in {path.name}", param_hint="--target")
        y = [row.pop(target) for row in rows]
    profile = client(ctx).set_reference(name, ref, rows, y, target=target)
    if as_json:
        emit_json(profile)
        return
    sampled = f" (sampled from {profile['sampled']['from_rows']})" if profile["sampled"] else ""
    click.echo(f"{name} v{profile['version']}: profiled {profile['rows']} rows{sampled}")
    table(
        [
            {
                "feature": f["name"],
                "type": f["type"],
                "missing": f"{f['missing_rate']:.1%}",
                "range": f"{f.get('min')} .. {f.get('max')}" if f["type"] == "numeric" else "",
            }
            for f in profile["features"]
        ],
        ["feature", "type", "missing", "range"],
    )


@monitor.command("profile")
@click.argument("name")
@click.argument("ref", default="latest")
@remote_options
@click.pass_context
def monitor_profile(ctx: click.Context, name: str, ref: str) -> None:
    """The reference profile of a version, as JSON."""
    emit_json(client(ctx).profile(name, ref))


@monitor.command("status")
@click.argument("name")
@click.argument("ref", default="production")
@click.option("--since", help="ISO time or epoch seconds (default: 24 windows ago).")
@click.option("--window", type=int, help="Window width in seconds (a multiple of the server's).")
@json_option
@remote_options
@click.pass_context
def monitor_status(
    ctx: click.Context, name: str, ref: str, since: str | None, window: int | None, as_json: bool
) -> None:
    """Windows of a version: rows, the worst feature, reasons, live metrics; alerts."""
    report = client(ctx).monitoring(name, ref, since=since, window=window)
    if as_json:
        emit_json(report)
        return
    rows = []
    for w in report["windows"]:
        worst = max(w["features"].items(), key=lambda item: item[1].get("psi") or 0.0, default=None)
        metrics = w.get("metrics") or {}
        rows.append(
            {
                "start": w["start"],
                "variant": w["variant"] or "-",
                "rows": w["rows"],
                "worst psi": f"{worst[0]} {worst[1].get('psi', 0):.3f}" if worst else "",
                "bad": "; ".join(r.get("feature") or r.get("metric", "") for r in w["reasons"]),
                "rmse": f"{metrics['rmse']:.4g}" if "rmse" in metrics else "",
                "refused": sum(w["refused"].values()),
            }
        )
    click.echo(f"{name} v{report['version']} (window {report['window_seconds']} s)")
    table(rows, ["start", "variant", "rows", "worst psi", "bad", "rmse", "refused"])
    for alert in report["alerts"]:
        click.echo(
            f"alert {alert['alert_id'] or '-'}: {alert['state']}"
            + (" (rolled back)" if alert["rolled_back"] else "")
        )


@monitor.command("show")
@click.argument("name")
@remote_options
@click.pass_context
def monitor_show(ctx: click.Context, name: str) -> None:
    """The model's monitor (defaults when none was set), as JSON."""
    emit_json(client(ctx).get_monitor(name))


@monitor.command("set")
@click.argument("name")
@click.option("--psi-warn", type=float)
@click.option("--psi-alert", type=float)
@click.option("--missing-increase", type=float)
@click.option("--min-rows", type=int)
@click.option("--error-ratio", type=float, help="Live error over reference error that is bad.")
@click.option("--fire-after", type=int, help="Consecutive bad windows that fire an alert.")
@click.option("--resolve-after", type=int, help="Consecutive good windows that resolve it.")
@click.option("--on-alert", type=click.Choice(["none", "rollback"]))
@click.option("--alias", help="The alias a rollback moves (default production).")
@click.option("--payload-sample", type=float, help="Share of requests logged (0..1).")
@click.option("--reason", default="")
@click.option("--expected-revision", type=int, help="Refuse if the monitor changed meanwhile.")
@remote_options
@click.pass_context
def monitor_set(ctx: click.Context, name: str, **options: Any) -> None:
    """Replace the model's monitor; settings not given take their defaults."""
    thresholds = {
        key: options.pop(key)
        for key in ("psi_warn", "psi_alert", "missing_increase", "min_rows", "error_ratio")
        if options.get(key) is not None
    }
    for key in ("psi_warn", "psi_alert", "missing_increase", "min_rows", "error_ratio"):
        options.pop(key, None)
    emit_json(client(ctx).set_monitor(name, thresholds=thresholds or None, **options))


@monitor.command("feedback")
@click.argument("name")
@click.argument(
    "path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@remote_options
@click.pass_context
def monitor_feedback(ctx: click.Context, name: str, path: Path) -> None:
    """Post labels from FILE: CSV with request_id, row, label columns (or JSON objects)."""
    rows = _read_rows(path)
    labels = [
        {"request_id": str(r["request_id"]), "row": int(r.get("row") or 0), "label": r["label"]}
        for r in rows
    ]
    result = client(ctx).feedback(name, labels)
    click.echo(f"{result['accepted']} labels stored, {result['matched']} meet a logged prediction")


COMMANDS = [monitor]
