"""Request bodies sent with `Content-Encoding: gzip|deflate`, for every predict protocol
(native, V2, MLflow, V1). Decompression never expands beyond the body limit: a zip bomb is
refused at the limit, not after it is inflated. (Compressed answers: registry/compression.py.)
"""

from __future__ import annotations

import zlib

from registry.errors import MalformedRequest, TooLarge

_MAX_REPORTED = 64


def decode_content(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a request `Content-Encoding` (gzip or deflate), never expanding beyond `limit`."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    kind = encoding.strip().lower()
    if kind not in ("gzip", "deflate"):
        shown = encoding[:_MAX_REPORTED]
        raise _bad(f"unsupported Content-Encoding {shown!r}: use gzip or deflate")
    inflater = zlib.decompressobj(wbits=31 if kind == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise _bad(f"the body is not valid {kind} data: {error}") from None
    if len(out) > limit:
        raise TooLarge(
            "the decompressed request body exceeds the size limit",
            {"body": f"more than {limit} bytes once decompressed"},
        )
    return out


def _bad(message: str) -> MalformedRequest:
    return MalformedRequest(message, {"Content-Encoding": message})
