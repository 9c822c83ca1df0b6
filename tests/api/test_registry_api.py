"""The registry's HTTP contract (PRODUCT.md, "Registry"), end to end through the Flask app.

Every test that takes `client` runs twice: on SQLite and on a fresh PostgreSQL schema.
Artifacts are real, tiny fitted scikit-learn models; nothing in the registry is mocked.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from tests.conftest import fit_classifier, fit_linear, joblib_bytes, make_config, skops_bytes
from tests.helpers import problem, register

# ---- helpers ---------------------------------------------------------------------------------


def linear(seed: int = 0, n_features: int = 3) -> bytes:
    """A distinct tiny LinearRegression per seed, as joblib bytes."""
    return joblib_bytes(fit_linear(n_features=n_features, seed=seed))


def ok(response, status: int = 200) -> Any:
    assert response.status_code == status, (status, response.status_code, response.data[:500])
    if status == 204:
        assert response.data == b""
        return None
    assert response.mimetype == "application/json", response.headers
    return response.get_json()


def fails(response, status: int, *fields: str) -> dict[str, Any]:
    """Assert a problem+json error with `status` whose `errors` name every one of `fields`."""
    assert response.status_code == status, (status, response.status_code, response.data[:500])
    body = problem(response)
    for key in ("type", "title", "status", "detail"):
        assert body.get(key), (key, body)
    for name in fields:
        assert name in (body.get("errors") or {}), (name, body)
    return body


def create(client, name: str, **fields: Any) -> dict[str, Any]:
    return ok(client.post("/models", json={"name": name, **fields}), 201)


def reg(client, name: str, artifact: bytes | None = None, **metadata: Any) -> dict[str, Any]:
    """Register a version (joblib unless `format` says otherwise); returns the record."""
    return ok(register(client, name, artifact if artifact is not None else linear(), metadata), 201)


def upload(client, name: str, parts: dict[str, Any]):
    """POST raw multipart parts (no format is filled in for the caller)."""
    return client.post(f"/models/{name}/versions", data=parts, content_type="multipart/form-data")


def promote(client, name: str, ref: Any, **body: Any):
    return client.post(f"/models/{name}/versions/{ref}/promote", json=body)


def rollback(client, name: str, alias: str = "production", **body: Any):
    return client.post(f"/models/{name}/aliases/{alias}/rollback", json=body or None)


def alias_target(client, name: str, alias: str = "production") -> int | None:
    return ok(client.get(f"/models/{name}")).get("aliases", {}).get(alias)


def events(client, name: str, **query: Any) -> list[dict[str, Any]]:
    return ok(client.get(f"/models/{name}/events", query_string=query))["events"]


def moved_to(event: dict[str, Any]) -> dict[str, Any]:
    """A promote or rollback event's `after` without the record of the check that ran."""
    return {k: v for k, v in event["after"].items() if k != "check"}


def event_types(client, name: str) -> list[str]:
    return [e["type"] for e in events(client, name, limit=500)]


def versions(client, name: str, **query: Any) -> list[int]:
    body = ok(client.get(f"/models/{name}/versions", query_string=query))
    return [v["version"] for v in body["versions"]]


def artifacts_root(app) -> Path:
    return Path(app.config["INSTANCE_PATH"]) / "artifacts"


def stored_blobs(app) -> list[Path]:
    root = artifacts_root(app) / "sha256"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def staged_files(app) -> list[Path]:
    root = artifacts_root(app) / ".staging"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def blob_path(app, sha256: str) -> Path:
    return artifacts_root(app) / "sha256" / sha256[:2] / sha256


def walk_pages(client, url: str, key: str, limit: int, **query: Any) -> list[list[Any]]:
    pages, cursor = [], None
    for _ in range(50):
        params = {"limit": limit, **query, **({"cursor": cursor} if cursor else {})}
        body = ok(client.get(url, query_string=params))
        pages.append(body[key])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("pagination never ended")


def failing_example_model() -> bytes:
    """A valid model whose predict raises on an input that no static check can refuse.

    One-hot encoding with handle_unknown="error" before a regression: a row holding a value
    never seen in training has the right width and types but cannot be predicted.
    """
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    X = rng.integers(0, 2, size=(20, 3)).astype(float)
    y = X.sum(axis=1)
    return joblib_bytes(
        make_pipeline(OneHotEncoder(handle_unknown="error"), LinearRegression()).fit(X, y)
    )


# ---- POST /models ----------------------------------------------------------------------------


def test_create_model_returns_the_record(client):
    response = client.post(
        "/models", json={"name": "churn", "description": "who leaves", "tags": {"team": "risk"}}
    )
    body = ok(response, 201)
    assert set(body) >= {
        "name",
        "description",
        "tags",
        "aliases",
        "latest_version",
        "created_at",
        "created_by",
    }
    assert body["name"] == "churn"
    assert body["description"] == "who leaves"
    assert body["tags"] == {"team": "risk"}
    assert body["aliases"] == {}
    assert body["latest_version"] is None
    assert body["created_by"] == "anonymous"
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert response.headers["Location"].endswith("/models/churn")
    fetched = ok(client.get("/models/churn"))
    assert {k: fetched[k] for k in body} == body


def test_create_model_defaults(client):
    body = create(client, "bare")
    assert body["description"] == ""
    assert body["tags"] == {}


def test_create_duplicate_model_is_409(client):
    create(client, "dup", description="first")
    body = fails(client.post("/models", json={"name": "dup", "description": "second"}), 409)
    assert body["title"] == "Already exists"
    assert ok(client.get("/models/dup"))["description"] == "first"
    assert event_types(client, "dup") == ["create"]


