"""The predict fast path: a WSGI layer in front of Flask for the one request that matters most.

A 1-row predict costs microseconds in the model and ~100 µs in Flask's request and response
machinery. This layer answers `POST /models/<name>/<ref>/predict` itself when everything it
needs to decide is in memory: a verified token in the authenticator's cache whose token epoch
was read within the refresh period (or auth disabled), a reference the resolver knows without
asking the registry, a loaded model. It answers with the code Flask's view uses
(serving/native.py through the data plane), renders failures with the code Flask's error
handlers use (registry/problems.py), and finishes the answer like Flask's hooks
(registry/answers.py): the two cannot drift apart.

It steps aside, before decoding anything, only when the request is not one it may take
(another method or route, a query string, an unusual path or media type, a body framed
otherwise, an uncached or insufficient token) or when the data plane signals NotInMemory (a
registry lookup or a model load is needed). A request that fails here is answered here: a bad
body is decoded once and a refusing model called once.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any

from registry.access import bearer_secret
from registry.answers import Answer, AnswerFinisher, Finished, request_id_from, status_line
from registry.auth import Authenticator
from registry.problems import problem_for, render_problem
from serving.dataplane import DataPlane, NotInMemory
from serving.monitoring.context import CURRENT_REQUEST_ID
from serving.native import ACCEPTED_MEDIA_TYPES, predict_answer
from serving.unit_keys import from_environ

ROUTE = "/models/<name>/<ref>/predict"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PredictFastPath:
    def __init__(
        self,
        app: WsgiApp,
        dataplane: DataPlane,
        authenticator: Authenticator,
        finisher: AnswerFinisher,
        *,
        auth_disabled: bool,
        local_actor: str,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.dataplane = dataplane
        self.authenticator = authenticator
        self.finisher = finisher
        self.auth_disabled = auth_disabled
        self.local_actor = local_actor
        self.max_body_bytes = max_body_bytes
        self.answered = 0  # requests this layer answered (the rest went to Flask)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        answer = self.answer_from_memory(environ)
        if answer is None:
            return self.app(environ, start_response)
        start_response(status_line(answer.status), answer.headers)
        return [answer.body]

    def answer_from_memory(self, environ: dict[str, Any]) -> Answer | None:
        """The complete answer when this layer can give it from memory alone, else None (and
        the request is the app's to answer, untouched). The serve worker's event loop calls
        this: nothing on this path waits on the database, the store or a model load."""
        started = time.perf_counter()
        target = self._target(environ)
        if target is None:
            return None
        name, ref = target
        actor = self._identity_name(environ, name)
        if actor is None:
            return None
        body = self._read_body(environ)
        if body is None:
            return None
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID", ""))
        CURRENT_REQUEST_ID.set(request_id)  # for the payload log
        try:
            answer = predict_answer(
                self.dataplane,
                name,
                ref,
                body,
                memory_only=True,
                content_encoding=environ.get("HTTP_CONTENT_ENCODING"),
                max_body_bytes=self.max_body_bytes,
                unit=from_environ(environ, body),
            )
        except NotInMemory:
            return None
        except Exception as error:  # answered as Flask's error handlers answer it
            answer = render_problem(problem_for(error, request_id), request_id)
        headers = answer.headers
        origin = environ.get("HTTP_ORIGIN", "")
        trailer = self.finisher.trailer(request_id, has_cache_control=False, origin=origin)
        accept = environ.get("HTTP_ACCEPT_ENCODING")
        if accept:  # after the trailer, as Flask's hook does it
            answer.body, coding = self.finisher.compress(answer.body, accept)
            trailer.extend(coding)
        headers.append(("Content-Length", str(len(answer.body))))
        headers.extend(trailer)
        path = environ.get("PATH_INFO", "")
        self.finisher.record(
            Finished(
                route=ROUTE,
                method="POST",
                path=path,
                status=answer.status,
                seconds=time.perf_counter() - started,
                model=name,
                version=answer.version,
                model_exists=answer.status == 200,
                actor=actor,
                request_id=request_id,
            )
        )
        self.answered += 1
        return answer

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
        if mimetype not in ACCEPTED_MEDIA_TYPES:
            return None
        return name, ref

    def _identity_name(self, environ: dict[str, Any], name: str) -> str | None:
        if self.auth_disabled:
            return self.local_actor
        secret = bearer_secret(environ.get("HTTP_AUTHORIZATION", ""))
        if secret is None:
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
