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

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
from registry.models import ApiToken, TokenEpoch
from registry.names import is_model_name
from registry.pagination import Page, cut_page
from registry.records import PageOf
from registry.unit_of_work import UnitOfWorkFactory

ROLES = ("reader", "publisher", "operator", "admin")
TOKEN_PREFIX = "mr_"
TOKEN_NAME_MAX = 128
EPOCH_ROW = 1
# After the database fails to answer, cached identities are served without asking it again
# for this long (as the resolver does for aliases), so an outage adds no timeout per request.
OUTAGE_BACKOFF_SECONDS = 1.0
# How long a request waits for an epoch check another request started before answering from
# what is cached, so that a slow database never takes every request thread.
FOLLOWER_WAIT_SECONDS = 0.05


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
            _announce(work.session, "token.created", record, actor)
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
    if page is None:
        return PageOf(rows, None)
    items, cursor = cut_page(rows, page, lambda record: record.name)
    return PageOf(items, cursor)


def revoke_token(uow: UnitOfWorkFactory, name: str, *, by: Identity | None = None) -> TokenRecord:
    """Revoke a token; every process refuses it within ALIAS_REFRESH_SECONDS (the epoch
    advances in the same transaction). `by` may revoke only tokens within its reach; the
    others answer as if they did not exist, so that their names do not leak."""
    with uow(write=True) as work:
        row = work.session.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none()
        if row is None or (by is not None and not within_reach(by, row.role, row.models)):
            if by is not None and not _reaches_everything(by):
                raise NotFound(f"no token named '{name}' within the reach of token '{by.name}'")
            raise NotFound(f"no token named '{name}'")
        record = TokenRecord.from_row(row)
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            advance_epoch(work.session)
            record = TokenRecord.from_row(row)
            _announce(work.session, "token.revoked", record, by.name if by else "command line")
        work.commit()
    return record


def _announce(session: Session, event_type: str, record: TokenRecord, actor: str) -> None:
    """A token event for the webhooks that name it (never its secret or hash)."""
    from registry.webhooks.outbox import enqueue

    enqueue(
        session,
        event_type,
        {
            "token": record.name,
            "role": record.role,
            "models": record.models,
            "prefix": record.prefix,
            "expires_at": record.expires_at,
            "actor": actor,
        },
        at=utcnow(),
        model=None,
    )


def advance_epoch(session: Session) -> None:
    """Tell every process that some cached token may no longer be valid."""
    moved = session.execute(
        update(TokenEpoch).where(TokenEpoch.id == EPOCH_ROW).values(value=TokenEpoch.value + 1)
    )
    if moved.rowcount == 0:  # a schema made without the migration's row
        session.add(TokenEpoch(id=EPOCH_ROW, value=1))
        session.flush()


def read_epoch(session: Session) -> int:
    value = session.scalar(select(TokenEpoch.value).where(TokenEpoch.id == EPOCH_ROW))
    return value or 0


def count_tokens(uow: UnitOfWorkFactory) -> int:
    with uow() as work:
        return len(work.session.scalars(select(ApiToken.id)).all())


@dataclass(frozen=True, slots=True)
class _Verified:
    identity: Identity
    at: float  # when it was read from the database (clock seconds)
    epoch: int  # the token epoch read just before it