BAD_NAMES = [
    "has space",
    ".hidden",
    "-dash-first",
    "_under-first",
    "a" * 129,
    "",
    "tab\there",
    "nul\x00byte",
    "line\nbreak",
    "trailing\n",
    "slash/inside",
    "modèle",
    123,
    None,
    ["list"],
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_create_rejects_bad_names(sqlite_client, name):
    fails(sqlite_client.post("/models", json={"name": name}), 422, "name")


def test_create_rejects_bad_names_on_both_databases(client):
    for name in ("has space", ".hidden", "a" * 129, "", "ctrl\x07", 7):
        fails(client.post("/models", json={"name": name}), 422, "name")
    assert ok(client.get("/models"))["models"] == []


def test_name_limits_and_alphabet_accepted(client):
    for name in ("a" * 128, "A.b_c-9", "0lead-digit", "x"):
        assert create(client, name)["name"] == name
        assert ok(client.get(f"/models/{name}"))["name"] == name


def test_create_rejects_bad_tags(client):
    cases = [
        {"team": 1},
        {"team": None},
        {"team": ["a"]},
        ["not", "a", "map"],
        "team=risk",
        {f"k{i}": "v" for i in range(101)},
        {"": "empty key"},
        {"k" * 129: "long key"},
        {"ctrl\x01": "v"},
        {"k": "v" * 5001},
    ]
    for tags in cases:
        body = fails(client.post("/models", json={"name": "tagged", "tags": tags}), 422)
        assert any(k.startswith("tags") for k in body["errors"]), (tags, body)
    fails(client.get("/models/tagged"), 404)
    assert create(client, "tagged", tags={f"k{i}": "v" for i in range(100)})["tags"]["k99"] == "v"


def test_create_rejects_bad_description(client):
    fails(client.post("/models", json={"name": "d", "description": 5}), 422, "description")
    fails(
        client.post("/models", json={"name": "d", "description": "x" * 10_001}), 422, "description"
    )


def test_create_needs_a_json_body(client):
    fails(client.post("/models"), 415)
    fails(client.post("/models", data={"name": "form"}), 415)
    fails(client.post("/models", data='{"name": "txt"}', content_type="text/plain"), 415)
    fails(client.get("/models/form"), 404)
    fails(client.get("/models/txt"), 404)


def test_create_with_malformed_json_is_400(client):
    for raw in ('{"name": "x"', "{name: 'x'}", "not json", '{"name": "x"} trailing'):
        body = fails(client.post("/models", data=raw, content_type="application/json"), 400)
        assert body["title"] == "Malformed request"


def test_create_with_a_non_object_body_is_422(client):
    for raw in ("null", "[]", '"churn"', "3"):
        fails(client.post("/models", data=raw, content_type="application/json"), 422, "body")


def test_create_names_unknown_fields(client):
    body = fails(
        client.post("/models", json={"name": "u", "colour": "red", "owner": "me"}),
        422,
        "colour",
        "owner",
    )
    assert "name" not in body["errors"]
    fails(client.get("/models/u"), 404)


# ---- GET /models -----------------------------------------------------------------------------


def test_list_models_paginates_in_name_order(client):
    names = ["m-6", "m-0", "m-4", "m-2", "m-5", "m-1", "m-3"]
    for name in names:
        create(client, name)
    pages = walk_pages(client, "/models", "models", 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    listed = [m["name"] for page in pages for m in page]
    assert listed == sorted(names)
    assert len(set(listed)) == 7
    everything = ok(client.get("/models"))
    assert [m["name"] for m in everything["models"]] == sorted(names)
    assert everything["next_cursor"] is None
    exact = ok(client.get("/models", query_string={"limit": 7}))
    assert len(exact["models"]) == 7
    assert exact["next_cursor"] is None


def test_list_models_pagination_survives_inserts_between_pages(client):
    for name in ("b", "d", "f", "h"):
        create(client, name)
    first = ok(client.get("/models", query_string={"limit": 2}))
    assert [m["name"] for m in first["models"]] == ["b", "d"]
    create(client, "a")  # before the cursor: must not shift the next page
    create(client, "e")  # after the cursor: must appear
    second = ok(client.get("/models", query_string={"limit": 2, "cursor": first["next_cursor"]}))
    assert [m["name"] for m in second["models"]] == ["e", "f"]


def test_list_models_shows_aliases_and_latest_version(client):
    reg(client, "shown")
    reg(client, "shown", linear(1))
    ok(promote(client, "shown", 1))
    [listed] = ok(client.get("/models"))["models"]
    assert listed["aliases"] == {"production": 1}
    assert listed["latest_version"] == 2


def test_list_models_search_is_case_insensitive_and_literal(client):
    for name in ("Churn_Model", "churnXmodel", "churn-model", "other", "fraud_rate"):
        create(client, name)

    def search(q: str) -> list[str]:
        return [m["name"] for m in ok(client.get("/models", query_string={"q": q}))["models"]]

    assert search("CHURN") == ["Churn_Model", "churn-model", "churnXmodel"]
    assert search("churn_model") == ["Churn_Model"]  # "_" is not a wildcard
    assert search("_") == ["Churn_Model", "fraud_rate"]
    assert search("%") == []  # "%" is not a wildcard
    assert search("n%m") == []
    assert search("\\") == []
    assert search("MODEL") == ["Churn_Model", "churn-model", "churnXmodel"]
    assert search("zzz") == []
    paged = walk_pages(client, "/models", "models", 1, q="churn")
    assert [m["name"] for p in paged for m in p] == ["Churn_Model", "churn-model", "churnXmodel"]


def test_list_models_tag_filters(client):
    create(client, "a", tags={"team": "risk", "env": "prod"})
    create(client, "b", tags={"team": "risk"})
    create(client, "c", tags={"team": "growth", "env": "prod", "note": "a:b"})
    create(client, "d")

    def tagged(*tags: str) -> list[str]:
        response = client.get("/models", query_string=[("tag", t) for t in tags])
        return [m["name"] for m in ok(response)["models"]]

    assert tagged("team:risk") == ["a", "b"]
    assert tagged("team:risk", "env:prod") == ["a"]
    assert tagged("env") == ["a", "c"]
    assert tagged("env", "team:growth") == ["c"]
    assert tagged("team:nobody") == []
    assert tagged("missing") == []
    assert tagged("note:a:b") == ["c"]  # the value is everything after the first ":"
    assert tagged("team:Risk") == []  # values match exactly
    paged = walk_pages(client, "/models", "models", 1, tag="team:risk")
    assert [m["name"] for p in paged for m in p] == ["a", "b"]


def test_list_models_rejects_bad_paging(client):
    create(client, "p")
    for limit in ("0", "10000", "x", "-1", "1.5", ""):
        fails(client.get("/models", query_string={"limit": limit}), 422, "limit")
    for cursor in ("garbage!", "eyJrIjoxfQ", "%%%", "é"):  # eyJrIjoxfQ is {"k": 1}: wrong type
        fails(client.get("/models", query_string={"cursor": cursor}), 422, "cursor")
    assert ok(client.get("/models", query_string={"limit": 500}))["models"][0]["name"] == "p"


# ---- GET / PATCH / DELETE /models/<name> -----------------------------------------------------


def test_get_unknown_or_invalid_model_is_404(client):
    for path in ("/models/ghost", "/models/.dot", "/models/" + "a" * 129, "/models/bad%20name"):
        fails(client.get(path), 404)


def test_patch_model_merges_tags_and_records_an_update_event(client):
    create(client, "pm", description="old", tags={"a": "1", "b": "2"})
    response = client.patch(
        "/models/pm",
        json={"description": "new", "tags": {"b": None, "c": "3", "gone": None}, "reason": "tidy"},
    )
    body = ok(response)
    assert body["description"] == "new"
    assert body["tags"] == {"a": "1", "c": "3"}
    assert ok(client.get("/models/pm"))["tags"] == {"a": "1", "c": "3"}
    latest = events(client, "pm")[0]
    assert latest["type"] == "update"
    assert latest["reason"] == "tidy"
    assert latest["actor"] == "anonymous"
    assert latest["before"] == {"description": "old", "tags": {"a": "1", "b": "2"}}
    assert latest["after"] == {"description": "new", "tags": {"a": "1", "c": "3"}}


def test_patch_model_only_description_keeps_tags(client):
    create(client, "pd", tags={"keep": "me"})
    body = ok(client.patch("/models/pd", json={"description": "d"}))
    assert body["tags"] == {"keep": "me"}
    latest = events(client, "pd")[0]
    assert latest["before"] == {"description": ""}
    assert latest["after"] == {"description": "d"}


def test_patch_model_without_change_records_no_event(client):
    create(client, "same", description="d", tags={"a": "1"})
    ok(client.patch("/models/same", json={"description": "d", "tags": {"a": "1", "x": None}}))
    ok(client.patch("/models/same", json={}))
    assert event_types(client, "same") == ["create"]


def test_patch_cannot_merge_past_the_tag_limit(client):
    full = {f"a{i}": "v" for i in range(100)}
    create(client, "many", tags=full)
    reg(client, "many", tags=full)
    more = {"tags": {"one-more": "v"}}
    fails(client.patch("/models/many", json=more), 422, "tags")
    fails(client.patch("/models/many/versions/1", json=more), 422, "tags")
    assert ok(client.get("/models/many"))["tags"] == full
    assert ok(client.get("/models/many/versions/1"))["tags"] == full
    # Replacing and removing keys at the limit is fine.
    swap = {"tags": {"a0": None, "b0": "v", "a1": "changed"}}
    assert len(ok(client.patch("/models/many", json=swap))["tags"]) == 100
    assert len(ok(client.patch("/models/many/versions/1", json=swap))["tags"]) == 100
    assert event_types(client, "many") == ["update_version", "update", "register", "create"]


def test_patch_model_rejects_bad_bodies(client):
    create(client, "pb")
    fails(client.patch("/models/pb", json={"name": "renamed"}), 422, "name")
    fails(client.patch("/models/pb", json={"tags": {"a": 1}}), 422)
    fails(client.patch("/models/pb", json={"description": None}), 422, "description")
    fails(client.patch("/models/pb", data="{", content_type="application/json"), 400)
    fails(client.patch("/models/pb"), 415)
    fails(client.patch("/models/ghost", json={"description": "x"}), 404)
    assert event_types(client, "pb") == ["create"]


def test_delete_model_then_404(client):
    reg(client, "gone")
    ok(client.delete("/models/gone"), 204)
    fails(client.get("/models/gone"), 404)
    fails(client.get("/models/gone/versions"), 404)
    fails(client.get("/models/gone/versions/1"), 404)
    trail = ok(client.get("/models/gone/events"))["events"]  # the trail outlives the model
    assert [e["type"] for e in trail][:2] == ["delete", "register"]
    fails(client.get("/models/never-existed/events"), 404)
    fails(client.delete("/models/gone"), 404)
    assert ok(client.get("/models"))["models"] == []


def test_recreated_model_continues_version_numbering(client):
    reg(client, "again")
    reg(client, "again", linear(1))
    ok(client.delete("/models/again", query_string={"reason": "start over"}), 204)
    fresh = create(client, "again", description="second life")
    assert fresh["latest_version"] is None
    assert fresh["aliases"] == {}
    assert versions(client, "again") == []
    assert reg(client, "again", linear(2))["version"] == 3
    assert versions(client, "again") == [3]
    fails(client.get("/models/again/versions/1"), 404)
    deleted = [e for e in events(client, "again") if e["type"] == "delete"]
    assert len(deleted) == 1
    assert deleted[0]["reason"] == "start over"
    assert deleted[0]["before"]["versions"] == 2


def test_registering_into_a_deleted_model_continues_numbering(client):
    reg(client, "revived")
    reg(client, "revived", linear(1))
    ok(client.delete("/models/revived"), 204)
    assert reg(client, "revived", linear(2))["version"] == 3
    assert ok(client.get("/models/revived"))["latest_version"] == 3


def test_delete_model_with_an_alias_is_409_and_changes_nothing(client):
    reg(client, "held")
    reg(client, "held", linear(1))
    ok(promote(client, "held", 1))
    before_events = events(client, "held")
    body = fails(client.delete("/models/held"), 409)
    assert body["title"] == "Conflict"
    model = ok(client.get("/models/held"))
    assert model["aliases"] == {"production": 1}
    assert versions(client, "held") == [2, 1]
    assert events(client, "held") == before_events
    ok(client.delete("/models/held/aliases/production"), 204)
    ok(client.delete("/models/held"), 204)


# ---- POST /models/<name>/versions ------------------------------------------------------------


def test_register_creates_the_model_and_numbers_versions(client):
    assert [reg(client, "auto", linear(i))["version"] for i in range(3)] == [1, 2, 3]
    model = ok(client.get("/models/auto"))
    assert model["latest_version"] == 3
    assert model["created_by"] == "anonymous"
    assert event_types(client, "auto") == ["register", "register", "register", "create"]


def test_register_returns_the_full_record(client):
    artifact = linear(seed=4)
    metadata = {
        "description": "first try",
        "tags": {"stage": "exp"},
        "metrics": {"rmse": 0.25, "r2": 1},
        "params": {"alpha": 0.1, "layers": [3, 2], "solver": None},
        "source": {"run": "run-42", "data": "s3://bucket/train.csv", "code": "git:abc123"},
        "input_example": [[0.1, 0.2, 0.3], [1, 2, 3]],
    }
    response = register(client, "full", artifact, metadata)
    record = ok(response, 201)
    assert response.headers["Location"].endswith("/models/full/versions/1")
    assert record["name"] == "full"
    assert record["version"] == 1
    assert record["sha256"] == hashlib.sha256(artifact).hexdigest()
    assert record["size"] == len(artifact)
    assert record["format"] == "joblib"
    assert record["status"] == "ready"
    assert record["description"] == "first try"
    assert record["tags"] == {"stage": "exp"}
    assert record["metrics"] == {"rmse": 0.25, "r2": 1.0}
    assert record["params"] == metadata["params"]
    assert record["source"] == metadata["source"]
    assert record["input_example"] == metadata["input_example"]
    assert record["signature"]["n_features"] == 3
    assert record["signature"]["methods"] == ["predict"]
    assert "classes" not in record["signature"]
    assert record["created_by"] == "anonymous"
    assert datetime.fromisoformat(record["created_at"]).tzinfo is not None
    fetched = ok(client.get("/models/full/versions/1"))
    assert {k: fetched[k] for k in record if k != "aliases"} == {
        k: v for k, v in record.items() if k != "aliases"
    }
    register_event = events(client, "full")[0]
    assert register_event["type"] == "register"
    assert register_event["version"] == 1
    assert register_event["after"]["sha256"] == record["sha256"]


def test_register_infers_a_classifier_signature(client):
    record = reg(
        client,
        "clf",
        skops_bytes(fit_classifier(n_features=4)),
        format="skops",
        input_example=[[0.9, 0.1, 0.2, 0.3]],
    )
    assert record["format"] == "skops"
    signature = record["signature"]
    assert signature["n_features"] == 4
    assert signature["classes"] == ["high", "low"]
    assert signature["methods"] == ["predict", "predict_proba"]


def test_register_infers_feature_names_from_a_dataframe_model(client):
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((20, 2)), columns=["age", "income"])
    model = LinearRegression().fit(frame, frame["age"] * 2 + frame["income"])
    record = reg(client, "framed", joblib_bytes(model), input_example=[{"age": 0.5, "income": 0.1}])
    assert record["signature"]["feature_names"] == ["age", "income"]
    assert record["signature"]["n_features"] == 2
    fails(
        register(client, "framed", joblib_bytes(model), {"input_example": [{"age": 1}]}),
        422,
        "metadata.input_example[0]",
    )
    fails(
        register(
            client, "framed", joblib_bytes(model), {"signature": {"feature_names": ["a", "b"]}}
        ),
        422,
        "signature.feature_names",
    )
    assert versions(client, "framed") == [1]


def test_register_declared_signature_must_match_the_artifact(client):
    fails(
        register(client, "sig", linear(), {"signature": {"n_features": 5}}),
        422,
        "signature.n_features",
    )
    fails(
        register(
            client,
            "sig",
            skops_bytes(fit_classifier()),
            {"format": "skops", "signature": {"classes": ["a", "b"]}},
        ),
        422,
        "signature.classes",
    )
    fails(register(client, "sig", linear(), {"signature": {"n_features": "3"}}), 422)
    fails(register(client, "sig", linear(), {"signature": {"unknown": 1}}), 422)
    fails(client.get("/models/sig"), 404)
    agreeing = reg(client, "sig", signature={"n_features": 3})
    assert agreeing["signature"]["n_features"] == 3


def test_register_input_example_must_fit_the_signature(client):
    fails(
        register(client, "ex", linear(), {"input_example": [[1, 2]]}),
        422,
        "metadata.input_example[0]",
    )
    fails(
        register(client, "ex", linear(), {"input_example": [[1, 2, 3], [1, 2, 3, 4]]}),
        422,
        "metadata.input_example[1]",
    )
    fails(
        register(client, "ex", linear(), {"input_example": [5]}), 422, "metadata.input_example[0]"
    )
    fails(register(client, "ex", linear(), {"input_example": []}), 422, "metadata.input_example")
    fails(
        register(client, "ex", linear(), {"input_example": [[1, 2, 3]] * 101}),
        422,
        "metadata.input_example",
    )
    fails(
        register(client, "ex", linear(), {"input_example": {"a": 1}}), 422, "metadata.input_example"
    )
    fails(client.get("/models/ex"), 404)


def test_register_guesses_the_format_from_the_filename(client):
    classifier = skops_bytes(fit_classifier())
    guessed = [
        (classifier, "model.skops", "skops"),
        (linear(1), "model.pkl", "joblib"),
        (linear(2), "MODEL.JOBLIB", "joblib"),
        (linear(3), "model.joblib", "joblib"),
    ]
    for artifact, filename, expected in guessed:
        record = ok(
            upload(
                client, "guess", {"artifact": (io.BytesIO(artifact), filename), "metadata": "{}"}
            ),
            201,
        )
        assert record["format"] == expected, filename
    no_metadata = ok(
        upload(client, "guess", {"artifact": (io.BytesIO(linear(4)), "m.joblib")}), 201
    )
    assert no_metadata["format"] == "joblib"
    for filename in ("model.bin", "model", "joblib"):
        fails(
            upload(
                client, "guess", {"artifact": (io.BytesIO(linear()), filename), "metadata": "{}"}
            ),
            422,
            "metadata.format",
        )
    declared = ok(
        upload(
            client,
            "guess",
            {"artifact": (io.BytesIO(linear(5)), "model.bin"), "metadata": '{"format": "joblib"}'},
        ),
        201,
    )
    assert declared["format"] == "joblib"
    assert versions(client, "guess") == [6, 5, 4, 3, 2, 1]


def test_register_rejects_a_wrong_or_unknown_format(client):
    fails(register(client, "fmt", linear(), {"format": "pickle"}), 422, "metadata.format")
    fails(register(client, "fmt", linear(), {"format": "skops"}), 422, "artifact")
    fails(
        register(client, "fmt", skops_bytes(fit_classifier()), {"format": "onnx"}), 422, "artifact"
    )
    fails(client.get("/models/fmt"), 404)


def test_register_needs_exactly_one_artifact_part(client):
    meta = json.dumps({"format": "joblib"})
    fails(upload(client, "parts", {"metadata": meta}), 422, "artifact")
    fails(upload(client, "parts", {"artifact": "not a file", "metadata": meta}), 422, "artifact")
    two = [(io.BytesIO(linear()), "a.joblib"), (io.BytesIO(linear(1)), "b.joblib")]
    fails(upload(client, "parts", {"artifact": two, "metadata": meta}), 422, "artifact")
    fails(
        upload(client, "parts", {"artifact": (io.BytesIO(b""), "e.joblib"), "metadata": meta}),
        422,
        "artifact",
    )
    fails(client.get("/models/parts"), 404)


def test_register_needs_multipart(client):
    fails(client.post("/models/mp/versions", json={"format": "joblib"}), 415)
    fails(
        client.post("/models/mp/versions", data=linear(), content_type="application/octet-stream"),
        415,
    )
    fails(client.post("/models/mp/versions"), 415)
    fails(client.get("/models/mp"), 404)


def test_register_with_a_broken_multipart_body_is_400(client, app):
    artifact = linear()
    truncated = (
        b'--xx\r\nContent-Disposition: form-data; name="artifact"; filename="a.joblib"\r\n\r\n'
        + artifact[:100]
    )
    fails(
        client.post("/models/mb/versions", data=b"garbage", content_type="multipart/form-data"), 400
    )
    fails(
        client.post(
            "/models/mb/versions", data=truncated, content_type="multipart/form-data; boundary=xx"
        ),
        400,
    )
    fails(client.get("/models/mb"), 404)
    assert stored_blobs(app) == []
    assert staged_files(app) == []


def test_register_metadata_must_be_json(client):
    for raw in ("{not json", "format=joblib", '{"format": "joblib"'):
        body = fails(
            upload(
                client, "meta", {"artifact": (io.BytesIO(linear()), "m.joblib"), "metadata": raw}
            ),
            400,
            "metadata",
        )
        assert body["title"] == "Malformed request"
    fails(
        upload(client, "meta", {"artifact": (io.BytesIO(linear()), "m.joblib"), "metadata": "[]"}),
        422,
        "metadata",
    )
    fails(client.get("/models/meta"), 404)


def test_register_names_unknown_metadata_keys(client):
    fails(register(client, "unk", linear(), {"colour": "red"}), 422, "metadata.colour")
    fails(
        register(client, "unk", linear(), {"source": {"branch": "main"}}),
        422,
        "metadata.source.branch",
    )
    fails(register(client, "unk", linear(), {"metrics": {"rmse": "bad"}}), 422)
    fails(register(client, "unk", linear(), {"metrics": {"rmse": True}}), 422)
    fails(register(client, "unk", linear(), {"tags": {"k": 1}}), 422)
    fails(client.get("/models/unk"), 404)


def test_register_rejects_a_non_model_and_leaves_nothing_behind(client, app):
    rng = np.random.default_rng(7)
    not_models = [
        (rng.bytes(4096), "joblib"),  # random bytes: not a pickle at all
        (joblib_bytes({"weights": [1, 2, 3]}), "joblib"),  # a pickle, but not a model
        (joblib_bytes(np.arange(5)), "joblib"),
        (rng.bytes(2048), "skops"),
        (rng.bytes(2048), "onnx"),
    ]
    for artifact, fmt in not_models:
        fails(register(client, "junk", artifact, {"format": fmt}), 422, "artifact")
        assert stored_blobs(app) == [], fmt
        assert staged_files(app) == [], fmt
    fails(client.get("/models/junk"), 404)

    good = linear()
    reg(client, "junk", good)
    for artifact, fmt in not_models:
        fails(register(client, "junk", artifact, {"format": fmt}), 422, "artifact")
    assert versions(client, "junk") == [1]
    assert stored_blobs(app) == [blob_path(app, hashlib.sha256(good).hexdigest())]
    assert staged_files(app) == []
    assert event_types(client, "junk") == ["register", "create"]


def test_an_unfitted_estimator_is_refused_at_registration(client, app):
    from sklearn.linear_model import LinearRegression

    fails(register(client, "unfit", joblib_bytes(LinearRegression())), 422, "artifact")
    fails(client.get("/models/unfit"), 404)
    assert stored_blobs(app) == []
    assert staged_files(app) == []


@contextmanager
def small_app(tmp_path, database_url: str, **limits: int) -> Iterator[Any]:
    """An app on the test's database with tighter limits than the fixture's."""
    from manage import create_app

    application = create_app(make_config(tmp_path, database_url, **limits))
    try:
        yield application
    finally:
        application.extensions["modelreg"].engine.dispose()


def test_register_above_the_size_limit_is_413_and_stores_nothing(tmp_path, database_url):
    with small_app(tmp_path, database_url, MAX_ARTIFACT_BYTES=1000) as app:
        client = app.test_client()
        rng = np.random.default_rng(3)
        # Streams past the artifact limit while parsing.
        body = fails(register(client, "big", rng.bytes(5000)), 413, "artifact")
        assert body["title"] == "Payload too large"
        assert "1000" in body["detail"] and "MAX_ARTIFACT_BYTES" in body["detail"]
        # Refused on Content-Length alone (limit + metadata allowance), before reading.
        body = fails(register(client, "big", rng.bytes(1_200_000)), 413, "artifact")
        assert "MAX_ARTIFACT_BYTES" in body["detail"]
        fails(client.get("/models/big"), 404)
        assert stored_blobs(app) == []
        assert staged_files(app) == []

        fitting = linear()
        assert len(fitting) <= 1000
        assert reg(client, "big", fitting)["version"] == 1
        assert len(stored_blobs(app)) == 1
        assert staged_files(app) == []


def test_the_metadata_limit_bounds_metadata_not_artifacts(tmp_path, database_url):
    with small_app(tmp_path, database_url, MAX_METADATA_BYTES=1000) as app:
        client = app.test_client()
        artifact = skops_bytes(fit_classifier())
        assert len(artifact) > 1000
        assert reg(client, "meta-limit", artifact, format="skops")["version"] == 1
        too_long = {"format": "skops", "description": "x" * 2000}
        fails(register(client, "meta-limit", artifact, too_long), 413, "metadata")
        as_file = (io.BytesIO(json.dumps(too_long).encode()), "metadata.json")
        fails(
            upload(
                client,
                "meta-limit",
                {"artifact": (io.BytesIO(artifact), "m.skops"), "metadata": as_file},
            ),
            413,
            "metadata",
        )
        assert versions(client, "meta-limit") == [1]
        assert staged_files(app) == []


def test_identical_bytes_share_one_blob(client, app):
    artifact = linear(9)
    first = reg(client, "twin-a", artifact)
    second = reg(client, "twin-b", artifact)
    third = reg(client, "twin-a", artifact, description="same bytes again")
    assert first["sha256"] == second["sha256"] == third["sha256"]
    assert third["version"] == 2
    assert stored_blobs(app) == [blob_path(app, first["sha256"])]
    assert blob_path(app, first["sha256"]).read_bytes() == artifact
    assert staged_files(app) == []
    reg(client, "twin-a", linear(10))
    assert len(stored_blobs(app)) == 2


# ---- reading versions ------------------------------------------------------------------------


def test_list_versions_newest_first_with_paging_and_filters(client):
    for i in range(5):
        reg(client, "lv", linear(i), tags={"even": "yes"} if i % 2 == 0 else {"odd": "yes"})
    ok(client.patch("/models/lv/versions/2", json={"status": "archived"}))
    assert versions(client, "lv") == [5, 4, 3, 2, 1]
    pages = walk_pages(client, "/models/lv/versions", "versions", 2)
    assert [[v["version"] for v in p] for p in pages] == [[5, 4], [3, 2], [1]]
    assert versions(client, "lv", status="archived") == [2]
    assert versions(client, "lv", status="ready") == [5, 4, 3, 1]
    paged = walk_pages(client, "/models/lv/versions", "versions", 1, status="ready")
    assert [v["version"] for p in paged for v in p] == [5, 4, 3, 1]
    assert versions(client, "lv", tag="even:yes") == [5, 3, 1]
    assert versions(client, "lv", tag="odd") == [4, 2]
    fails(client.get("/models/lv/versions", query_string={"status": "deleted"}), 422, "status")
    fails(client.get("/models/lv/versions", query_string={"limit": 0}), 422, "limit")
    fails(client.get("/models/lv/versions", query_string={"cursor": "nope!"}), 422, "cursor")
    # eyJrIjoiYSJ9 is {"k": "a"}: a models cursor, the wrong key type for versions.
    fails(client.get("/models/lv/versions", query_string={"cursor": "eyJrIjoiYSJ9"}), 422, "cursor")
    fails(client.get("/models/ghost/versions"), 404)


def test_get_version_by_number_alias_and_latest(client):
    for i in range(3):
        reg(client, "refs", linear(i))
    ok(promote(client, "refs", 2, alias="staging"))
    assert ok(client.get("/models/refs/versions/1"))["version"] == 1
    by_alias = ok(client.get("/models/refs/versions/staging"))
    assert by_alias["version"] == 2
    assert by_alias["aliases"] == ["staging"]
    assert ok(client.get("/models/refs/versions/latest"))["version"] == 3
    assert ok(client.get("/models/refs/versions/1"))["aliases"] == []


def test_unknown_versions_are_404(client):
    reg(client, "nf")
    for ref in (
        "2",
        "0",
        "99999999999",
        "-1",
        "production",
        "latest-ish",
        quote("bad ref!"),
        "Prod",
    ):
        fails(client.get(f"/models/nf/versions/{ref}"), 404)
        fails(client.get(f"/models/nf/versions/{ref}/artifact"), 404)
    fails(client.get("/models/ghost/versions/1"), 404)
    fails(client.get("/models/ghost/versions/latest"), 404)


# ---- PATCH versions --------------------------------------------------------------------------


def test_patch_version_description_and_tags(client):
    reg(client, "pv", description="v1", tags={"a": "1", "b": "2"})
    body = ok(
        client.patch(
            "/models/pv/versions/1",
            json={"description": "better", "tags": {"a": None, "c": "3"}, "reason": "notes"},
        )
    )
    assert body["description"] == "better"
    assert body["tags"] == {"b": "2", "c": "3"}
    assert body["status"] == "ready"
    assert ok(client.get("/models/pv/versions/1"))["tags"] == {"b": "2", "c": "3"}
    latest = events(client, "pv")[0]
    assert latest["type"] == "update_version"
    assert latest["version"] == 1
    assert latest["reason"] == "notes"
    assert latest["before"] == {"description": "v1", "tags": {"a": "1", "b": "2"}}
    assert latest["after"] == {"description": "better", "tags": {"b": "2", "c": "3"}}
    fails(client.patch("/models/pv/versions/1", json={"format": "skops"}), 422, "format")
    fails(client.patch("/models/pv/versions/1", json={"status": "deleted"}), 422, "status")
    fails(client.patch("/models/pv/versions/9", json={"description": "x"}), 404)
    assert ok(client.get("/models/pv/versions/1"))["description"] == "better"


def test_archive_and_restore_move_latest(client):
    for i in range(3):
        reg(client, "arch", linear(i))
    archived = ok(
        client.patch("/models/arch/versions/3", json={"status": "archived", "reason": "stale"})
    )
    assert archived["status"] == "archived"
    assert ok(client.get("/models/arch/versions/latest"))["version"] == 2
    assert ok(client.get("/models/arch"))["latest_version"] == 2
    assert ok(client.get("/models/arch/versions/3"))["status"] == "archived"  # still readable
    ok(client.patch("/models/arch/versions/2", json={"status": "archived"}))
    assert ok(client.get("/models/arch/versions/latest"))["version"] == 1
    restored = ok(
        client.patch("/models/arch/versions/3", json={"status": "ready", "reason": "back"})
    )
    assert restored["status"] == "ready"
    assert ok(client.get("/models/arch/versions/latest"))["version"] == 3
    ok(client.patch("/models/arch/versions/3", json={"status": "archived"}))
    ok(client.patch("/models/arch/versions/1", json={"status": "archived"}))
    fails(client.get("/models/arch/versions/latest"), 404)
    assert ok(client.get("/models/arch"))["latest_version"] is None

    trail = events(client, "arch")
    status_events = [e for e in reversed(trail) if e["type"] in ("archive", "restore")]
    assert [(e["type"], e["version"]) for e in status_events] == [
        ("archive", 3),
        ("archive", 2),
        ("restore", 3),
        ("archive", 3),
        ("archive", 1),
    ]
    first = status_events[0]
    assert first["reason"] == "stale"
    assert first["before"] == {"status": "ready"}
    assert first["after"] == {"status": "archived"}
    assert status_events[2]["reason"] == "back"
    assert status_events[2]["before"] == {"status": "archived"}
    assert status_events[2]["after"] == {"status": "ready"}


def test_archiving_to_the_same_status_records_nothing(client):
    reg(client, "idem")
    ok(client.patch("/models/idem/versions/1", json={"status": "ready"}))
    assert event_types(client, "idem") == ["register", "create"]


def test_archiving_an_aliased_version_is_409(client):
    reg(client, "aa")
    ok(promote(client, "aa", 1))
    before = events(client, "aa")
    fails(
        client.patch("/models/aa/versions/1", json={"status": "archived", "description": "x"}),
        409,
        "status",
    )
    record = ok(client.get("/models/aa/versions/1"))
    assert record["status"] == "ready"
    assert record["description"] == ""
    assert events(client, "aa") == before
    fails(client.patch("/models/aa/versions/production", json={"status": "archived"}), 409)


# ---- DELETE versions -------------------------------------------------------------------------


def test_delete_version_never_reuses_its_number(client):
    reg(client, "dv")
    reg(client, "dv", linear(1))
    ok(client.delete("/models/dv/versions/2", query_string={"reason": "broken"}), 204)
    fails(client.get("/models/dv/versions/2"), 404)
    fails(client.delete("/models/dv/versions/2"), 404)
    assert versions(client, "dv") == [1]
    assert ok(client.get("/models/dv"))["latest_version"] == 1
    assert reg(client, "dv", linear(2))["version"] == 3
    assert versions(client, "dv") == [3, 1]
    deleted = [e for e in events(client, "dv") if e["type"] == "delete_version"]
    assert len(deleted) == 1
    assert deleted[0]["version"] == 2
    assert deleted[0]["reason"] == "broken"
    assert deleted[0]["before"]["version"] == 2


def test_delete_an_aliased_version_is_409(client):
    reg(client, "dav")
    ok(promote(client, "dav", 1, alias="staging"))
    fails(client.delete("/models/dav/versions/1"), 409, "version")
    fails(client.delete("/models/dav/versions/staging"), 409)
    assert versions(client, "dav") == [1]
    assert "delete_version" not in event_types(client, "dav")


# ---- artifact download -----------------------------------------------------------------------


def test_download_artifact(client):
    artifact = linear(5)
    record = reg(client, "dl.model_1", artifact)
    response = client.get("/models/dl.model_1/versions/1/artifact")
    assert response.status_code == 200
    assert response.data == artifact
    assert response.headers["ETag"] == f'"{record["sha256"]}"'
    assert response.headers["X-Model-Version"] == "1"
    assert int(response.headers["Content-Length"]) == len(artifact)
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment")
    assert "filename=" in disposition
    filename = disposition.split("filename=", 1)[1].strip('"')
    assert filename == "dl.model_1-v1.joblib"
    assert "/" not in filename and "\\" not in filename

    cached = client.get(
        "/models/dl.model_1/versions/1/artifact",
        headers={"If-None-Match": response.headers["ETag"]},
    )
    assert cached.status_code == 304
    assert cached.data == b""
    stale = client.get(
        "/models/dl.model_1/versions/1/artifact", headers={"If-None-Match": '"other"'}
    )
    assert stale.status_code == 200
    assert stale.data == artifact


def test_download_by_alias_and_latest(client):
    first, second = linear(1), skops_bytes(fit_classifier())
    reg(client, "dla", first)
    reg(client, "dla", second, format="skops")
    ok(promote(client, "dla", 1))
    assert client.get("/models/dla/versions/production/artifact").data == first
    latest = client.get("/models/dla/versions/latest/artifact")
    assert latest.data == second
    assert latest.headers["X-Model-Version"] == "2"
    assert latest.headers["Content-Disposition"].endswith("dla-v2.skops")


# ---- promote ---------------------------------------------------------------------------------


def test_promote_defaults_to_production(client):
    reg(client, "pr")
    reg(client, "pr", linear(1))
    assert ok(promote(client, "pr", 1, reason="launch")) == {
        "name": "pr",
        "alias": "production",
        "version": 1,
        "previous_version": None,
    }
    assert ok(promote(client, "pr", 2)) == {
        "name": "pr",
        "alias": "production",
        "version": 2,
        "previous_version": 1,
    }
    model = ok(client.get("/models/pr"))
    assert model["aliases"] == {"production": 2}
    assert ok(client.get("/models/pr/versions/2"))["aliases"] == ["production"]
    assert ok(client.get("/models/pr/versions/production"))["version"] == 2
    promotions = [e for e in reversed(events(client, "pr")) if e["type"] == "promote"]
    assert [(e["before"], moved_to(e), e["alias"]) for e in promotions] == [
        ({"version": None}, {"version": 1}, "production"),
        ({"version": 1}, {"version": 2}, "production"),
    ]
    assert promotions[0]["reason"] == "launch"


def test_promote_without_a_body_and_to_another_alias(client):
    reg(client, "pa")
    move = ok(client.post("/models/pa/versions/1/promote"))
    assert move["alias"] == "production"
    staged = ok(promote(client, "pa", 1, alias="staging"))
    assert staged["alias"] == "staging"
    assert ok(client.get("/models/pa"))["aliases"] == {"production": 1, "staging": 1}


def test_promote_by_reference_pins_the_version(client):
    reg(client, "pref")
    reg(client, "pref", linear(1))
    assert ok(promote(client, "pref", "latest", alias="staging"))["version"] == 2
    assert ok(promote(client, "pref", "staging"))["version"] == 2
    reg(client, "pref", linear(2))
    assert alias_target(client, "pref") == 2  # aliases never follow latest on their own


def test_promote_compare_and_set(client):
    for i in range(3):
        reg(client, "cas", linear(i))
    # null: the alias must not exist yet.
    assert ok(promote(client, "cas", 1, expected_version=None))["version"] == 1
    fails(promote(client, "cas", 2, expected_version=None), 409, "expected_version")
    assert alias_target(client, "cas") == 1
    # mismatch
    body = fails(promote(client, "cas", 2, expected_version=3), 409, "expected_version")
    assert body["title"] == "Conflict"
    assert alias_target(client, "cas") == 1
    # match
    assert ok(promote(client, "cas", 2, expected_version=1)) == {
        "name": "cas",
        "alias": "production",
        "version": 2,
        "previous_version": 1,
    }
    assert alias_target(client, "cas") == 2
    fails(promote(client, "cas", 3, expected_version="2"), 422, "expected_version")
    fails(promote(client, "cas", 3, expected_version=0), 422, "expected_version")
    fails(promote(client, "cas", 3, expected_version=True), 422, "expected_version")
    assert alias_target(client, "cas") == 2
    assert event_types(client, "cas").count("promote") == 2


def test_promote_rejects_invalid_aliases(client):
    reg(client, "ia")
    for alias in ("Prod", "latest", "versions", "1abc", "123", "", "has space", "a" * 65, "-x", 5):
        fails(promote(client, "ia", 1, alias=alias), 422, "alias")
    assert ok(client.get("/models/ia"))["aliases"] == {}
    assert ok(promote(client, "ia", 1, alias="a" * 64))["alias"] == "a" * 64
    assert ok(promote(client, "ia", 1, alias="canary_2-eu"))["alias"] == "canary_2-eu"


def test_promote_rejects_bad_bodies(client):
    reg(client, "pbb")
    fails(promote(client, "pbb", 1, colour="red"), 422, "colour")
    fails(
        client.post("/models/pbb/versions/1/promote", data="{", content_type="application/json"),
        400,
    )
    fails(client.post("/models/pbb/versions/1/promote", data="x", content_type="text/plain"), 415)
    fails(client.post("/models/pbb/versions/1/promote", json=[1]), 422, "body")
    assert ok(client.get("/models/pbb"))["aliases"] == {}


def test_promote_unknown_or_archived_versions(client):
    reg(client, "pu")
    reg(client, "pu", linear(1))
    ok(client.patch("/models/pu/versions/2", json={"status": "archived"}))
    fails(promote(client, "pu", 2), 409, "version")
    fails(promote(client, "pu", 9), 404)
    fails(promote(client, "pu", quote("bad ref!")), 404)
    fails(promote(client, "pu", "staging"), 404)
    fails(promote(client, "ghost", 1), 404)
    assert ok(client.get("/models/pu"))["aliases"] == {}
    assert "promote" not in event_types(client, "pu")


def test_promoting_the_current_target_is_a_no_op(client):
    reg(client, "noop")
    ok(promote(client, "noop", 1))
    again = ok(promote(client, "noop", 1, reason="again"))
    assert again["version"] == 1
    assert again["alias"] == "production"
    assert event_types(client, "noop").count("promote") == 1
    ok(promote(client, "noop", 1, expected_version=1))
    assert event_types(client, "noop").count("promote") == 1


# ---- safe promotion --------------------------------------------------------------------------


def test_promotion_refused_when_the_input_example_cannot_be_predicted(client):
    reg(client, "safe", linear(0), input_example=[[0.1, 0.2, 0.3]])
    ok(promote(client, "safe", 1))
    # Right width, numeric, but holds a category the model never saw: predict raises.
    record = reg(client, "safe", failing_example_model(), input_example=[[5.0, 5.0, 5.0]])
    assert record["version"] == 2
    before = events(client, "safe")
    body = fails(promote(client, "safe", 2, reason="try"), 422)
    assert body["title"] == "Promotion refused"
    assert alias_target(client, "safe") == 1
    assert events(client, "safe") == before
    # The same model with an example it can predict is promotable.
    reg(client, "safe", failing_example_model(), input_example=[[1.0, 0.0, 1.0]])
    assert ok(promote(client, "safe", 3))["previous_version"] == 1


def test_a_string_example_for_a_numeric_model_never_reaches_production(client):
    reg(client, "strs", linear(0))
    ok(promote(client, "strs", 1))
    response = register(client, "strs", linear(1), {"input_example": [["a", "b", "c"]]})
    if response.status_code == 422:  # refused at registration: as good
        problem(response)
        assert versions(client, "strs") == [1]
    else:
        assert ok(response, 201)["version"] == 2
        fails(promote(client, "strs", 2), 422)
    assert alias_target(client, "strs") == 1


def test_promotion_refused_when_the_artifact_was_tampered_with(client, app):
    reg(client, "tamper", linear(0))
    ok(promote(client, "tamper", 1))
    record = reg(client, "tamper", linear(1))
    path = blob_path(app, record["sha256"])
    assert path.read_bytes() == linear(1)
    path.write_bytes(linear(2))  # a different, perfectly loadable model
    before = events(client, "tamper")
    body = fails(promote(client, "tamper", 2), 422)
    assert body["title"] == "Promotion refused"
    assert alias_target(client, "tamper") == 1
    assert events(client, "tamper") == before
    # Same size, one byte flipped.
    original = linear(1)
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    fails(promote(client, "tamper", 2, alias="staging"), 422)
    assert "staging" not in ok(client.get("/models/tamper"))["aliases"]


# ---- rollback --------------------------------------------------------------------------------


def test_rollback_walks_back_through_history(client):
    for i in range(4):
        reg(client, "rb", linear(i))
    for v in (1, 2, 3):
        ok(promote(client, "rb", v))
    assert ok(rollback(client, "rb", reason="v3 is bad")) == {
        "name": "rb",
        "alias": "production",
        "version": 2,
        "previous_version": 3,
    }
    assert alias_target(client, "rb") == 2
    assert ok(rollback(client, "rb")) == {
        "name": "rb",
        "alias": "production",
        "version": 1,
        "previous_version": 2,
    }
    assert alias_target(client, "rb") == 1
    fails(rollback(client, "rb"), 409)
    assert alias_target(client, "rb") == 1

    assert ok(promote(client, "rb", 4))["previous_version"] == 1
    assert ok(rollback(client, "rb"))["version"] == 1
    assert alias_target(client, "rb") == 1
    fails(rollback(client, "rb"), 409)

    moves = [
        (e["type"], e["before"], moved_to(e))
        for e in reversed(events(client, "rb"))
        if e["type"] in ("promote", "rollback")
    ]
    assert moves == [
        ("promote", {"version": None}, {"version": 1}),
        ("promote", {"version": 1}, {"version": 2}),
        ("promote", {"version": 2}, {"version": 3}),
        ("rollback", {"version": 3}, {"version": 2}),
        ("rollback", {"version": 2}, {"version": 1}),
        ("promote", {"version": 1}, {"version": 4}),
        ("rollback", {"version": 4}, {"version": 1}),
    ]
    first_rollback = next(e for e in reversed(events(client, "rb")) if e["type"] == "rollback")
    assert first_rollback["reason"] == "v3 is bad"
    assert first_rollback["alias"] == "production"
    assert first_rollback["actor"] == "anonymous"


def test_rollback_never_flip_flops(client):
    for i in range(2):
        reg(client, "ff", linear(i))
    ok(promote(client, "ff", 1))
    ok(promote(client, "ff", 2))
    assert ok(rollback(client, "ff"))["version"] == 1
    fails(rollback(client, "ff"), 409)  # not back to 2
    assert alias_target(client, "ff") == 1


def test_rollback_is_per_alias(client):
    for i in range(3):
        reg(client, "pera", linear(i))
    ok(promote(client, "pera", 1))
    ok(promote(client, "pera", 2))
    ok(promote(client, "pera", 3, alias="staging"))
    ok(promote(client, "pera", 1, alias="staging"))
    assert ok(rollback(client, "pera", "staging"))["version"] == 3
    assert alias_target(client, "pera") == 2
    assert ok(rollback(client, "pera"))["version"] == 1
    assert alias_target(client, "pera", "staging") == 3


def test_rollback_unknown_alias_or_model_is_404(client):
    reg(client, "rbu")
    fails(rollback(client, "rbu", "production"), 404)
    fails(rollback(client, "rbu", "Prod"), 404)
    fails(rollback(client, "ghost", "production"), 404)
    ok(promote(client, "rbu", 1))
    fails(rollback(client, "rbu"), 409)  # exists, but nothing before it
    assert "rollback" not in event_types(client, "rbu")


def test_rollback_to_a_deleted_or_archived_version_is_409(client):
    for i in range(3):
        reg(client, "rbd", linear(i))
    ok(promote(client, "rbd", 1))
    ok(promote(client, "rbd", 2))
    ok(promote(client, "rbd", 3))
    ok(client.patch("/models/rbd/versions/2", json={"status": "archived"}))
    fails(rollback(client, "rbd"), 409)
    assert alias_target(client, "rbd") == 3
    ok(client.delete("/models/rbd/versions/2"), 204)
    fails(rollback(client, "rbd"), 409)
    assert alias_target(client, "rbd") == 3


# ---- aliases ---------------------------------------------------------------------------------


def test_list_and_delete_aliases(client):
    reg(client, "al")
    reg(client, "al", linear(1))
    ok(promote(client, "al", 2, alias="staging"))
    ok(promote(client, "al", 1))
    listed = ok(client.get("/models/al/aliases"))["aliases"]
    assert [(a["alias"], a["version"], a["updated_by"]) for a in listed] == [
        ("production", 1, "anonymous"),
        ("staging", 2, "anonymous"),
    ]
    assert all(datetime.fromisoformat(a["updated_at"]).tzinfo is not None for a in listed)

    ok(client.delete("/models/al/aliases/staging", json={"reason": "done testing"}), 204)
    fails(client.delete("/models/al/aliases/staging"), 404)
    fails(client.get("/models/al/versions/staging"), 404)
    assert [a["alias"] for a in ok(client.get("/models/al/aliases"))["aliases"]] == ["production"]
    assert ok(client.get("/models/al"))["aliases"] == {"production": 1}
    assert ok(client.get("/models/al/versions/2"))["aliases"] == []

    ok(client.delete("/models/al/aliases/production", query_string={"reason": "retire"}), 204)
    assert ok(client.get("/models/al/aliases"))["aliases"] == []
    removed = [e for e in reversed(events(client, "al")) if e["type"] == "delete_alias"]
    assert [(e["alias"], e["before"], e["reason"]) for e in removed] == [
        ("staging", {"version": 2}, "done testing"),
        ("production", {"version": 1}, "retire"),
    ]
    fails(client.get("/models/ghost/aliases"), 404)
    fails(client.delete("/models/ghost/aliases/production"), 404)


def test_deleted_alias_has_no_history_to_roll_back(client):
    reg(client, "fresh")
    reg(client, "fresh", linear(1))
    ok(promote(client, "fresh", 1))
    ok(promote(client, "fresh", 2))
    ok(client.delete("/models/fresh/aliases/production"), 204)
    fails(rollback(client, "fresh"), 404)
    ok(promote(client, "fresh", 2))
    fails(rollback(client, "fresh"), 409)


# ---- events ----------------------------------------------------------------------------------


def test_every_mutation_is_in_the_trail_exactly_once(client):
    create(client, "ev", description="audited")
    reg(client, "ev", linear(0))
    reg(client, "ev", linear(1))
    ok(client.patch("/models/ev", json={"description": "audited!", "reason": "typo"}))
    ok(client.patch("/models/ev/versions/1", json={"tags": {"k": "v"}, "reason": "label"}))
    ok(promote(client, "ev", 1, reason="ship v1"))
    ok(promote(client, "ev", 2, reason="ship v2"))
    ok(promote(client, "ev", 2, reason="no-op"))
    ok(rollback(client, "ev", reason="v2 regressed"))
    ok(client.patch("/models/ev/versions/2", json={"status": "archived", "reason": "shelve"}))
    ok(client.patch("/models/ev/versions/2", json={"status": "ready", "reason": "unshelve"}))
    reg(client, "ev", linear(2))
    ok(client.delete("/models/ev/versions/3", query_string={"reason": "oops"}), 204)
    ok(client.delete("/models/ev/aliases/production", query_string={"reason": "pause"}), 204)
    # Refused requests leave no trace.
    fails(client.post("/models", json={"name": "ev"}), 409)
    fails(register(client, "ev", b"junk"), 422)
    fails(promote(client, "ev", 99), 404)
    fails(rollback(client, "ev"), 404)

    trail = events(client, "ev", limit=100)
    assert [(e["type"], e["reason"]) for e in trail] == [
        ("delete_alias", "pause"),
        ("delete_version", "oops"),
        ("register", ""),
        ("restore", "unshelve"),
        ("archive", "shelve"),
        ("rollback", "v2 regressed"),
        ("promote", "ship v2"),
        ("promote", "ship v1"),
        ("update_version", "label"),
        ("update", "typo"),
        ("register", ""),
        ("register", ""),
        ("create", ""),
    ]
    for event in trail:
        assert set(event) >= {"type", "at", "actor", "reason", "before", "after"}
        assert event["actor"] == "anonymous"
        assert event["model"] == "ev"
        assert datetime.fromisoformat(event["at"]).tzinfo is not None
    ats = [datetime.fromisoformat(e["at"]) for e in trail]
    assert ats == sorted(ats, reverse=True)
    ids = [e["id"] for e in trail]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)
    by_type = {e["type"]: e for e in trail}  # trail is newest first: the oldest of a type wins
    assert by_type["create"]["after"] == {"name": "ev", "description": "audited", "tags": {}}
    assert by_type["update"]["before"] == {"description": "audited"}
    assert by_type["update"]["after"] == {"description": "audited!"}
    assert by_type["update_version"]["after"] == {"tags": {"k": "v"}}
    assert by_type["register"]["version"] == 1
    assert by_type["delete_version"]["version"] == 3


