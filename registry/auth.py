"""Bearer tokens and roles.

Tokens are 256-bit random secrets shown once; the database keeps only their sha256 (a fast
hash is right for high-entropy secrets: there is nothing to brute-force). Each role includes
the ones before it: reader < publisher < operator < admin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from registry.bounded import BoundedLookups
from registry.db import utcnow
from registry.errors import (
    AlreadyExists,
    DependencyUnavailable,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
)
from registry.models import ApiToken
from registry.names import is_model_name
from registry.pagination import Page, encode_cursor
from registry.records import PageOf
from registry.unit_of_work import UnitOfWorkFactory

ROLES = ("reader", "publisher", "operator", "admin")
TOKEN_PREFIX = "mr_"
TOKEN_NAME_MAX = 128


def role_rank(role: str) -> int:
    return ROLES.index(role)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: the token's name (the audit trail's actor), its role and model scope."""

    name: str
    role: str
    models: frozenset[str] | None = None
    expires_at: datetime | None = None

    def has_role(self, role: str) -> bool:
        return role_rank(self.role) >= role_rank(role)

    def may_use_model(self, name: str) -> bool:
        return self.models is None or name in self.models


@dataclass(frozen=True, slots=True)
class TokenRecord:
    name: str
    role: str
    prefix: str
    models: list[str] | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: ApiToken) -> TokenRecord:
        return cls(
            row.name,
            row.role,
            row.prefix,
            row.models,
            row.created_at,
            row.created_by,
            row.expires_at,
            row.revoked_at,
        )


def _validate(
    name: str, role: str, models: Sequence[str] | None, expires_in: timedelta | None
) -> None:
    errors: dict[str, str] = {}
    if not name or len(name) > TOKEN_NAME_MAX or not name.isprintable() or name != name.strip():
        errors["name"] = f"1 to {TOKEN_NAME_MAX} printable characters"
    if role not in ROLES:
        errors["role"] = f"one of {', '.join(ROLES)}"
    if models is not None and (not models or not all(is_model_name(m) for m in models)):
        errors["models"] = "a non-empty list of model names"
    if expires_in is not None and expires_in <= timedelta(0):
        errors["expires_in_days"] = "must be positive"
    if errors:
        raise InvalidInput("invalid token request", errors)


def grant_problems(
    issuer: Identity,
    *,
    role: str,
    models: Sequence[str] | None,
    expires_at: datetime | None,
) -> dict[str, str]:
    """What a token `issuer` may not grant, by field: a token never grants more than it has
    (a role no higher, models among its own, an expiry no later than its own)."""
    problems: dict[str, str] = {}
    if role_rank(role) > role_rank(issuer.role):
        problems["role"] = f"at most {issuer.role}, the role of token '{issuer.name}'"
    if issuer.models is not None and (models is None or not set(models) <= issuer.models):
        problems["models"] = "required, and only among " + ", ".join(sorted(issuer.models))
    if issuer.expires_at is not None and (expires_at is None or expires_at > issuer.expires_at):
        problems["expires_in_days"] = (
            f"required, expiring no later than {issuer.expires_at.isoformat()}"
        )
    return problems


def within_reach(issuer: Identity, role: str, models: Sequence[str] | None) -> bool:
    """Whether `issuer` may see or revoke a token with this role and scope: one it could
    have granted itself, expiry aside (revoking never widens anything)."""
    if role_rank(role) > role_rank(issuer.role):
        return False
    return issuer.models is None or (models is not None and set(models) <= issuer.models)


def _reaches_everything(identity: Identity) -> bool:
    return identity.models is None and identity.role == ROLES[-1]


def create_token(
    uow: UnitOfWorkFactory,
    *,
    name: str,
    role: str,
    actor: str,
    models: Sequence[str] | None = None,
    expires_in: timedelta | None = None,
    issuer: Identity | None = None,
) -> tuple[str, TokenRecord]:
    """Make a token; the secret is returned here and never again. `issuer` is the token
    asking for it (None: the local command line, which holds every right)."""
    _validate(name, role, models, expires_in)
    now = utcnow()
    expires_at = now + expires_in if expires_in else None
    if issuer is not None:
        problems = grant_problems(issuer, role=role, models=models, expires_at=expires_at)
        if problems:
            raise Forbidden(f"token '{issuer.name}' cannot grant more than it has", problems)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        token_hash=hash_token(secret),
        prefix=secret[:10],
        role=role,
        models=sorted(set(models)) if models else None,
        created_at=now,
        created_by=actor,
        expires_at=expires_at,
    )
    try:
        with uow(write=True) as work:
            if work.session.scalars(select(ApiToken.id).where(ApiToken.name == name)).first():
                raise AlreadyExists(f"a token named '{name}' already exists")
            work.session.add(row)
            work.session.flush()
            record = TokenRecord.from_row(row)
            work.commit()
    except IntegrityError:
        raise AlreadyExists(f"a token named '{name}' already exists") from None
    return secret, record


