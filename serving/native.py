"""The native predict protocol, `POST /models/<name>/<ref>/predict`, free of any transport.

Flask's view and the predict fast path both answer through `predict_answer`, so a header, a
status or a body can only change for both at once.
"""

from __future__ import annotations

from typing import Any

import orjson

from registry.answers import Answer
from registry.errors import UnsupportedMediaType
from serving.content_coding import decode_content
from serving.dataplane import Batch, DataPlane, Decoder, Inference, UnitKey
from serving.inputs import decode_predict_body
from serving.loader import Servable, to_jsonable
from serving.resolver import Resolution

JSON = "application/json"
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
STALE_HEADERS = (
    ("X-Model-Stale", "true"),
    ("Warning", '110 modelreg "registry unavailable; last known alias mapping"'),
)
ACCEPTED_MEDIA_TYPES = ("application/json", "")  # no Content-Type at all is JSON too


def check_media_type(mimetype: str) -> None:
    if mimetype not in ACCEPTED_MEDIA_TYPES:
        raise UnsupportedMediaType(
            "send the body as application/json", {"Content-Type": "expected application/json"}
        )


def decoder(body: bytes, content_encoding: str | None = None, limit: int = 0) -> Decoder:
    """`body` as sent; with a `Content-Encoding`, inflated to at most `limit` bytes."""

    def decode(servable: Servable) -> Batch:
        raw = decode_content(body, content_encoding, limit) if content_encoding else body
        decoded = decode_predict_body(raw, servable.plan)
        return Batch(decoded.X, (decoded.method,), decoded.n_rows)

    decode.replay = ("native", body, content_encoding, limit)  # type: ignore[attr-defined]
    return decode


def encode(inference: Inference) -> bytes:
    method = inference.batch.methods[0]
    body: dict[str, Any] = {
        "model": inference.name,
        "version": inference.version,
        "predictions": to_jsonable(inference.outputs[0]),
    }
    if method == "predict_proba" and inference.servable.classes is not None:
        body["classes"] = inference.servable.classes
    return orjson.dumps(body, option=JSON_OPTIONS)


def resolution_headers(resolution: Resolution) -> list[tuple[str, str]]:
    """Which version a reference named, and whether the alias mapping was stale."""
    headers = [("X-Model-Version", str(resolution.spec.version))]
    if resolution.stale:
        headers.extend(STALE_HEADERS)
    return headers


def model_headers(inference: Inference) -> list[tuple[str, str]]:
    """Which version answered, on which runtime, and whether the alias mapping was stale:
    every protocol's inference answer carries these."""
    headers = resolution_headers(inference.resolution)
    headers.insert(1, ("X-Model-Runtime", inference.runtime))
    return headers


def predict_answer(
    dataplane: DataPlane,
    name: str,
    ref: str,
    body: bytes,
    *,
    memory_only: bool = False,
    content_encoding: str | None = None,
    max_body_bytes: int = 0,
    unit: UnitKey | None = None,
) -> Answer:
    """The 200 answer; a failure raises its domain error (NotInMemory when memory_only and
    the answer needs a lookup or a load). A compressed body inflates to `max_body_bytes`."""
    decode = decoder(body, content_encoding, max_body_bytes)
    served = dataplane.infer(name, ref, decode, encode, memory_only=memory_only, unit=unit)
    inference = served.inference
    headers = [("Content-Type", JSON), *model_headers(inference)]
    return Answer(200, headers, served.payload, str(inference.version))
