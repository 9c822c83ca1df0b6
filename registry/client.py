"""Python client for the modelreg HTTP API.

`Client(url, token)` talks to a running server over HTTP; `Client.for_app(app)` runs the very
same code in-process against a Flask app (the CLI's embedded default), through a requests
transport adapter that turns each request into a WSGI call. Everything above the transport
(URLs, bodies, error handling, pagination, checksums) is shared, so both behave identically.

Errors: every non-2xx answer raises `ApiError` built from the problem+json body. When no answer
arrives at all (connection refused, DNS failure, timeout, connection dropped mid-download) the
client raises `ConnectionFailed`, which is both an `ApiError` (status 0) and a
`requests.ConnectionError`, so callers can catch either.

numpy and pandas are never imported here: an object can only be an ndarray or a DataFrame if
the caller already imported them, so the client looks them up in `sys.modules`. This keeps the
CLI's start-up fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Final, overload
from urllib.parse import quote, urlsplit

import orjson
import requests
from requests.adapters import BaseAdapter
from requests.auth import AuthBase
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from registry.native_formats import native_bytes, native_format

__all__ = [
    "DEFAULT_URL",
    "EMBEDDED_URL",
    "NOT_GIVEN",
    "ApiError",
    "Client",
    "ConnectionFailed",
    "IntegrityError",
    "WSGIAdapter",
    "check_etag",
]

DEFAULT_URL: Final = "http://127.0.0.1:8080"
EMBEDDED_URL: Final = "http://modelreg.embedded"
USER_AGENT: Final = "modelreg-client/0.1"

EXTENSION_FORMATS: Final = {
    ".joblib": "joblib",
    ".pkl": "joblib",
    ".skops": "skops",
    ".onnx": "onnx",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".txt": "lightgbm",
}
FILE_EXTENSIONS: Final = {
    "joblib": "joblib",
    "skops": "skops",
    "onnx": "onnx",
    "xgboost": "json",
    "lightgbm": "txt",
}
MLFLOW_ARCHIVES: Final = (".zip", ".tar.gz", ".tgz")  # MLflow model directories, packed
CHUNK_SIZE: Final = 1024 * 1024
_JSON_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_SHA256_RE: Final = re.compile(r"[0-9a-fA-F]{64}")


class _NotGiven:
    """Marks an argument the caller did not pass, where None is itself meaningful."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __bool__(self) -> bool:
        return False


NOT_GIVEN: Final = _NotGiven()


# ---- errors ------------------------------------------------------------------------------


