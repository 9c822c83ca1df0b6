"""The last step of every answer, whoever built it: Flask's hooks and the predict fast path
both finish through `AnswerFinisher`, so the headers every response carries, the request
metrics and the access-log line cannot differ between them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from registry.compression import GZIP_HEADERS, gzipped
from registry.cors import CorsPolicy

access_log = logging.getLogger("modelreg.access")

# Sent on every response.
FIXED_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)
AUTH_DISABLED_HEADER = ("X-Modelreg-Warning", "authentication is disabled")
UNKNOWN_MODEL = "_unknown"  # the metrics label of a model that may not be named


@dataclass(slots=True)
class Answer:
    """A protocol's answer before the transport sends it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    version: str = ""  # the model version that answered, when one did (metrics, access log)


_STATUS_LINES = {int(code): f"{int(code)} {code.phrase}" for code in HTTPStatus}


def status_line(status: int) -> str:
    """`200 OK`: the WSGI status string of a code (a table: HTTPStatus() costs a lookup
    through the enum machinery on every answer)."""
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"{status} {HTTPStatus(status).phrase}"


class _FreshIds:
    """Request ids of 128 random bits each (as random as uuid4().hex), drawn from the OS 256
    at a time: one getrandom call per request was a measurable part of a 1-row predict."""

    BLOCK = 256

    def __init__(self) -> None:
        self._ids: list[str] = []
        # A forked worker must not hand out the ids its parent drew.
        os.register_at_fork(after_in_child=self._ids.clear)

    def __call__(self) -> str:
        ids = self._ids
        try:
            return ids.pop()  # atomic: threads never get the same id
        except IndexError:
            block = os.urandom(16 * self.BLOCK).hex()
            fresh = [block[i : i + 32] for i in range(32, len(block), 32)]
            ids.extend(fresh)
            return block[:32]


fresh_request_id = _FreshIds()


def request_id_from(incoming: str) -> str:
    """The caller's X-Request-ID when it is a sane one, else a fresh id."""
    if 0 < len(incoming) <= 64 and incoming.isprintable() and incoming.isascii():
        return incoming
    return fresh_request_id()


@dataclass(slots=True)  # not frozen: built for every request, and a frozen init is slower
class Finished:
    """What the finisher records about one answered request."""

    route: str
    method: str
    path: str
    status: int
    seconds: float
    model: str | None
    version: str
    actor: str | None
    request_id: str
    # The model is known to exist: a registry success, or a version of it answered.
    model_exists: bool = False


class AnswerFinisher:
    def __init__(
        self,
        metrics: Any,
        *,
        knows_model: Callable[[str], bool],
        auth_disabled: bool,
        access_log: bool,
        compress_min_bytes: int = 0,
        cors: CorsPolicy | None = None,
    ) -> None:
        self._metrics = metrics
        self._compress_min_bytes = compress_min_bytes
        self.cors = cors or CorsPolicy(frozenset())
        self._knows_model = knows_model
        self._access_log = access_log
        self._trailer: tuple[tuple[str, str], ...] = (
            *FIXED_HEADERS,
            *((AUTH_DISABLED_HEADER,) if auth_disabled else ()),
        )

    def trailer(
        self, request_id: str, *, has_cache_control: bool, origin: str = ""
    ) -> list[tuple[str, str]]:
        """Appended to every answer. No answer sets these itself, except Cache-Control
        (file downloads): nothing else may be cached. `origin` is the request's Origin."""
        headers = [*self._trailer]
        if not has_cache_control:
            headers.append(("Cache-Control", "no-store"))
        headers.append(("X-Request-ID", request_id))
        if origin and self.cors.enabled:
            headers.extend(self.cors.answer_headers(origin))
        return headers

    def compress(
        self, body: bytes, accept_encoding: str
    ) -> tuple[bytes, tuple[tuple[str, str], ...]]:
        """The body to send and the headers that describe its coding: gzipped for a client
        that accepts it when the body reaches COMPRESS_MIN_BYTES, else as it is."""
        squeezed = gzipped(body, accept_encoding, self._compress_min_bytes)
        if squeezed is None:
            return body, ()
        return squeezed, GZIP_HEADERS

    def model_label(self, name: str | None, status: int, exists: bool) -> str:
        """The model a metric may name: one that exists, for a caller that passed auth."""
        if name is None:
            return ""
        if status in (401, 403):
            return UNKNOWN_MODEL
        # A registry success names a model that exists (or was just created or deleted);
        # otherwise the serving side knows it once it resolved one of its versions.
        if exists or self._knows_model(name):
            return name
        return UNKNOWN_MODEL

    def count_mutation(self, operation: str) -> None:
        self._metrics.mutations.labels(operation).inc()

    def record(self, done: Finished) -> None:
        """Request metrics and the access-log line of one answered request."""
        label = self.model_label(done.model, done.status, done.model_exists)
        self._metrics.observe_request(
            done.route, done.method, label, done.version, done.status, done.seconds
        )
        if self._access_log and access_log.isEnabledFor(logging.INFO):  # else: no fields built
            access_log.info(
                "%s %s %d",
                done.method,
                done.path,
                done.status,
                extra={
                    "method": done.method,
                    "path": done.path,
                    "status": done.status,
                    "latency_ms": round(done.seconds * 1000, 3),
                    "model": done.model,
                    "version": done.version or None,
                    "actor": done.actor,
                    "request_id": done.request_id,
                },
            )
