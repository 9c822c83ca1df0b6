"""Where a request ends (serving/http_framing.py), on raw bytes as they arrive.

The worker's event loop hands a request to a thread only once these say it is complete, and
hands anything they call malformed to gunicorn as it is; so a complete request must be found
exactly where it ends, an incomplete one never taken for complete, and framing gunicorn would
refuse never followed.
"""

from __future__ import annotations

import pytest

from serving.http_framing import ChunkedBody, Malformed, scan_head

MAX = 64 * 1024
HEAD = b"POST /models/m/1/predict HTTP/1.1\r\nHost: t\r\n"


def test_a_head_is_complete_only_with_its_blank_line():
    data = HEAD + b"Content-Length: 3\r\n\r\nabc"
    for cut in range(len(data) - 3):
        assert scan_head(data[:cut], MAX) is None, cut
    head = scan_head(data, MAX)
    assert head is not None
    assert head.end == len(data) - 3
    assert head.length == 3
    assert head.expect_continue is False


def test_without_framing_headers_there_is_no_body():
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    head = scan_head(request + b"GET /next", MAX)
    assert head is not None and head.length == 0 and head.end == len(request)


def test_header_names_are_case_insensitive_and_values_stripped():
    head = scan_head(HEAD + b"cOnTeNt-LeNgTh: \t12 \r\nEXPECT: 100-Continue\r\n\r\n", MAX)
    assert head is not None and head.length == 12 and head.expect_continue


def test_similar_header_names_are_not_framing():
    head = scan_head(HEAD + b"X-Content-Length: 5\r\nX-Expect: 100-continue\r\n\r\n", MAX)
    assert head is not None and head.length == 0 and not head.expect_continue


def test_a_body_containing_a_header_like_line_does_not_count():
    data = HEAD + b"Content-Length: 30\r\n\r\n" + b"\r\nContent-Length: 99999\r\n\r\n1234"
    head = scan_head(data, MAX)
    assert head is not None and head.length == 30


def test_chunked_framing_has_no_length():
    head = scan_head(HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n", MAX)
    assert head is not None and head.length is None


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 3\r\nContent-Length: 3\r\n",
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 0x10\r\n",
        b"Content-Length: 1 2\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: chunked, gzip\r\n",
        b"Content-Length: 3\r\n 4\r\n",  # folded
    ],
)
def test_framing_gunicorn_refuses_is_malformed(headers):
    with pytest.raises(Malformed):
        scan_head(HEAD + headers + b"\r\n", MAX)


def test_a_head_beyond_the_limit_is_malformed_complete_or_not():
    long = HEAD + b"X-Pad: " + b"a" * 200 + b"\r\n"
    with pytest.raises(Malformed):
        scan_head(long, 100)
    with pytest.raises(Malformed):
        scan_head(long + b"\r\n", 100)
    assert scan_head(long + b"\r\n", len(long) + 2) is not None


def _body_end(body: bytes, *, start: int = 0, step: int | None = None) -> int | None:
    """Feed `body` to one ChunkedBody `step` bytes at a time; the end once it is found."""
    scanner = ChunkedBody(start)
    if step is None:
        return scanner.end(body)
    buffer = bytearray()
    for i in range(0, len(body), step):
        buffer += body[i : i + step]
        found = scanner.end(buffer)
        if found is not None:
            return found
    return None


CHUNKED = b"4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n"


@pytest.mark.parametrize("step", [None, 1, 2, 3, 7, 64])
def test_a_chunked_body_ends_after_its_last_chunk(step):
    assert _body_end(CHUNKED + b"GET /next", step=step) == len(CHUNKED)


def test_an_incomplete_chunked_body_is_not_complete():
    for cut in range(len(CHUNKED)):
        assert ChunkedBody(0).end(CHUNKED[:cut]) is None, cut


def test_trailers_end_with_a_blank_line():
    body = b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-More: 2\r\n\r\n"
    assert _body_end(body + b"next", step=1) == len(body)
    assert ChunkedBody(0).end(body[:-2]) is None


def test_the_scan_starts_after_the_head():
    head = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    data = head + CHUNKED
    assert ChunkedBody(len(head)).end(data) == len(data)


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nab\r\n0\r\n\r\n",  # not hex
        b"-1\r\n",
        b"\r\nabc",  # empty size
        b"3\r\nabcXY0\r\n\r\n",  # data not followed by CRLF
        b"1" * 2000,  # a size line that never ends
        b"1234567890123456\r\n",  # too large
    ],
)
def test_malformed_chunks_are_malformed(body):
    with pytest.raises(Malformed):
        ChunkedBody(0).end(body)