class ApiError(Exception):
    """A non-2xx answer, with the fields of its problem+json body.

    `status` is the HTTP status, or 0 when the problem was detected on the client side
    (`ConnectionFailed`, `IntegrityError`). `errors` maps field names to reasons when the
    server named them. `body` is the parsed JSON body (or the raw text if it was not JSON).
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors: dict[str, Any] | None = dict(errors) if errors else None
        self.body = body
        self.request_id: str | None = body.get("request_id") if isinstance(body, Mapping) else None
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"{self.status} {self.title}" if self.status else self.title
        if self.detail:
            text = f"{text}: {self.detail}"
        if self.errors:
            text = f"{text} {self.errors}"
        return text

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickles `args`; rebuild from the real fields instead (multiprocessing).
        return (type(self), (self.status, self.title, self.detail, self.errors, self.body))

    @classmethod
    def from_response(cls, response: requests.Response) -> ApiError:
        """Build the error from an answer, tolerating bodies that are not problem+json."""
        raw = response.content or b""
        body: Any
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode(response.encoding or "utf-8", "replace")
        reason = response.reason or ""
        if isinstance(body, Mapping):
            errors = body.get("errors")
            return cls(
                response.status_code,
                str(body.get("title") or reason or "Error"),
                str(body.get("detail") or ""),
                errors if isinstance(errors, Mapping) else None,
                body,
            )
        detail = body.strip()[:500] if isinstance(body, str) else ""
        return cls(response.status_code, reason or "Error", detail, None, body)


class ConnectionFailed(ApiError, requests.ConnectionError):
    """No usable answer: refused, unreachable, timed out, or cut off mid-response (status 0)."""


class IntegrityError(ApiError):
    """The bytes received do not hash to the sha256 the server announced (status 0)."""


def _etag_digest(etag: str | None) -> str | None:
    """The sha256 inside an ETag header (`"<hex>"` or `W/"<hex>"`), or None."""
    if not etag:
        return None
    value = etag.strip()
    if value.startswith(("W/", "w/")):
        value = value[2:]
    value = value.strip('"')
    return value.lower() if _SHA256_RE.fullmatch(value) else None


def check_etag(etag: str | None, sha256_hex: str) -> None:
    """Raise IntegrityError unless `sha256_hex` is the digest the ETag announces.

    The server's ETag for an artifact is its sha256, so a download can be verified
    end-to-end without trusting any proxy or store in between.
    """
    expected = _etag_digest(etag)
    if expected is None:
        raise IntegrityError(
            0,
            "Artifact integrity check failed",
            f"the server sent no sha256 to verify against (ETag {etag!r})",
            {"sha256": "missing from the response"},
        )
    actual = sha256_hex.lower()
    if not hmac.compare_digest(expected, actual):
        raise IntegrityError(
            0,
            "Artifact integrity check failed",
            f"the received bytes hash to {actual}, the server announced {expected}",
            {"sha256": f"expected {expected}, got {actual}"},
        )


# ---- JSON --------------------------------------------------------------------------------


def _numpy() -> Any:
    return sys.modules.get("numpy")


def _pandas() -> Any:
    return sys.modules.get("pandas")


def _is_ndarray(value: Any) -> bool:
    np = _numpy()
    return np is not None and isinstance(value, np.ndarray)


def _is_dataframe(value: Any) -> bool:
    pd = _pandas()
    return pd is not None and isinstance(value, pd.DataFrame)


def _default(value: Any) -> Any:
    """orjson fallback: numpy/pandas values orjson does not take natively."""
    np = _numpy()
    if np is not None:
        if isinstance(value, np.ndarray):  # non-contiguous or object dtype
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
    pd = _pandas()
    if pd is not None:
        if value is pd.NA or value is pd.NaT:
            return None
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=_JSON_OPTIONS)


def _plain(value: Any) -> Any:
    """Deep-convert to JSON types (numpy scalars -> Python numbers), as the server will see it."""
    return orjson.loads(_dumps(value))


def _frame_rows(frame: Any) -> list[dict[str, Any]]:
    """DataFrame -> list of row objects keyed by column name."""
    columns = [str(column) for column in frame.columns]
    return [dict(zip(columns, row, strict=True)) for row in frame.itertuples(index=False)]


def _example_rows(value: Any) -> list[Any]:
    """An input example as the list of rows the registry stores."""
    if _is_dataframe(value):
        return _plain(_frame_rows(value))
    if _is_ndarray(value):
        if value.ndim != 2:
            raise ValueError(f"input_example must be 2-D (rows x features), got {value.ndim}-D")
        return _plain(value)
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError("input_example must be a DataFrame, a 2-D array or a list of rows")
    return _plain(list(value))


def _predict_body(X: Any, method: str) -> bytes:
    """Encode features in the body shape that loses the least information."""
    payload: dict[str, Any]
    if _is_dataframe(X):
        values = X.to_numpy()
        if values.dtype != object:
            values = _numpy().ascontiguousarray(values)  # orjson serializes it natively
        payload = {"dataframe_split": {"columns": [str(c) for c in X.columns], "data": values}}
    elif _is_ndarray(X):
        if X.ndim != 2:
            raise ValueError(
                f"X must be 2-D (rows x features), got {X.ndim}-D; "
                "use X.reshape(1, -1) for one row or X.reshape(-1, 1) for one feature"
            )
        payload = {"instances": X}
    elif isinstance(X, Mapping):
        payload = {"inputs": dict(X)}  # columns: {"feature": [values...]}
    elif isinstance(X, str | bytes) or not isinstance(X, Iterable):
        raise TypeError("X must be a 2-D array, a DataFrame, a list of rows or a column mapping")
    else:
        payload = {"instances": list(X)}
    payload["method"] = method
    return _dumps(payload)


# ---- streaming bodies ----------------------------------------------------------------------


def _reference_json(X: Any, y: Any = None, target: str | None = None) -> tuple[bytes, str | None]:
    """Reference rows as `{"columns", "data"}` JSON, the target (if any) as a last column."""
    if _is_dataframe(X):
        columns = [str(c) for c in X.columns]
        data = X.to_numpy(dtype=object).tolist()
    else:
        rows = _plain(X) if _is_ndarray(X) else list(X)
        if rows and isinstance(rows[0], Mapping):
            columns = list(dict.fromkeys(k for row in rows for k in row))
            data = [[row.get(c) for c in columns] for row in rows]
        else:
            width = len(rows[0]) if rows else 0
            columns = [f"f{j}" for j in range(width)]
            data = [list(row) for row in rows]
    if y is not None:
        target = target or getattr(y, "name", None) or "target"
        while target in columns:
            target = f"_{target}"
        values = _plain(y) if _is_ndarray(y) else list(getattr(y, "tolist", lambda: y)())
        if len(values) != len(data):
            raise ValueError(f"{len(values)} targets for {len(data)} reference rows")
        data = [[*row, value] for row, value in zip(data, values, strict=True)]
        columns = [*columns, str(target)]
    return _dumps({"columns": columns, "data": data}), target


def _safe_filename(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(name))[:200].lstrip(".")
    return cleaned or "artifact"


class _MultipartBody:
    """A multipart/form-data body read lazily from an open file.

    requests sends any iterable object with a length as a streamed body with a
    Content-Length, so a multi-gigabyte artifact is never held in memory (requests' own
    `files=` would read it whole, and requests_toolbelt is not a dependency).
    """

    def __init__(
        self,
        metadata: bytes,
        artifact: IO[bytes],
        size: int,
        filename: str,
        reference: bytes | None = None,
    ) -> None:
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        b = boundary.encode("ascii")
        reference_part = (
            b""
            if reference is None
            else b"".join(
                [
                    b'Content-Disposition: form-data; name="reference"; filename="reference.json"',
                    b"\r\nContent-Type: application/json\r\n\r\n",
                    reference,
                    b"\r\n--" + b + b"\r\n",
                ]
            )
        )
        head = b"".join(
            [
                b"--" + b + b"\r\n",
                b'Content-Disposition: form-data; name="metadata"\r\n',
                b"Content-Type: application/json\r\n\r\n",
                metadata,
                b"\r\n--" + b + b"\r\n",
                reference_part,
                b'Content-Disposition: form-data; name="artifact"; filename="',
                _safe_filename(filename).encode("ascii"),
                b'"\r\nContent-Type: application/octet-stream\r\n\r\n',
            ]
        )
        tail = b"\r\n--" + b + b"--\r\n"
        self._segments: list[tuple[bytes | IO[bytes], int]] = [
            (head, len(head)),
            (artifact, size),
            (tail, len(tail)),
        ]
        self._length = len(head) + size + len(tail)
        self._index = 0
        self._offset = 0
        self._position = 0

    def __len__(self) -> int:
        return self._length

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK_SIZE), b""))
        pieces: list[bytes] = []
        while size > 0 and self._index < len(self._segments):
            source, length = self._segments[self._index]
            remaining = length - self._offset
            if remaining <= 0:
                self._index += 1
                self._offset = 0
                continue
            want = min(size, remaining)
            if isinstance(source, bytes):
                piece = source[self._offset : self._offset + want]
            else:
                piece = source.read(want)
                if not piece:
                    raise OSError("the artifact file shrank while it was being uploaded")
            self._offset += len(piece)
            self._position += len(piece)
            size -= len(piece)
            pieces.append(piece)
        return b"".join(pieces)

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.read(CHUNK_SIZE), b"")


class _Reader(io.RawIOBase):
    """A readable binary stream over chunks (an iterator) or over any object with read()."""

    def __init__(
        self,
        source: Iterable[bytes] | IO[bytes] | Any,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._read = getattr(source, "read", None)
        self._chunks: Iterator[bytes] | None = None if self._read else iter(source)
        self._buffer = b""
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        if not self._buffer:
            self._buffer = self._next(len(view))
            if not self._buffer:
                self.close()  # exhausted: release the app's resources now
                return 0
        count = min(len(view), len(self._buffer))
        view[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count

    def _next(self, size: int) -> bytes:
        if self._read is not None:
            return bytes(self._read(size) or b"")
        assert self._chunks is not None
        for chunk in self._chunks:
            if chunk:
                return bytes(chunk)
        return b""

    def close(self) -> None:
        if not self.closed:
            try:
                if self._on_close is not None:
                    self._on_close()
            finally:
                super().close()


# ---- in-process transport ------------------------------------------------------------------

_BODY_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding"})


class WSGIAdapter(BaseAdapter):
    """A requests transport that calls a WSGI app in-process instead of opening a socket.

    Request bodies (bytes, files, streams) are handed to the app as `wsgi.input` without
    copying, and the app's response iterable becomes `Response.raw`, so `stream=True`
    downloads stream here too. Timeouts, TLS and proxies do not apply and are ignored.
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        super().__init__()
        self.app = app

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        from werkzeug.test import EnvironBuilder, run_wsgi_app

        url = urlsplit(request.url or "/")
        builder = EnvironBuilder(
            path=url.path or "/",
            query_string=url.query,
            base_url=f"{url.scheme}://{url.netloc}",
            method=request.method or "GET",
            headers=[(k, v) for k, v in request.headers.items() if k.lower() not in _BODY_HEADERS],
        )
        try:
            environ = builder.get_environ()
        finally:
            builder.close()
        self._attach_body(environ, request)
        # requests asks for gzip by default; in process, compressing answers only costs time
        # (and this adapter hands the body over undecoded)
        environ["HTTP_ACCEPT_ENCODING"] = "identity"
        app_iter, status, headers = run_wsgi_app(self.app, environ)

        response = requests.Response()
        code, _, reason = status.partition(" ")
        response.status_code = int(code)
        response.reason = reason
        merged: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for key, value in headers.items():
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        response.headers = merged
        response.encoding = get_encoding_from_headers(merged)
        response.raw = _Reader(app_iter, getattr(app_iter, "close", None))
        response.url = request.url or ""
        response.request = request
        response.connection = self
        return response

    @staticmethod
    def _attach_body(environ: dict[str, Any], request: requests.PreparedRequest) -> None:
        body: Any = request.body
        content_type = request.headers.get("Content-Type")
        if content_type:
            environ["CONTENT_TYPE"] = content_type
        if body is None:
            return
        if isinstance(body, str):
            body = body.encode("utf-8")
        if isinstance(body, bytes | bytearray | memoryview):
            environ["wsgi.input"] = io.BytesIO(bytes(body))
            environ["CONTENT_LENGTH"] = str(len(body))
            return
        environ["wsgi.input"] = io.BufferedReader(_Reader(body), CHUNK_SIZE)
        length = request.headers.get("Content-Length")
        if length is not None:
            environ["CONTENT_LENGTH"] = str(length)
        else:  # chunked: the stream ends where the body ends
            environ["wsgi.input_terminated"] = True

    def close(self) -> None:
        pass