def test_events_paginate_and_filter_by_type(client):
    for i in range(4):
        reg(client, "evp", linear(i))
    for v in (1, 2, 3):
        ok(promote(client, "evp", v))
    all_events = events(client, "evp", limit=100)
    assert len(all_events) == 8  # create + 4 register + 3 promote
    pages = walk_pages(client, "/models/evp/events", "events", 3)
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [e["id"] for p in pages for e in p] == [e["id"] for e in all_events]
    promotes = events(client, "evp", type="promote")
    assert [e["after"]["version"] for e in promotes] == [3, 2, 1]
    paged = walk_pages(client, "/models/evp/events", "events", 2, type="register")
    assert [e["version"] for p in paged for e in p] == [4, 3, 2, 1]
    assert events(client, "evp", type="nothing") == []
    fails(client.get("/models/evp/events", query_string={"limit": 0}), 422, "limit")
    fails(client.get("/models/evp/events", query_string={"cursor": "x!"}), 422, "cursor")
    fails(client.get("/models/ghost/events"), 404)


def test_events_are_scoped_to_their_model(client):
    reg(client, "one")
    reg(client, "two")
    ok(promote(client, "two", 1))
    assert event_types(client, "one") == ["register", "create"]
    assert event_types(client, "two") == ["promote", "register", "create"]


