"""The house-price walk-through behind `modelreg demo`, through the public client only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

FEATURES = ["sqft", "bedrooms", "age_years", "distance_km"]


def house_prices(n: int = 400, seed: int = 42) -> tuple[Any, Any]:
    """A synthetic market: price grows with size, falls with age and distance, and a premium
    for large houses close to the centre makes a plain linear model leave money on the table."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    sqft = rng.uniform(40, 250, n)
    bedrooms = rng.integers(1, 6, n).astype(float)
    age = rng.uniform(0, 80, n)
    distance = rng.uniform(0.5, 30, n)
    price = (
        2_000 * sqft
        + 15_000 * bedrooms
        - 1_200 * age
        - 4_000 * distance
        + 60 * sqft * np.maximum(0, 10 - distance)
        + rng.normal(0, 10_000, n)
    )
    X = pd.DataFrame(
        {"sqft": sqft, "bedrooms": bedrooms, "age_years": age, "distance_km": distance}
    )
    return X, price


def _rmse(model: Any, X: Any, y: Any) -> float:
    return float(np.sqrt(np.mean((model.predict(X) - y) ** 2)))


def run_demo(client: Any, name: str = "house-price", echo: Callable[[str], Any] = print) -> None:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    X, y = house_prices()
    train, test = slice(0, 300), slice(300, None)
    example = X.iloc[:2]

    baseline = LinearRegression().fit(X[train], y[train])
    improved = make_pipeline(StandardScaler(), PolynomialFeatures(2), LinearRegression()).fit(
        X[train], y[train]
    )
    rmse_1 = _rmse(baseline, X[test], y[test])
    rmse_2 = _rmse(improved, X[test], y[test])

    echo(f"== registering {name} ==")
    source = {"run": "demo", "data": "synthetic house prices, seed 42", "code": "registry/demo.py"}
    v1 = client.register(
        name,
        baseline,
        description="linear baseline",
        metrics={"rmse": rmse_1},
        params={"model": "LinearRegression"},
        source=source,
        input_example=example,
        tags={"stage": "baseline"},
    )
    v2 = client.register(
        name,
        improved,
        description="degree-2 interactions",
        metrics={"rmse": rmse_2},
        params={"model": "poly2+linear"},
        source=source,
        input_example=example,
        tags={"stage": "candidate"},
    )
    for record in (v1, v2):
        echo(
            f"  version {record['version']}: {record['description']}, "
            f"rmse {record['metrics']['rmse']:,.0f}, format {record['format']}, "
            f"sha256 {record['sha256'][:12]}"
        )

    echo("== promoting to production ==")
    for record, reason in ((v1, "first model"), (v2, "lower rmse on the hold-out set")):
        move = client.promote(name, record["version"], alias="production", reason=reason)
        echo(f"  production -> {move['version']} (was {move['previous_version']})")

    house = X.iloc[[0]]
    answer = client.predict(name, "production", house)
    echo(
        f"  production (v{answer['version']}) prices house 0 at "
        f"{answer['predictions'][0]:,.0f}; actual {y[0]:,.0f}"
    )

    echo("== rolling back ==")
    move = client.rollback(name, alias="production", reason="demo: undo the last promotion")
    echo(f"  production -> {move['version']} (was {move['previous_version']})")
    answer = client.predict(name, "production", house)
    echo(f"  production now answers with version {answer['version']}")

    echo(f"== aliases: {client.aliases(name)} ==")
    echo("== audit trail (newest first) ==")
    for event in client.events(name):
        before = (event.get("before") or {}).get("version") or "-"
        after = (event.get("after") or {}).get("version") or "-"
        change = f" {before} -> {after}" if event["type"] in ("promote", "rollback") else ""
        version = f" v{event['version']}" if event.get("version") else ""
        reason = f"  ({event['reason']})" if event.get("reason") else ""
        echo(
            f"  {event['at'][:19]}  {event['type']:<9}{version}{change}  by {event['actor']}"
            f"{reason}"
        )
