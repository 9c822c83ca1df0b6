"""Endpoint declarations (`registry.endpoints`): attached once, checked when declared."""

from __future__ import annotations

import pytest

from registry.endpoints import (
    PROBLEM,
    Endpoint,
    Undocumented,
    endpoint,
    endpoint_spec,
    no_body,
    undocumented,
)
from serving import api_docs
from serving.inputs import PAYLOAD_KEYS, PREDICT_METHODS
from serving.v2_codec import DATATYPES, HEADER_LENGTH

OK = {200: no_body("Fine.")}


def test_the_declaration_is_an_attribute_of_the_view_itself():
    def view() -> str:
        return "answer"

    declared = endpoint(summary="A view", tag="ops", responses=OK, errors=(404, 400, 404))(view)
    assert declared is view  # no wrapper: nothing runs per request
    spec = endpoint_spec(view)
    assert isinstance(spec, Endpoint)
    assert spec.errors == (400, 404)
    assert spec.error_format is PROBLEM


def test_a_view_that_declares_nothing_has_no_spec():
    def view() -> None: ...

    assert endpoint_spec(view) is None
    assert endpoint_spec(undocumented("assets")(view)) == Undocumented("assets")


def test_mistakes_fail_when_the_module_is_imported():
    def view() -> None: ...

    with pytest.raises(ValueError, match="no response for \\[418\\]"):
        endpoint(summary="A view", tag="ops", responses=OK, errors=(418,))
    with pytest.raises(ValueError, match="needs a summary"):
        endpoint(summary="", tag="ops", responses=OK)
    endpoint(summary="A view", tag="ops", responses=OK)(view)
    with pytest.raises(ValueError, match="declared twice"):
        endpoint(summary="Again", tag="ops", responses=OK)(view)


def test_v2_endpoints_cannot_claim_a_422():
    """The Open Inference Protocol answers invalid input 400, never 422."""
    with pytest.raises(ValueError, match="V2Error has no response for \\[422\\]"):
        api_docs.v2_endpoint(summary="Infer", responses=OK, errors=(422,))


def test_request_grammars_come_from_the_code_that_enforces_them():
    alternatives = [alt.schema for alt in api_docs.PREDICT_REQUEST.schema["oneOf"]]
    assert [alt["required"] for alt in alternatives] == [[key] for key in PAYLOAD_KEYS]
    assert alternatives[0]["properties"]["method"]["enum"] == list(PREDICT_METHODS)
    tensor = api_docs.V2_INFER_REQUEST.schema["properties"]["inputs"]["items"]
    assert tensor["properties"]["datatype"]["enum"] == list(DATATYPES)
    assert api_docs.V2_HEADER_LENGTH["name"] == HEADER_LENGTH
