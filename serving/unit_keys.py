"""The unit key of a request, for a sticky traffic policy: a header, or a named input field.

A field is read from the request's first row (every row of a batch goes to the version the
first row's unit is assigned to): `{"instances": [{"customer_id": ...}]}`, MLflow's
`dataframe_records`, a V2 tensor of that name (its first element), or a top-level key.
The body is parsed for it only when the policy is keyed by a field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from serving.policies import CompiledPolicy

MAX_KEY_LENGTH = 256


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str | int | float):
        text = str(value)
        return text[:MAX_KEY_LENGTH] if text else None
    return None


def field_value(document: Any, field: str) -> str | None:
    """The unit key named `field` in a parsed request body, or None."""
    if isinstance(document, list):
        document = {"instances": document}
    if not isinstance(document, dict):
        return None
    for key in ("instances", "dataframe_records", "inputs"):
        rows = document.get(key)
        if isinstance(rows, dict) and field in rows:  # {"inputs": {"customer_id": [...]}}
            value = rows[field]
            return _text(value[0] if isinstance(value, list) and value else value)
        if not isinstance(rows, list) or not rows:
            continue
        first = rows[0]
        if isinstance(first, dict) and field in first:
            return _text(first[field])
        for tensor in rows:  # V2: {"inputs": [{"name": "customer_id", "data": [...]}]}
            if isinstance(tensor, dict) and tensor.get("name") == field:
                data = tensor.get("data")
                while isinstance(data, list) and data:
                    data = data[0]
                return _text(data)
    return _text(document.get(field))


def from_environ(environ: Mapping[str, Any], body: bytes | None = None, document: Any = None):
    """A UnitKey for the data plane: the policy's header from the WSGI environ, or its field
    from `document` (or `body`, parsed only when asked)."""

    def unit(policy: CompiledPolicy) -> str | None:
        if policy.header is not None:
            return _text(environ.get(policy.header))
        if policy.field is None:
            return None
        parsed = document
        if parsed is None and body:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                return None  # the decoder reports the body's problem
        return field_value(parsed, policy.field)

    return unit
