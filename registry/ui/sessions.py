"""Server-side sessions of the web UI: a random id in the cookie, digests in the database.

A session keeps the sha256 of the token it was opened with (never the secret), so every page
checks that token again through `Authenticator.authenticate_digest`, the API's cached path:
a revoked token ends its sessions within the same bound as its API calls. Signing out deletes
the row, so a copied cookie is worthless afterwards in every process.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from registry.db import utcnow
from registry.models import UiSession
from registry.unit_of_work import UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class SessionRecord:
    token_hash: str | None  # None when authentication is disabled
    csrf_token: str
    expires_at: datetime


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


class SessionStore:
    """Open, find and end UI sessions; one short transaction each."""

    def __init__(self, uow: UnitOfWorkFactory, lifetime_seconds: float) -> None:
        self._uow = uow
        self._lifetime = timedelta(seconds=lifetime_seconds)

    def open(self, token_hash: str | None) -> tuple[str, SessionRecord]:
        """A new session; returns the id for the cookie (shown only here) and its record."""
        session_id = secrets.token_urlsafe(32)
        now = utcnow()
        record = SessionRecord(token_hash, secrets.token_urlsafe(32), now + self._lifetime)
        with self._uow(write=True) as work:
            # Expired rows go when someone signs in: no sweeper thread needed.
            work.session.execute(delete(UiSession).where(UiSession.expires_at <= now))
            work.session.add(
                UiSession(
                    id_hash=_digest(session_id),
                    token_hash=token_hash,
                    csrf_token=record.csrf_token,
                    created_at=now,
                    expires_at=record.expires_at,
                )
            )
            work.commit()
        return session_id, record

    def find(self, session_id: str) -> SessionRecord | None:
        """The live session behind a cookie value, or None (unknown, ended or expired)."""
        if not session_id or len(session_id) > 128:
            return None
        with self._uow() as work:
            row = work.session.scalars(
                select(UiSession).where(UiSession.id_hash == _digest(session_id))
            ).one_or_none()
            if row is None or row.expires_at <= utcnow():
                return None
            return SessionRecord(row.token_hash, row.csrf_token, row.expires_at)

    def end(self, session_id: str) -> None:
        with self._uow(write=True) as work:
            work.session.execute(delete(UiSession).where(UiSession.id_hash == _digest(session_id)))
            work.commit()