class Authenticator:
    """Turns a bearer secret into an Identity, with a bounded in-process cache.

    - Verified tokens stay in an LRU of `max_entries` for up to `cache_seconds`, so that
      predict needs no database round trip per request.
    - Unknown and revoked tokens are remembered apart, in an LRU of `max_unknown`: a client
      repeating a bad token costs one query per `cache_seconds`, and no number of distinct
      bad tokens can push a verified one out.
    - A revocation (over HTTP or from the command line, in any process) advances the token
      epoch in the database. It is read at most every `refresh_seconds` (the alias staleness
      bound); when it has moved, a cached identity is checked again before its next use, so
      a revoked token stops working everywhere within that bound (at once in the process
      that revoked it).
    - An expiry is checked at every use, against the wall clock.
    - While the database is down, identities already verified keep working until their own
      expiry, so an outage does not lock out the services that call predict.
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        cache_seconds: float,
        refresh_seconds: float = 1.0,
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
        self._refresh = refresh_seconds
        self._clock = clock
        self._max = max_entries
        self._max_unknown = max_unknown
        self._lock = threading.Lock()
        self._known: OrderedDict[str, _Verified] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._epoch = -1  # no epoch read yet: nothing cached is current
        self._epoch_at = float("-inf")
        self._unavailable_until = float("-inf")

    def authenticate(self, secret: str) -> Identity:
        return self.authenticate_digest(hash_token(secret))

    def authenticate_digest(self, digest: str) -> Identity:
        """`authenticate` for a caller that kept only the token's sha256 (a web UI session):
        the same cache, epoch check and revocation bound."""
        now = self._clock()
        entry = self._known.get(digest)
        if entry is not None:
            if now < self._unavailable_until or self._current(entry, now):
                return self._use(digest, entry)
            if now - entry.at < self._ttl and entry.epoch == self._epoch:
                # Only the epoch is due: one small query, shared by every cached token.
                epoch = self._refresh_epoch(now)
                if epoch is None or epoch == entry.epoch:  # unchanged, or cannot tell now
                    return self._use(digest, entry)
        else:
            seen = self._unknown.get(digest)
            if seen is not None and now - seen < self._ttl:
                raise Unauthenticated("the token is not valid (unknown or revoked)")
        try:
            identity, epoch = self._lookups.call(
                ("token", digest), lambda: self._lookup(digest), self._timeout
            )
        except DependencyUnavailable:
            self._unavailable_until = self._clock() + OUTAGE_BACKOFF_SECONDS
            if entry is None:
                raise
            return self._use(digest, entry)
        with self._lock:
            self._saw_epoch(epoch, now)
            if identity is None:
                self._known.pop(digest, None)
                self._unknown[digest] = now
                self._unknown.move_to_end(digest)
                while len(self._unknown) > self._max_unknown:
                    self._unknown.popitem(last=False)
            else:
                self._unknown.pop(digest, None)
                self._known[digest] = entry = _Verified(identity, now, epoch)
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
        if entry is None:
            return None
        now = self._clock()
        if not (now < self._unavailable_until or self._current(entry, now)):
            return None
        identity = entry.identity
        if identity.expires_at is not None and identity.expires_at <= utcnow():
            return None
        self._touch(digest)
        return identity

    def forget_all(self) -> None:
        """The process that revoked a token: check every token again before its next use."""
        with self._lock:
            self._known.clear()
            self._unknown.clear()
            self._epoch_at = float("-inf")

    def _current(self, entry: _Verified, now: float) -> bool:
        return (
            now - entry.at < self._ttl
            and now - self._epoch_at < self._refresh
            and entry.epoch == self._epoch
        )

    def _refresh_epoch(self, now: float) -> int | None:
        """The token epoch from the database, or None when it cannot be read right now."""
        key = ("token-epoch",)
        joining = self._lookups.in_flight(key)
        try:
            epoch = self._lookups.call(
                key, self._read_epoch, FOLLOWER_WAIT_SECONDS if joining else self._timeout
            )
        except DependencyUnavailable:
            if not joining:
                self._unavailable_until = self._clock() + OUTAGE_BACKOFF_SECONDS
            return None
        with self._lock:
            self._saw_epoch(epoch, now)
        return self._epoch

    def _saw_epoch(self, epoch: int, read_at: float) -> None:
        """Under the lock: the epoch read by a query that started at `read_at`."""
        if epoch >= self._epoch:  # answers may arrive out of order; the epoch only grows
            self._epoch = epoch
            self._epoch_at = max(self._epoch_at, read_at)

    def _use(self, digest: str, entry: _Verified) -> Identity:
        self._touch(digest)
        return self._check(entry.identity)

    def _touch(self, digest: str) -> None:
        with self._lock:
            if digest in self._known:
                self._known.move_to_end(digest)

    def _read_epoch(self) -> int:
        with self._uow() as work:
            return read_epoch(work.session)

    def _lookup(self, digest: str) -> tuple[Identity | None, int]:
        with self._uow() as work:
            # The epoch first: a revocation committed after this read advances it past the
            # value stored with the identity, so that identity is checked again in time.
            epoch = read_epoch(work.session)
            row = work.session.scalars(
                select(ApiToken).where(ApiToken.token_hash == digest)
            ).one_or_none()
            if row is None or not hmac.compare_digest(row.token_hash, digest):
                return None, epoch
            if row.revoked_at is not None:
                return None, epoch
            models = frozenset(row.models) if row.models else None
            return Identity(row.name, row.role, models, row.expires_at), epoch

    @staticmethod
    def _check(identity: Identity) -> Identity:
        if identity.expires_at is not None and identity.expires_at <= utcnow():
            raise Unauthenticated("the token has expired")
        return identity
