"""Where an HTTP/1.1 request ends, from the bytes a connection has sent so far.

The serve worker (serving/worker.py) reads every request on its event loop and hands a request
to a pool thread only once it is complete, so that no thread ever waits on a slow client. For
that the loop needs the request's framing and nothing more: the end of the head, and the body's
length (Content-Length) or the end of its chunked encoding. Parsing the request itself stays
gunicorn's (or the inline path's) job; when the framing here is malformed, the worker hands
what it has to gunicorn, which answers the error as it always does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CHUNK_LINE = 1024  # a chunk-size line with extensions; gunicorn refuses far less
HEX = re.compile(rb"[0-9A-Fa-f]+")
FRAMING_HEADERS = (b"\r\ncontent-length:", b"\r\ntransfer-encoding:", b"\r\nexpect:")


class Malformed(ValueError):
    """Framing the loop cannot follow; gunicorn's parser says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Head:
    end: int  # offset just past the blank line that ends the head
    length: int | None  # body bytes (Content-Length or none); None: chunked
    expect_continue: bool


def scan_head(data: bytes | bytearray, max_head: int) -> Head | None:
    """The head at the start of `data` once it is complete, else None.

    Raises Malformed for a head longer than `max_head`, conflicting or invalid framing, or a
    transfer coding other than chunked."""
    end = data.find(b"\r\n\r\n", 0, max_head)
    if end < 0:
        if len(data) >= max_head:
            raise Malformed("request head too large")
        return None
    end += 4
    head = bytes(data[:end]).lower()
    if all(name not in head for name in FRAMING_HEADERS):
        return Head(end, 0, False)  # the usual case: a request without a body
    length = _single(head, b"\r\ncontent-length:")
    coding = _single(head, b"\r\ntransfer-encoding:")
    expect = _single(head, b"\r\nexpect:")
    if coding is not None:
        if length is not None:
            raise Malformed("both Content-Length and Transfer-Encoding")
        if coding.split(b",")[-1].strip() != b"chunked":
            raise Malformed("a transfer coding other than chunked")
        body: int | None = None
    elif length is not None:
        if not length.isdigit() or len(length) > 18:
            raise Malformed("invalid Content-Length")
        body = int(length)
    else:
        body = 0
    return Head(end, body, expect == b"100-continue")


def _single(head: bytes, name: bytes) -> bytes | None:
    """The stripped value of header `name` (with its leading CRLF), None when absent;
    Malformed when it appears twice or is folded."""
    start = head.find(name)
    if start < 0:
        return None
    if head.find(name, start + len(name)) >= 0:
        raise Malformed(f"repeated {name[2:-1].decode()} header")
    stop = head.find(b"\r\n", start + len(name))
    if head[stop + 2 : stop + 3] in (b" ", b"\t"):
        raise Malformed("folded header line")
    return head[start + len(name) : stop].strip(b" \t")


class ChunkedBody:
    """Follows a chunked body through a growing buffer, resuming where it stopped."""

    def __init__(self, start: int) -> None:
        self.position = start  # the next chunk-size line starts here

    def end(self, data: bytes | bytearray) -> int | None:
        """The offset just past the body's last CRLF once it is all in `data`, else None."""
        while True:
            line_end = data.find(b"\r\n", self.position, self.position + MAX_CHUNK_LINE)
            if line_end < 0:
                if len(data) - self.position >= MAX_CHUNK_LINE:
                    raise Malformed("chunk-size line too long")
                return None
            size_text = bytes(data[self.position : line_end]).split(b";", 1)[0].strip(b" \t")
            if not HEX.fullmatch(size_text) or len(size_text) > 15:
                raise Malformed("invalid chunk size")
            size = int(size_text, 16)
            if size == 0:
                return self._trailers_end(data, line_end + 2)
            data_end = line_end + 2 + size
            if len(data) < data_end + 2:
                return None
            if data[data_end : data_end + 2] != b"\r\n":
                raise Malformed("chunk not followed by CRLF")
            self.position = data_end + 2

    def _trailers_end(self, data: bytes | bytearray, start: int) -> int | None:
        if data[start : start + 2] == b"\r\n":
            return start + 2
        end = data.find(b"\r\n\r\n", start)
        if end < 0:
            if len(data) - start >= 64 * 1024:
                raise Malformed("trailer section too large")
            return None
        return end + 4
