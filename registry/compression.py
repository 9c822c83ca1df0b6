"""gzip answers for clients that send `Accept-Encoding: gzip` (both transports, through the
answer finisher). Only bodies of at least a size setting are compressed: below ~1 KiB the
header and the CPU cost more than the bytes saved."""

from __future__ import annotations

import gzip

# Cheap and effective on JSON: level 6 costs ~3x level 1 for a few percent.
GZIP_LEVEL = 1
GZIP_HEADERS = (("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding"))


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an `Accept-Encoding` value allows gzip (`gzip;q=0` refuses it)."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        if coding.strip() in ("gzip", "x-gzip", "*"):
            quality = params.strip().replace(" ", "")
            return not (quality.startswith("q=") and _is_zero(quality[2:]))
    return False


def _is_zero(text: str) -> bool:
    try:
        return float(text) == 0.0
    except ValueError:
        return True  # a malformed weight: do not guess that gzip is welcome


def gzipped(body: bytes, accept_encoding: str, min_bytes: int) -> bytes | None:
    """The gzipped body when the client accepts gzip and the body is at least `min_bytes`
    (`min_bytes` 0 turns compression off), else None (send it as it is)."""
    if min_bytes <= 0 or len(body) < min_bytes or not accept_encoding:
        return None
    if not accepts_gzip(accept_encoding):
        return None
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
