"""The request id of the inference being observed, for the payload log.

Set by whoever starts a request (the fast path, Flask's before-request hook); read only when
a request is sampled into the payload log. A context variable costs a few tens of
nanoseconds to set and is private to the thread (or loop callback) running the request.
"""

from __future__ import annotations

from contextvars import ContextVar

CURRENT_REQUEST_ID: ContextVar[str] = ContextVar("modelreg_request_id", default="")