def list_tokens(
    uow: UnitOfWorkFactory, page: Page | None = None, *, viewer: Identity | None = None
) -> PageOf:
    """Tokens by name (never their secrets); every token when no page is given. A `viewer`
    sees only the tokens within its reach."""
    query = select(ApiToken).order_by(ApiToken.name)
    if page is not None and page.after is not None:
        query = query.where(ApiToken.name > page.after)
    reach = None if viewer is None or _reaches_everything(viewer) else viewer
    if page is not None and reach is None:
        query = query.limit(page.limit + 1)
    with uow() as work:
        rows = [TokenRecord.from_row(row) for row in work.session.scalars(query)]
    if reach is not None:  # scopes are JSON lists: filtered here (tokens are few)
        rows = [r for r in rows if within_reach(reach, r.role, r.models)]
    if page is None or len(rows) <= page.limit:
        return PageOf(rows, None)
    return PageOf(rows[: page.limit], encode_cursor(rows[page.limit - 1].name))


def revoke_token(uow: UnitOfWorkFactory, name: str, *, by: Identity | None = None) -> TokenRecord:
    """Revoke a token. `by` may revoke only tokens within its reach; the others answer as
    if they did not exist, so that their names do not leak."""
    with uow(write=True) as work:
        row = work.session.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none()
        if row is None or (by is not None and not within_reach(by, row.role, row.models)):
            if by is not None and not _reaches_everything(by):
                raise NotFound(f"no token named '{name}' within the reach of token '{by.name}'")
            raise NotFound(f"no token named '{name}'")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        record = TokenRecord.from_row(row)
        work.commit()
    return record


def count_tokens(uow: UnitOfWorkFactory) -> int:
    with uow() as work:
        return len(work.session.scalars(select(ApiToken.id)).all())


@dataclass(frozen=True, slots=True)
class _Verified:
    identity: Identity
    at: float  # when it was read from the database (clock seconds)


class Authenticator:
    """Turns a bearer secret into an Identity, with a bounded in-process cache.

    - Verified tokens stay in an LRU of `max_entries` for up to `cache_seconds`, so that
      predict needs no database round trip per request. A revocation takes effect within
      `cache_seconds` everywhere (at once in the process that revoked).
    - Unknown and revoked tokens are remembered apart, in an LRU of `max_unknown`: a client
      repeating a bad token costs one query per `cache_seconds`, and no number of distinct
      bad tokens can push a verified one out.
    - While the database is down, identities already verified keep working until their own
      expiry, so an outage does not lock out the services that call predict.
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
        max_unknown: int = 1_024,
        lookups: BoundedLookups | None = None,
        lookup_timeout: float = 2.0,
    ) -> None:
        self._uow = uow
        self._lookups = lookups or BoundedLookups(name="token-lookup")
        self._timeout = lookup_timeout
        self._ttl = cache_seconds
        self._clock = clock
        self._max = max_entries
        self._max_unknown = max_unknown
        self._lock = threading.Lock()
        self._known: OrderedDict[str, _Verified] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()

    def authenticate(self, secret: str) -> Identity:
        digest = hash_token(secret)
        now = self._clock()
        entry = self._known.get(digest)
        if entry is not None:
            if now - entry.at < self._ttl:
                return self._use(digest, entry)
        else:
            seen = self._unknown.get(digest)
            if seen is not None and now - seen < self._ttl:
                raise Unauthenticated("the token is not valid (unknown or revoked)")
        try:
            identity = self._lookups.call(
                ("token", digest), lambda: self._lookup(digest), self._timeout
            )
        except DependencyUnavailable:
            if entry is None:
                raise
            return self._use(digest, entry)
        with self._lock:
            if identity is None:
                self._known.pop(digest, None)
                self._unknown[digest] = now
                self._unknown.move_to_end(digest)
                while len(self._unknown) > self._max_unknown:
                    self._unknown.popitem(last=False)
            else:
                self._unknown.pop(digest, None)
                self._known[digest] = entry = _Verified(identity, now)
                self._known.move_to_end(digest)
                while len(self._known) > self._max:
                    self._known.popitem(last=False)
        if identity is None:
            raise Unauthenticated("the token is not valid (unknown or revoked)")
        return self._use(digest, entry)

    def cached(self, secret: str) -> Identity | None:
        """The identity behind `secret` if `authenticate` would answer it from memory without
        asking the database, and it is valid now; None when only a database lookup (or an
        error answer) could tell."""
        digest = hash_token(secret)
        entry = self._known.get(digest)
        if entry is None or self._clock() - entry.at >= self._ttl:
            return None
        identity = entry.identity
        if identity.expires_at is not None and identity.expires_at <= utcnow():
            return None
        self._touch(digest)
        return identity

    def forget_all(self) -> None:
        with self._lock:
            self._known.clear()
            self._unknown.clear()

    def _use(self, digest: str, entry: _Verified) -> Identity:
        self._touch(digest)
        return self._check(entry.identity)

    def _touch(self, digest: str) -> None:
        with self._lock:
            if digest in self._known:
                self._known.move_to_end(digest)

    def _lookup(self, digest: str) -> Identity | None:
        with self._uow() as work:
            row = work.session.scalars(
                select(ApiToken).where(ApiToken.token_hash == digest)
            ).one_or_none()
            if row is None or not hmac.compare_digest(row.token_hash, digest):
                return None
            if row.revoked_at is not None:
                return None
            models = frozenset(row.models) if row.models else None
            return Identity(row.name, row.role, models, row.expires_at)

    @staticmethod
    def _check(identity: Identity) -> Identity:
        if identity.expires_at is not None and identity.expires_at <= utcnow():
            raise Unauthenticated("the token has expired")
        return identity
