"""Cross-origin requests from browsers (a dashboard on another origin calling the API).

Off unless CORS_ALLOWED_ORIGINS names origins (comma-separated, or `*`). An allowed origin's
answers carry `Access-Control-Allow-Origin` and expose the model headers; its preflight
(`OPTIONS` with `Access-Control-Request-Method`) is answered 204 before authentication, as
browsers send preflights without credentials. Tokens travel in `Authorization`, never in
cookies, so credentials mode is not offered.
"""

from __future__ import annotations

from dataclasses import dataclass

ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
ALLOWED_HEADERS = (
    "Authorization, Content-Type, Content-Encoding, X-Request-ID, X-Unit-Id, "
    "Inference-Header-Content-Length"
)
EXPOSED_HEADERS = (
    "X-Model-Version, X-Model-Runtime, X-Model-Stale, X-Request-ID, Warning, "
    "Inference-Header-Content-Length, Retry-After"
)
MAX_AGE_SECONDS = "600"


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: frozenset[str]

    @classmethod
    def from_setting(cls, setting: str) -> CorsPolicy:
        return cls(frozenset(o.strip().rstrip("/") for o in setting.split(",") if o.strip()))

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    def allows(self, origin: str) -> bool:
        return bool(origin) and ("*" in self.origins or origin in self.origins)

    def answer_headers(self, origin: str) -> list[tuple[str, str]]:
        """Headers of any answer to `origin` (none when it is not allowed)."""
        if not self.allows(origin):
            return [("Vary", "Origin")] if self.origins else []
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Expose-Headers", EXPOSED_HEADERS),
            ("Vary", "Origin"),
        ]

    def preflight_headers(self, origin: str) -> list[tuple[str, str]] | None:
        """A preflight's extra headers, or None when this origin gets no preflight answer."""
        if not self.allows(origin):
            return None
        return [
            ("Access-Control-Allow-Methods", ALLOWED_METHODS),
            ("Access-Control-Allow-Headers", ALLOWED_HEADERS),
            ("Access-Control-Max-Age", MAX_AGE_SECONDS),
        ]
