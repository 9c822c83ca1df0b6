"""Property-based: random names, tags, metadata and predict bodies never produce a 5xx."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import fit_classifier, joblib_bytes, make_config

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
names = st.one_of(
    st.text(max_size=140), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
)
rows = st.lists(
    st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(-1000, 1000),
            st.text(max_size=3),
            st.none(),
        ),
        max_size=6,
    ),
    max_size=4,
)
predict_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"instances": st.one_of(rows, json_values)},
        optional={
            "method": st.one_of(st.sampled_from(["predict", "predict_proba", "x"]), json_values)
        },
    ),
    st.fixed_dictionaries(
        {
            "inputs": st.one_of(
                rows,
                st.dictionaries(
                    st.sampled_from(["a", "b", "f0"]), st.lists(json_scalars, max_size=4)
                ),
                json_values,
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "dataframe_split": st.fixed_dictionaries(
                {"data": st.one_of(rows, json_values)},
                optional={"columns": st.lists(st.text(max_size=4), max_size=5)},
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "dataframe_records": st.one_of(
                st.lists(
                    st.dictionaries(st.text(max_size=4), json_scalars, max_size=5), max_size=4
                ),
                json_values,
            )
        }
    ),
)


@pytest.fixture(scope="module")
def real_artifact() -> bytes:
    return joblib_bytes(fit_classifier())


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from manage import create_app

    app = create_app(make_config(tmp_path_factory.mktemp("fuzz")))
    test_client = app.test_client()
    artifact = joblib_bytes(fit_classifier())
    response = test_client.post(
        "/models/target/versions",
        data={
            "artifact": (io.BytesIO(artifact), "m.joblib"),
            "metadata": json.dumps({"format": "joblib"}),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 201
    yield test_client
    app.extensions["modelreg"].engine.dispose()


def _no_server_error(response) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    if response.status_code >= 400:
        assert response.headers["Content-Type"].startswith("application/problem+json")
        assert "Traceback" not in response.get_data(as_text=True)


@SETTINGS
@given(name=names, description=json_values, tags=json_values)
def test_create_model_with_random_fields(client, name, description, tags):
    body = {"name": name, "description": description, "tags": tags}
    _no_server_error(client.post("/models", json=body))


deep_values = st.integers(30, 400).map(lambda n: _nest(n))
metadata_values = st.one_of(json_values, deep_values)


def _nest(levels: int):
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


@SETTINGS
@given(
    name=names,
    artifact=st.sampled_from(["real", "junk"]),
    metadata=st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(
                [
                    "format",
                    "description",
                    "tags",
                    "metrics",
                    "params",
                    "source",
                    "input_example",
                    "signature",
                    "other",
                ]
            ),
            metadata_values,
            max_size=5,
        ),
    ),
)
def test_register_with_random_metadata(client, real_artifact, name, artifact, metadata):
    """A registration either fails cleanly or stores a version that reads back fine."""
    path_name = name if "/" not in name else "x"
    response = client.post(
        f"/models/{path_name}/versions",
        data={
            "artifact": (io.BytesIO(real_artifact if artifact == "real" else b"junk"), "m.joblib"),
            "metadata": json.dumps(metadata),
        },
        content_type="multipart/form-data",
    )
    _no_server_error(response)
    if response.status_code == 201:
        version = response.get_json()["version"]
        _no_server_error(client.get(f"/models/{path_name}/versions/{version}"))
        _no_server_error(client.get(f"/models/{path_name}/versions"))


@SETTINGS
@given(body=predict_bodies)
def test_predict_with_random_bodies(client, body):
    _no_server_error(client.post("/models/target/1/predict", json=body))


@SETTINGS
@given(raw=st.binary(max_size=200))
def test_predict_with_random_bytes(client, raw):
    _no_server_error(
        client.post("/models/target/latest/predict", data=raw, content_type="application/json")
    )


@SETTINGS
@given(tags=json_values, description=json_values, status=json_values, reason=json_values)
def test_patch_version_with_random_fields(client, tags, description, status, reason):
    body = {"tags": tags, "description": description, "status": status, "reason": reason}
    _no_server_error(client.patch("/models/target/versions/1", json=body))


@SETTINGS
@given(
    query=st.dictionaries(
        st.sampled_from(["limit", "cursor", "q", "tag", "status", "type"]),
        st.text(max_size=30),
        max_size=4,
    )
)
def test_list_with_random_query(client, query):
    for path in ("/models", "/models/target/versions", "/models/target/events"):
        _no_server_error(client.get(path, query_string=query))


@SETTINGS
@given(body=json_values, ref=st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s))
def test_promote_with_random_bodies(client, body, ref):
    _no_server_error(client.post(f"/models/target/versions/{ref}/promote", json=body))