class _BearerAuth(AuthBase):
    """Bearer token auth; being `session.auth`, it also keeps ~/.netrc from overriding it."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


# ---- the client ----------------------------------------------------------------------------


def _pairs(
    items: Mapping[int, float] | Iterable[Mapping[str, Any]], key: str
) -> list[dict[str, Any]]:
    """{version: number} or [{"version", key}] as the API's list of objects."""
    if isinstance(items, Mapping):
        return [{"version": int(v), key: n} for v, n in items.items()]
    return [dict(item) for item in items]


def _q(segment: str | int) -> str:
    return quote(str(segment), safe="")


def _tag_params(tag: str | Iterable[str] | Mapping[str, str | None] | None) -> list[str]:
    """`tag` filters as the API takes them: `key` (has the tag) or `key:value`."""
    if tag is None:
        return []
    if isinstance(tag, str):
        return [tag]
    if isinstance(tag, Mapping):
        return [key if value is None else f"{key}:{value}" for key, value in tag.items()]
    return list(tag)


class Client:
    """The registry and serving API as Python methods returning the server's JSON.

    `Client(url, token)` for a running server (by default `MODELREG_URL`, else
    http://127.0.0.1:8080, and `MODELREG_TOKEN`); `Client.for_app(app)` in-process. Methods
    raise `ApiError` on any non-2xx answer and `ConnectionFailed` when no answer arrives.
    Usable as a context manager (closes the HTTP session).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | _NotGiven | None = NOT_GIVEN,
        *,
        timeout: float = 30.0,
    ) -> None:
        # The same variables the CLI reads, so a shell that set them up serves both.
        url = url or os.environ.get("MODELREG_URL") or DEFAULT_URL
        if isinstance(token, _NotGiven):
            token = os.environ.get("MODELREG_TOKEN") or None
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept"] = "application/json, application/problem+json"
        if token:
            self.session.auth = _BearerAuth(token)

    @classmethod
    def for_app(cls, app: Any, token: str | None = None) -> Client:
        """A client for a Flask (or any WSGI) app running in this process: no server needed."""
        client = cls(EMBEDDED_URL, token)
        client.session.mount(EMBEDDED_URL + "/", WSGIAdapter(app))
        return client

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- plumbing ------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = NOT_GIVEN,
        data: Any = None,
        content_type: str | None = None,
        stream: bool = False,
        accept: Iterable[int] = (),
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send one request; raise ApiError unless the status is 2xx (or in `accept`)."""
        headers = dict(headers or {})
        if json is not NOT_GIVEN:
            data = _dumps(json)
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        query = {k: v for k, v in (params or {}).items() if v is not None and v != []}
        try:
            response = self.session.request(
                method,
                self.url + path,
                params=query,
                data=data,
                headers=headers,
                stream=stream,
                timeout=self.timeout,
                allow_redirects=False,  # the API never redirects; a streamed body can't replay
            )
        except (requests.ConnectionError, requests.Timeout) as error:
            raise ConnectionFailed(
                0, "Connection failed", f"{method} {self.url}{path}: {error}"
            ) from error
        if 200 <= response.status_code < 300 or response.status_code in accept:
            return response
        try:
            raise ApiError.from_response(response)
        finally:
            response.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        return orjson.loads(response.content) if response.content else None

    def _collect(
        self,
        path: str,
        key: str,
        params: Mapping[str, Any],
        *,
        page_size: int | None,
        max_items: int | None = None,
    ) -> list[dict[str, Any]]:
        """Follow `next_cursor` through every page (or until `max_items`)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            body = self._json("GET", path, params={**params, "limit": page_size, "cursor": cursor})
            items.extend(body[key])
            cursor = body.get("next_cursor")
            if not cursor or (max_items is not None and len(items) >= max_items):
                break
            if cursor in seen:  # a server bug must not turn into an endless loop
                raise ApiError(0, "Pagination loop", f"{path} returned cursor {cursor!r} twice")
            seen.add(cursor)
        return items if max_items is None else items[:max_items]

    # ---- models --------------------------------------------------------------------------

    def create_model(
        self, name: str, description: str = "", tags: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Create an empty registered model (409 if it exists); `register` also creates one."""
        body = {"name": name, "description": description, "tags": dict(tags or {})}
        return self._json("POST", "/models", json=body)

    def get_model(self, name: str) -> dict[str, Any]:
        """The model record, including its aliases as `{"production": 3, ...}`."""
        return self._json("GET", f"/models/{_q(name)}")

    def list_models(
        self,
        q: str | None = None,
        tag: str | Iterable[str] | Mapping[str, str | None] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Every model matching the filters, across all pages.

        `q` searches names; `tag` is `"key"`, `"key:value"`, a list of those, or a mapping
        (None value = any value). `limit` is the page size per request, not a cap.
        """
        params = {"q": q, "tag": _tag_params(tag)}
        return self._collect("/models", "models", params, page_size=limit)

    def update_model(
        self,
        name: str,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        reason: str = "",
    ) -> dict[str, Any]:
        """Change the description and/or merge `tags` (a None value removes that key)."""
        body: dict[str, Any] = {"reason": reason}
        if description is not None:
            body["description"] = description
        if tags is not None:
            body["tags"] = dict(tags)
        return self._json("PATCH", f"/models/{_q(name)}", json=body)

    def delete_model(self, name: str, reason: str = "") -> None:
        """Delete a model and its versions (409 while an alias exists)."""
        self._request("DELETE", f"/models/{_q(name)}", json={"reason": reason})

    # ---- versions ------------------------------------------------------------------------

    def register(
        self,
        name: str,
        model_or_path: Any,
        *,
        format: str | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        source: Mapping[str, str | None] | None = None,
        input_example: Any = None,
        signature: Mapping[str, Any] | None = None,
        reference: Any = None,
        reference_target: Any = None,
        accelerate: bool | str | None = None,
    ) -> dict[str, Any]:
        """Upload a new version of `name` (created if absent) and return its record.

        `model_or_path` is a file path (format from `format`, else from the extension:
        .joblib/.pkl, .skops, .onnx, .json/.ubj (XGBoost), .txt (LightGBM); .zip/.tar.gz/.tgz:
        a packed MLflow model directory),
        a directory written by `mlflow.sklearn.save_model` (sent zipped), raw `bytes` or a
        binary file object (`format` required), or a fitted estimator: XGBoost and LightGBM
        models (boosters and their scikit-learn wrappers) in their own model formats, any
        other with skops (the safe format) unless `format="joblib"`. Files are streamed from disk,
        never read whole into memory.
        `input_example` may be a DataFrame, a 2-D array or a list of rows; `source` is
        `{"run", "data", "code"}`.
        `reference` (a DataFrame, a 2-D array or a list of rows, e.g. the training inputs)
        is profiled by the server for monitoring, with `reference_target` (the matching
        targets) for the reference metric; see docs/monitoring.md.
        `accelerate`: False serves with the library's own predict, "float32" prefers a
        float32 form (faster tree ensembles on many rows, answers within the tolerance);
        the server's default (the fastest verified form, float64 where one exists) otherwise.
        """
        reference_body = None
        target_name = None
        if reference is not None:
            reference_body, target_name = _reference_json(reference, reference_target)
        with contextlib.ExitStack() as stack:
            artifact, size, filename, fmt = _open_artifact(model_or_path, format, stack)
            metadata: dict[str, Any] = {"format": fmt, "description": description}
            optional = {
                "tags": tags,
                "metrics": metrics,
                "params": params,
                "source": source,
                "signature": signature,
                "accelerate": accelerate,
            }
            metadata.update({key: value for key, value in optional.items() if value is not None})
            if input_example is not None:
                metadata["input_example"] = _example_rows(input_example)
            if target_name is not None:
                metadata["target"] = target_name
            body = _MultipartBody(_dumps(metadata), artifact, size, filename, reference_body)
            return self._json(
                "POST",
                f"/models/{_q(name)}/versions",
                data=body,
                content_type=body.content_type,
            )

    def get_version(self, name: str, ref: str | int = "latest") -> dict[str, Any]:
        """One version record; `ref` is a number, an alias or "latest"."""
        return self._json("GET", f"/models/{_q(name)}/versions/{_q(ref)}")

    def list_versions(
        self,
        name: str,
        status: str | None = None,
        limit: int | None = None,
        *,
        tag: str | Iterable[str] | Mapping[str, str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Every version of `name` (optionally only "ready" or "archived"), across all pages.

        `limit` is the page size per request, not a cap.
        """
        params = {"status": status, "tag": _tag_params(tag)}
        return self._collect(f"/models/{_q(name)}/versions", "versions", params, page_size=limit)

    def update_version(
        self,
        name: str,
        ref: str | int,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        status: str | None = None,
        reason: str = "",
        input_example: Any = None,
    ) -> dict[str, Any]:
        """Edit a version's description, merge its tags, set status ready/archived, or
        replace its input example (what the promotion gate predicts; a DataFrame, a 2-D
        array or a list of rows, as for `register`)."""
        body: dict[str, Any] = {"reason": reason}
        if input_example is not None:
            body["input_example"] = _example_rows(input_example)
        if description is not None:
            body["description"] = description
        if tags is not None:
            body["tags"] = dict(tags)
        if status is not None:
            body["status"] = status
        return self._json("PATCH", f"/models/{_q(name)}/versions/{_q(ref)}", json=body)

    def archive(self, name: str, ref: str | int, reason: str = "") -> dict[str, Any]:
        """Archive a version: kept and still servable by number, no longer "latest"."""
        return self.update_version(name, ref, status="archived", reason=reason)

    def delete_version(self, name: str, ref: str | int, reason: str = "") -> None:
        """Delete a version (409 while aliased); its number is never reused."""
        self._request("DELETE", f"/models/{_q(name)}/versions/{_q(ref)}", json={"reason": reason})

    @overload
    def download(self, name: str, ref: str | int = ..., path: None = None) -> bytes: ...

    @overload
    def download(self, name: str, ref: str | int, path: str | os.PathLike[str]) -> Path: ...

    def download(
        self, name: str, ref: str | int = "latest", path: str | os.PathLike[str] | None = None
    ) -> bytes | Path:
        """The artifact's bytes, or write them to `path` and return the file's path.

        The sha256 of what arrived is checked against the ETag (IntegrityError if they
        differ). With `path`, the body is streamed to a temporary file beside it that only
        replaces `path` once verified; a directory `path` gets the server's file name.
        """
        response = self._request(
            "GET", f"/models/{_q(name)}/versions/{_q(ref)}/artifact", stream=True
        )
        with response:
            etag = response.headers.get("ETag")
            if _etag_digest(etag) is None:  # e.g. a proxy rewrote the ETag
                etag = response.headers.get("X-Content-SHA256") or etag
            digest = hashlib.sha256()
            if path is None:
                buffer = bytearray()
                for chunk in self._chunks(response):
                    digest.update(chunk)
                    buffer += chunk
                check_etag(etag, digest.hexdigest())
                return bytes(buffer)
            target = Path(path)
            if target.is_dir():
                target = target / _download_name(response, name, ref)
            fd, partial = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".part"
            )
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in self._chunks(response):
                        digest.update(chunk)
                        out.write(chunk)
                check_etag(etag, digest.hexdigest())
                os.chmod(partial, 0o644)
                os.replace(partial, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
                raise
            return target

    def _chunks(self, response: requests.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_content(CHUNK_SIZE)
        except requests.RequestException as error:
            raise ConnectionFailed(
                0, "Connection failed", f"the download was cut off: {error}"
            ) from error

    # ---- aliases -------------------------------------------------------------------------

    def promote(
        self,
        name: str,
        version: int | str,
        alias: str = "production",
        reason: str = "",
        expected_version: int | _NotGiven | None = NOT_GIVEN,
    ) -> dict[str, Any]:
        """Point `alias` at `version` once the server has loaded and checked it.

        `expected_version` makes it a compare-and-set (409 if the alias is elsewhere):
        an int means "the alias is at that version now", None means "the alias does not
        exist yet". Leave it out to move the alias unconditionally.
        Returns `{"name", "alias", "version", "previous_version"}`.
        """
        body: dict[str, Any] = {"alias": alias, "reason": reason}
        if expected_version is not NOT_GIVEN:
            body["expected_version"] = expected_version
        return self._json("POST", f"/models/{_q(name)}/versions/{_q(version)}/promote", json=body)

    def rollback(self, name: str, alias: str = "production", reason: str = "") -> dict[str, Any]:
        """Undo the alias's latest promotion not yet undone (409 if nothing is left)."""
        return self._json(
            "POST", f"/models/{_q(name)}/aliases/{_q(alias)}/rollback", json={"reason": reason}
        )

    def aliases(self, name: str) -> dict[str, int]:
        """`{alias: version}` for every alias of the model."""
        rows = self._collect(f"/models/{_q(name)}/aliases", "aliases", {}, page_size=None)
        return {row["alias"]: row["version"] for row in rows}

    def delete_alias(self, name: str, alias: str, reason: str = "") -> None:
        """Remove an alias and its promotion history (the events keep the record)."""
        self._request("DELETE", f"/models/{_q(name)}/aliases/{_q(alias)}", json={"reason": reason})

    # ---- audit ---------------------------------------------------------------------------

    def events(
        self, name: str, type: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The audit trail, newest first: all of it, or only the `limit` most recent."""
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        return self._collect(
            f"/models/{_q(name)}/events",
            "events",
            {"type": type},
            page_size=None if limit is None else min(limit, 500),
            max_items=limit,
        )

    # ---- serving -------------------------------------------------------------------------

    def predict(
        self,
        name: str,
        ref: str | int,
        X: Any,
        method: str = "predict",
        *,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Predict with version `ref` (a number pins it; an alias follows promotions).

        X: a 2-D ndarray or a list of rows (plain lists or objects keyed by feature name)
        is sent as `instances`, a DataFrame as `dataframe_split`, a mapping of columns as
        `inputs`. Returns `{"model", "version", "predictions"}`, plus `"classes"` for
        predict_proba. `request_id` is sent as X-Request-ID: the key `feedback` labels use.
        """
        return self._json(
            "POST",
            f"/models/{_q(name)}/{_q(ref)}/predict",
            data=_predict_body(X, method),
            content_type="application/json",
            headers={**(headers or {}), **({"X-Request-ID": request_id} if request_id else {})}
            or None,
        )

    # -- traffic policies (docs/policies.md) ---------------------------------------------

    def set_policy(
        self,
        name: str,
        alias: str,
        variants: Mapping[int, float] | Iterable[Mapping[str, Any]],
        *,
        sticky: Mapping[str, str] | None = None,
        shadows: Mapping[int, float] | Iterable[Mapping[str, Any]] = (),
        reason: str = "",
        expected_revision: int | None = None,
    ) -> dict[str, Any]:
        """Route the alias's traffic: `variants` as {version: weight} (the alias's version
        among them), `sticky` as {"header": ...} or {"field": ...}, `shadows` as
        {version: sample rate}. Every version is checked like a promotion first."""
        body: dict[str, Any] = {
            "variants": _pairs(variants, "weight"),
            "sticky": dict(sticky) if sticky else None,
            "shadows": _pairs(shadows, "sample"),
            "reason": reason,
        }
        if expected_revision is not None:
            body["expected_revision"] = expected_revision
        return self._json("PUT", f"/models/{_q(name)}/aliases/{_q(alias)}/policy", json=body)

    def get_policy(self, name: str, alias: str = "production") -> dict[str, Any]:
        return self._json("GET", f"/models/{_q(name)}/aliases/{_q(alias)}/policy")

    def clear_policy(
        self,
        name: str,
        alias: str = "production",
        reason: str = "",
        expected_revision: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason}
        if expected_revision is not None:
            body["expected_revision"] = expected_revision
        return self._json("DELETE", f"/models/{_q(name)}/aliases/{_q(alias)}/policy", json=body)

    def policy_stats(self, name: str, alias: str = "production") -> dict[str, Any]:
        """Per-variant and per-shadow counters of the process that answers."""
        return self._json("GET", f"/models/{_q(name)}/aliases/{_q(alias)}/policy/stats")

    # -- monitoring (docs/monitoring.md) ------------------------------------------------

    def set_reference(
        self, name: str, ref: str | int, X: Any, y: Any = None, *, target: str | None = None
    ) -> dict[str, Any]:
        """Profile `X` (and the version's predictions on it; with `y`, the reference
        metric) as the reference of version `ref`, replacing any earlier one. `target`
        names y's column (default: y's name, else "target")."""
        body, target = _reference_json(X, y, target)
        return self._json(
            "PUT",
            f"/models/{_q(name)}/versions/{_q(ref)}/reference",
            params={"target": target},
            data=body,
            content_type="application/json",
        )

    def profile(self, name: str, ref: str | int = "latest") -> dict[str, Any]:
        return self._json("GET", f"/models/{_q(name)}/versions/{_q(ref)}/profile")

    def monitoring(
        self,
        name: str,
        ref: str | int = "production",
        *,
        since: str | float | None = None,
        window: int | None = None,
    ) -> dict[str, Any]:
        """Per window: drift and data quality per feature, prediction drift, refused
        inputs, live metrics; and the alert states. `since`: ISO time or epoch seconds."""
        return self._json(
            "GET",
            f"/models/{_q(name)}/versions/{_q(ref)}/monitoring",
            params={"since": since, "window": window},
        )

    def feedback(self, name: str, labels: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Post ground truth: `[{"request_id", "row", "label"}, ...]`."""
        return self._json(
            "POST", f"/models/{_q(name)}/feedback", json={"labels": [dict(x) for x in labels]}
        )

    def get_monitor(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/models/{_q(name)}/monitor")

    def set_monitor(
        self,
        name: str,
        *,
        thresholds: Mapping[str, float] | None = None,
        fire_after: int | None = None,
        resolve_after: int | None = None,
        on_alert: str | None = None,
        alias: str | None = None,
        payload_sample: float | None = None,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> dict[str, Any]:
        """Replace the model's monitor; unset settings take their defaults."""
        body: dict[str, Any] = {"reason": reason}
        options = {
            "thresholds": dict(thresholds) if thresholds is not None else None,
            "fire_after": fire_after,
            "resolve_after": resolve_after,
            "on_alert": on_alert,
            "alias": alias,
            "payload_sample": payload_sample,
            "expected_revision": expected_revision,
        }
        body.update({k: v for k, v in options.items() if v is not None})
        return self._json("PUT", f"/models/{_q(name)}/monitor", json=body)

    def load_model(
        self,
        name: str,
        ref: str | int = "latest",
        *,
        trusted_classes: Iterable[str] = (),
        allow_pickle: bool = True,
    ) -> Any:
        """Download a version, verify its sha256 and load it with the server's safe loader.

        skops and joblib files are judged against the same allowlist of model classes the
        server uses (plus `trusted_classes`, exact class names, like TRUSTED_MODEL_CLASSES):
        nothing outside it is imported or run, and joblib is never handed to plain pickle
        (`allow_pickle=False` refuses it outright). ONNX comes back as the server's adapter
        with predict/predict_proba. Raises IntegrityError if the bytes do not match, and
        `registry.errors.InvalidInput` if the artifact is refused.
        """
        # The serving stack is imported only here: the rest of the client stays light.
        from registry.errors import InvalidInput
        from serving.formats import deserialize
        from serving.safeload import TrustPolicy

        record = self.get_version(name, ref)
        if record["format"] == "joblib" and not allow_pickle:
            raise InvalidInput(
                f"version {record['version']} of {name!r} is a pickle (joblib), and "
                "allow_pickle=False",
                {"format": "joblib is refused (allow_pickle=False)"},
            )
        data = self.download(name, record["version"])
        actual = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(actual, str(record["sha256"]).lower()):
            raise IntegrityError(
                0,
                "Artifact integrity check failed",
                f"the artifact hashes to {actual}, the version record says {record['sha256']}",
                {"sha256": f"expected {record['sha256']}, got {actual}"},
            )
        trust = TrustPolicy(allow_pickle=allow_pickle, extra_classes=frozenset(trusted_classes))
        return deserialize(io.BytesIO(data), record["format"], trust=trust)

    # ---- tokens (admin) ------------------------------------------------------------------

    def create_token(
        self,
        name: str,
        role: str,
        models: Iterable[str] | None = None,
        expires_in_days: float | None = None,
    ) -> dict[str, Any]:
        """A new token; the answer's `token` is its secret, shown only this once."""
        body = {
            "name": name,
            "role": role,
            "models": list(models) if models else None,
            "expires_in_days": expires_in_days,
        }
        return self._json("POST", "/tokens", json=body)

    def list_tokens(self) -> list[dict[str, Any]]:
        """Every token within this token's reach (never their secrets)."""
        return self._collect("/tokens", "tokens", {}, page_size=None)

    def revoke_token(self, name: str) -> dict[str, Any]:
        """Revoke a token: every server refuses it within ALIAS_REFRESH_SECONDS."""
        return self._json("DELETE", f"/tokens/{_q(name)}")

    # ---- webhooks (admin) ------------------------------------------------------------

    def create_webhook(
        self,
        url: str,
        events: Iterable[str] = ("*",),
        models: Iterable[str] | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """Subscribe `url` to registry events; the answer's `secret` (whsec_...) signs every
        delivery and is shown only this once."""
        body = {
            "url": url,
            "events": list(events),
            "models": list(models) if models is not None else None,
            "description": description,
        }
        return self._json("POST", "/webhooks", json=body)

    def list_webhooks(self) -> list[dict[str, Any]]:
        return self._collect("/webhooks", "webhooks", {}, page_size=None)

    def get_webhook(self, webhook_id: int) -> dict[str, Any]:
        return self._json("GET", f"/webhooks/{int(webhook_id)}")

    def update_webhook(self, webhook_id: int, **changes: Any) -> dict[str, Any]:
        """Change url, events, models, description or enabled."""
        return self._json("PATCH", f"/webhooks/{int(webhook_id)}", json=changes)

    def rotate_webhook_secret(self, webhook_id: int) -> dict[str, Any]:
        """A new secret (in `secret`); the old one also signs during the grace period."""
        return self._json("POST", f"/webhooks/{int(webhook_id)}/rotate-secret")

    def delete_webhook(self, webhook_id: int) -> None:
        self._request("DELETE", f"/webhooks/{int(webhook_id)}").close()

    def test_webhook(self, webhook_id: int) -> dict[str, Any]:
        """Send a `webhook.test` event now; the delivery comes back with its attempt."""
        return self._json("POST", f"/webhooks/{int(webhook_id)}/test")

    def webhook_deliveries(
        self, webhook_id: int, status: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Deliveries newest first (`status`: pending, delivered or failed)."""
        return self._collect(
            f"/webhooks/{int(webhook_id)}/deliveries",
            "deliveries",
            {"status": status},
            page_size=None if limit is None else min(limit, 500),
            max_items=limit,
        )

    def webhook_delivery(self, webhook_id: int, delivery_id: int) -> dict[str, Any]:
        """One delivery with its payload and attempt log."""
        return self._json("GET", f"/webhooks/{int(webhook_id)}/deliveries/{int(delivery_id)}")

    def retry_webhook_delivery(self, webhook_id: int, delivery_id: int) -> dict[str, Any]:
        return self._json(
            "POST", f"/webhooks/{int(webhook_id)}/deliveries/{int(delivery_id)}/retry"
        )

    def health(self) -> dict[str, Any]:
        """Liveness: the process answers."""
        return self._json("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        """Readiness with per-dependency checks; a 503 body is returned, not raised."""
        response = self._request("GET", "/readyz", accept=(503,))
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise ApiError.from_response(response)
        return body


# ---- artifacts ----------------------------------------------------------------------------


def _open_artifact(
    source: Any, fmt: str | None, stack: contextlib.ExitStack
) -> tuple[IO[bytes], int, str, str]:
    """(open file, bytes left to read, file name, format) for anything `register` takes."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_dir():  # an MLflow model directory (mlflow.sklearn.save_model)
            return _zip_directory(path, stack)
        if fmt is None and path.name.lower().endswith(MLFLOW_ARCHIVES):
            fmt = "mlflow"
        fmt = fmt or EXTENSION_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(
                f"cannot tell the format of {path.name!r} from its extension; "
                "pass format='joblib', 'skops', 'onnx', 'xgboost' or 'lightgbm'"
            )
        file = stack.enter_context(path.open("rb"))
        return file, os.fstat(file.fileno()).st_size, path.name, fmt
    if isinstance(source, bytes | bytearray | memoryview):
        if fmt is None:
            raise ValueError("format is required when registering raw bytes")
        data = bytes(source)
        return io.BytesIO(data), len(data), f"model.{FILE_EXTENSIONS.get(fmt, 'bin')}", fmt
    if hasattr(source, "read"):
        filename = str(getattr(source, "name", "") or "")
        fmt = fmt or EXTENSION_FORMATS.get(Path(filename).suffix.lower())
        if fmt is None:
            raise ValueError("format is required when registering a file object")
        file, size = _sized(source, stack)
        return file, size, filename or f"model.{FILE_EXTENSIONS.get(fmt, 'bin')}", fmt
    return _serialize(source, fmt or native_format(source) or "skops", stack)


def _zip_directory(path: Path, stack: contextlib.ExitStack) -> tuple[IO[bytes], int, str, str]:
    """A model directory as a zip in a temporary file; the server reads its MLmodel."""
    import zipfile

    if not (path / "MLmodel").is_file():
        raise ValueError(f"{path} is a directory without an MLmodel file (not an MLflow model)")
    spool = stack.enter_context(tempfile.TemporaryFile(prefix="modelreg-"))  # noqa: SIM115
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(path.rglob("*")):
            if file.is_file() and not file.is_symlink():
                archive.write(file, file.relative_to(path).as_posix())
    size = spool.seek(0, os.SEEK_END)
    spool.seek(0)
    return spool, size, f"{path.name or 'model'}.zip", "mlflow"


def _sized(file: IO[bytes], stack: contextlib.ExitStack) -> tuple[IO[bytes], int]:
    """The file and the bytes left in it; an unseekable stream is spooled to disk first."""
    try:
        start = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(start)
        return file, end - start
    except (OSError, AttributeError, ValueError):
        spool = stack.enter_context(tempfile.TemporaryFile(prefix="modelreg-"))  # noqa: SIM115
        shutil.copyfileobj(file, spool, CHUNK_SIZE)
        size = spool.tell()
        spool.seek(0)
        return spool, size


def _serialize(
    estimator: Any, fmt: str, stack: contextlib.ExitStack
) -> tuple[IO[bytes], int, str, str]:
    """Write a fitted estimator to a temporary file in `fmt`."""
    spool = stack.enter_context(tempfile.TemporaryFile(prefix="modelreg-"))  # noqa: SIM115
    if fmt == "skops":
        import skops.io

        skops.io.dump(estimator, spool)
    elif fmt == "joblib":
        import joblib

        joblib.dump(estimator, spool)
    elif fmt == "onnx" and hasattr(estimator, "SerializeToString"):  # an onnx ModelProto
        spool.write(estimator.SerializeToString())
    elif fmt in ("xgboost", "lightgbm") and native_format(estimator) == fmt:
        spool.write(native_bytes(estimator, fmt))
    else:
        raise ValueError(
            f"cannot serialize a {type(estimator).__name__} as {fmt!r}: use 'skops' or "
            "'joblib', or convert it to ONNX first (e.g. with skl2onnx) and pass the file"
        )
    size = spool.seek(0, os.SEEK_END)
    spool.seek(0)
    return spool, size, f"model.{FILE_EXTENSIONS[fmt]}", fmt


def _download_name(response: requests.Response, name: str, ref: str | int) -> str:
    """The file name the server suggests (Content-Disposition), made safe."""
    disposition = response.headers.get("Content-Disposition", "")
    match = re.search(r'filename="?([^";]+)"?', disposition)
    if match:
        return _safe_filename(match.group(1))
    return _safe_filename(f"{name}-{ref}.bin")
