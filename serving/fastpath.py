"""The predict fast path: a WSGI layer in front of Flask for the one request that matters most.

A 1-row predict costs microseconds in the model and ~100 µs in Flask's request and response
machinery. This layer answers `POST /models/<name>/<ref>/predict` itself when everything it
needs is already in memory: a verified token in the authenticator's cache whose token epoch
was read within the refresh period (or auth disabled), a reference the resolver knows
without asking the registry, a loaded model. It sends exactly what the Flask view and hooks
would send (body, X-Model-* headers, security headers, request id), and records the same
metrics and access-log line.

Anything else falls through to Flask untouched: a first request (token lookup, registry
lookup, load), a bad body or a model refusing the input (the Flask view then produces the
problem+json answer), other methods, a query string, chunked bodies.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from registry.auth import Authenticator
from registry.http import FIXED_HEADERS, request_id_from
from serving.runtime import ServingRuntime
from serving.views import encode_prediction, model_headers

log = logging.getLogger("modelreg.access")

ROUTE = "/models/<name>/<ref>/predict"
AUTH_DISABLED_HEADER = ("X-Modelreg-Warning", "authentication is disabled")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PredictFastPath:
    def __init__(
        self,
        app: WsgiApp,
        runtime: ServingRuntime,
        authenticator: Authenticator,
        metrics: Any,
        *,
        auth_disabled: bool,
        local_actor: str,
        max_body_bytes: int,
        access_log: bool,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.authenticator = authenticator
        self.metrics = metrics
        self.auth_disabled = auth_disabled
        self.local_actor = local_actor
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.answered = 0  # requests this layer answered (the rest went to Flask)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        target = self._target(environ)
        if target is not None:
            answer = self._answer(environ, target[0], target[1], started)
            if answer is not None:
                start_response("200 OK", answer[0])
                return [answer[1]]
        return self.app(environ, start_response)

    def answer_from_memory(
        self, environ: dict[str, Any]
    ) -> tuple[list[tuple[str, str]], bytes] | None:
        """The 200 answer's headers and body when this layer can give it from memory alone,
        else None (and the request is the app's to answer, elsewhere). The serve worker's
        event loop calls this: nothing on this path waits on the database, the store or a
        model load."""
        target = self._target(environ)
        if target is None:
            return None
        return self._answer(environ, target[0], target[1], time.perf_counter())

    def _target(self, environ: dict[str, Any]) -> tuple[str, str] | None:
        """(name, ref) when this request is a predict this layer may try."""
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("QUERY_STRING"):
            return None
        parts = environ.get("PATH_INFO", "").split("/")
        if len(parts) != 5 or parts[1] != "models" or parts[4] != "predict":
            return None
        name, ref = parts[2], parts[3]
        if not name or not ref or not (name + ref).isascii():
            return None  # Flask decodes and validates anything unusual
        if environ.get("HTTP_TRANSFER_ENCODING"):
            return None
        mimetype = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        if mimetype not in ("application/json", ""):
            return None
        return name, ref

    def _identity_name(self, environ: dict[str, Any], name: str) -> str | None:
        if self.auth_disabled:
            return self.local_actor
        scheme, _, secret = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret or len(secret) > 256:
            return None
        identity = self.authenticator.cached(secret)
        if identity is None or not identity.has_role("reader"):
            return None
        return identity.name if identity.may_use_model(name) else None

    def _read_body(self, environ: dict[str, Any]) -> bytes | None:
        declared = environ.get("CONTENT_LENGTH")
        if not declared:
            return None  # a body framed otherwise (HTTP/2, a terminated stream): Flask reads it
        try:
            length = int(declared)
        except ValueError:
            return None
        if length < 0 or length > self.max_body_bytes:
            return None
        body = environ["wsgi.input"].read(length) if length else b""
        # Whatever happens next, Flask can still read the body if it has to answer.
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return body

    def _answer(
        self, environ: dict[str, Any], name: str, ref: str, started: float
    ) -> tuple[list[tuple[str, str]], bytes] | None:
        actor = self._identity_name(environ, name)
        if actor is None:
            return None
        body = self._read_body(environ)
        if body is None:
            return None
        try:
            result = self.runtime.predict_cached(name, ref, body)
        except Exception:
            return None
        if result is None:
            return None
        payload = encode_prediction(result)
        version = str(result.version)
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID", ""))
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            *model_headers(result),
            *FIXED_HEADERS,
            ("Cache-Control", "no-store"),
            ("X-Request-ID", request_id),
        ]
        if self.auth_disabled:
            headers.append(AUTH_DISABLED_HEADER)
        seconds = time.perf_counter() - started
        self.metrics.observe_request(ROUTE, "POST", name, version, 200, seconds)
        if self.access_log:
            path = environ.get("PATH_INFO", "")
            log.info(
                "POST %s 200",
                path,
                extra={
                    "method": "POST",
                    "path": path,
                    "status": 200,
                    "latency_ms": round(seconds * 1000, 3),
                    "model": name,
                    "version": version,
                    "actor": actor,
                    "request_id": request_id,
                },
            )
        self.answered += 1
        return headers, payload