def test_reason_is_read_from_delete_bodies_and_query(client):
    reg(client, "rsn")
    reg(client, "rsn", linear(1))
    reg(client, "rsn", linear(2))
    ok(client.delete("/models/rsn/versions/3", json={"reason": "from body"}), 204)
    ok(client.delete("/models/rsn/versions/2", query_string={"reason": "from query"}), 204)
    reasons = [e["reason"] for e in events(client, "rsn", type="delete_version")]
    assert reasons == ["from query", "from body"]
    fails(client.delete("/models/rsn/versions/1", json={"reason": "x" * 2001}), 422, "reason")
    fails(client.delete("/models/rsn/versions/1", json={"why": "x"}), 422, "why")
    assert versions(client, "rsn") == [1]


# ---- error bodies ----------------------------------------------------------------------------


def test_every_client_error_is_problem_json(client):
    reg(client, "err")
    cases = [
        (client.get("/no/such/route"), 404),
        (client.put("/models"), 405),
        (client.delete("/models"), 405),
        (client.get("/models/ghost"), 404),
        (client.post("/models", json={"name": "err"}), 409),
        (client.post("/models", data="x", content_type="text/plain"), 415),
        (client.post("/models", data="{", content_type="application/json"), 400),
        (client.post("/models", json={"name": "bad name"}), 422),
        (client.get("/models", query_string={"limit": "x"}), 422),
        (register(client, "err", b"\x00" * 64), 422),
        (promote(client, "err", 1, alias="Prod"), 422),
        (client.post("/models/err/versions", data=b"x", content_type="multipart/form-data"), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, (status, response.data[:300])
        body = problem(response)
        assert set(body) >= {"type", "title", "status", "detail"}
        assert isinstance(body["type"], str) and body["type"]
        assert isinstance(body["title"], str) and body["title"]
        assert isinstance(body["detail"], str)
        text = response.get_data(as_text=True)
        assert 'File "' not in text and "site-packages" not in text
        if status == 405:
            assert "GET" in response.headers["Allow"]


# ---- tag keys any backend can hold -----------------------------------------------------


def test_tag_filter_with_quote_in_the_key(client):
    create(client, "quoted", tags={'a"b': "x", "back\\slash": "y", "ключ": "値"})
    create(client, "plain", tags={"a": "x"})
    for tag in ('a"b:x', 'a"b', "back\\slash:y", "ключ", "ключ:値"):
        listed = ok(client.get("/models", query_string={"tag": tag}))["models"]
        assert [m["name"] for m in listed] == ["quoted"], tag
    listed = ok(client.get("/models", query_string={"tag": 'a"b:x'}))["models"]
    assert [m["name"] for m in listed] == ["quoted"]


# ---- the input-example gate (REQUIRE_INPUT_EXAMPLE_FOR) ------------------------------------


@pytest.fixture
def gated_client(tmp_path, database_url):
    from manage import create_app

    app = create_app(
        make_config(tmp_path, database_url, REQUIRE_INPUT_EXAMPLE_FOR="production, live")
    )
    yield app.test_client()
    app.extensions["modelreg"].engine.dispose()


def test_default_config_requires_an_example_for_production():
    from config import Config

    assert Config().REQUIRE_INPUT_EXAMPLE_FOR == "production"


def test_promotion_without_an_example_is_refused_and_says_how_to_add_one(gated_client):
    client = gated_client
    reg(client, "gate")
    body = fails(promote(client, "gate", 1), 422, "input_example")
    assert "REQUIRE_INPUT_EXAMPLE_FOR" in body["detail"]
    assert "PATCH /models/gate/versions/1" in body["detail"]
    fails(promote(client, "gate", 1, alias="live"), 422, "input_example")
    assert alias_target(client, "gate") is None
    # Aliases outside the setting are not gated; their promote event says what was checked.
    ok(promote(client, "gate", 1, alias="staging"))
    check = events(client, "gate", type="promote")[0]["after"]["check"]
    assert check["performed"] is True and check["input_example_rows"] == 0
    assert check["methods"] == [] and check["integrity"] == "sha256 verified at load"

    # The way out the error names: PATCH an example (validated as at registration), promote.
    bad = client.patch("/models/gate/versions/1", json={"input_example": [[1.0, 2.0]]})
    assert "input_example[0]" in str(fails(bad, 422)["errors"])
    patched = ok(client.patch("/models/gate/versions/1", json={"input_example": [[1, 2, 3]]}))
    assert patched["input_example"] == [[1, 2, 3]]
    update = events(client, "gate", type="update_version")[0]
    assert update["before"] == {"input_example": None}
    assert update["after"] == {"input_example": [[1, 2, 3]]}
    assert ok(promote(client, "gate", 1, reason="with an example"))["version"] == 1
    check = events(client, "gate", type="promote")[0]["after"]["check"]
    assert check["input_example_rows"] == 1 and check["methods"] == ["predict"]


def test_a_patched_example_the_model_cannot_predict_refuses_the_promotion(gated_client):
    client = gated_client
    reg(client, "gate2")
    ok(client.patch("/models/gate2/versions/1", json={"input_example": [["a", "b", "c"]]}))
    body = fails(promote(client, "gate2", 1), 422)
    assert "input example failed" in body["detail"]
    assert alias_target(client, "gate2") is None
