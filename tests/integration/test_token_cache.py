"""The verified-token cache: bounded, least recently used first, never flushed by unknown
tokens (remembered apart), and checked again when the token epoch moves. Real SQLite and
PostgreSQL; the statements sent to the database (an engine event) tell whether an answer came
from memory."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event

from registry import auth
from registry.errors import Unauthenticated
from tests.conftest import make_config

FLOOD = 20_000


@pytest.fixture
def app(tmp_path, database_url):
    from manage import create_app

    # Long enough bounds that nothing here expires while the test runs.
    application = create_app(
        make_config(
            tmp_path,
            database_url,
            AUTH_DISABLED=False,
            AUTH_CACHE_SECONDS=3600.0,
            ALIAS_REFRESH_SECONDS=3600.0,
        )
    )
    yield application
    application.extensions["modelreg"].engine.dispose()


class Statements:
    """Statements the app sends to its database: `count` those on the token table, `epochs`
    those on the token epoch."""

    def __init__(self) -> None:
        self.count = 0
        self.epochs = 0

    def __call__(self, _conn, _cursor, statement: str, *_args) -> None:
        self.count += "api_tokens" in statement
        self.epochs += "token_epoch" in statement


@contextlib.contextmanager
def token_queries(app) -> Iterator[Statements]:
    engine = app.extensions["modelreg"].engine
    seen = Statements()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def _random_secret() -> str:
    return auth.TOKEN_PREFIX + secrets.token_urlsafe(32)


@pytest.fixture
def sqlite_app(tmp_path):
    """The flood's 20,000 lookups take a while on any backend, and the bound under test is
    the cache's own: SQLite only (the other tests here run on both). The lookup deadline is
    long because four threads hammering SQLite on a loaded machine can take more than the
    default 2 s for one lookup, and that deadline is not what this test is about."""
    from manage import create_app

    application = create_app(
        make_config(
            tmp_path,
            AUTH_DISABLED=False,
            AUTH_CACHE_SECONDS=3600.0,
            ALIAS_REFRESH_SECONDS=3600.0,
            REGISTRY_LOOKUP_TIMEOUT=60.0,
        )
    )
    yield application
    application.extensions["modelreg"].engine.dispose()


def test_a_flood_of_unknown_tokens_never_pushes_a_verified_token_out(sqlite_app):
    app = sqlite_app
    services = app.extensions["modelreg"]
    authenticator = services.authenticator
    secret, _ = auth.create_token(services.uow, name="svc", role="reader", actor="test")
    assert authenticator.authenticate(secret).name == "svc"

    def knock(_: int) -> bool:
        try:
            authenticator.authenticate(_random_secret())
        except Unauthenticated:
            return True
        return False

    started = time.monotonic()
    with token_queries(app) as flood, ThreadPoolExecutor(4) as pool:
        assert all(pool.map(knock, range(FLOOD), chunksize=100))
    assert flood.count == FLOOD  # each distinct unknown token was looked up once
    print(f"{FLOOD} unknown tokens in {time.monotonic() - started:.1f}s")

    with token_queries(app) as after:
        assert authenticator.authenticate(secret).name == "svc"
        assert authenticator.cached(secret) is not None  # what the predict fast path asks
    assert after.count == 0, "the verified token was looked up again"

    # With the database gone, the verified token is still answered from memory.
    services.engine.dispose()
    services.uow.session_factory.configure(bind=None)
    assert authenticator.authenticate(secret).name == "svc"


def test_a_repeated_unknown_token_is_looked_up_once_per_cache_period(app):
    authenticator = app.extensions["modelreg"].authenticator
    stranger = _random_secret()
    with token_queries(app) as seen:
        for _ in range(100):
            with pytest.raises(Unauthenticated):
                authenticator.authenticate(stranger)
    assert seen.count == 1


def test_the_caches_are_least_recently_used_and_bounded(app):
    uow = app.extensions["modelreg"].uow
    authenticator = auth.Authenticator(uow, cache_seconds=3600.0, max_entries=3, max_unknown=2)
    tokens = [
        auth.create_token(uow, name=f"t{i}", role="reader", actor="test")[0] for i in range(4)
    ]
    for secret in tokens[:3]:
        authenticator.authenticate(secret)
    authenticator.authenticate(tokens[0])  # t0 used again: t1 is now the least recent
    authenticator.authenticate(tokens[3])  # pushes t1 out
    assert [authenticator.cached(s) is not None for s in tokens] == [True, False, True, True]

    strangers = [_random_secret() for _ in range(3)]
    with token_queries(app) as seen:
        for stranger in strangers + strangers[1:]:
            with pytest.raises(Unauthenticated):
                authenticator.authenticate(stranger)
    assert seen.count == 3  # the two most recent unknown tokens were remembered
    assert [authenticator.cached(s) is not None for s in tokens] == [True, False, True, True]


def test_a_revocation_the_process_never_heard_of_is_seen_after_the_refresh_period(app):
    uow = app.extensions["modelreg"].uow
    now = [0.0]
    authenticator = auth.Authenticator(
        uow, cache_seconds=3600.0, refresh_seconds=1.0, clock=lambda: now[0]
    )
    keep, _ = auth.create_token(uow, name="keep", role="reader", actor="test")
    leave, _ = auth.create_token(uow, name="leave", role="reader", actor="test")
    for secret in (keep, leave):
        authenticator.authenticate(secret)

    with token_queries(app) as seen:
        now[0] = 0.9
        for secret in (keep, leave):
            authenticator.authenticate(secret)
            assert authenticator.cached(secret) is not None
    assert (seen.count, seen.epochs) == (0, 0)

    with token_queries(app) as seen:
        now[0] = 1.0  # the epoch is due: the fast path must ask, authenticate reads it once
        assert authenticator.cached(keep) is None
        for secret in (keep, leave):
            authenticator.authenticate(secret)
    assert (seen.count, seen.epochs) == (0, 1)

    auth.revoke_token(uow, "leave")  # as the command line does: on the database only
    now[0] = 2.0
    with token_queries(app) as seen:
        assert authenticator.authenticate(keep).name == "keep"
        with pytest.raises(Unauthenticated):
            authenticator.authenticate(leave)
        assert authenticator.cached(leave) is None
        assert authenticator.cached(keep) is not None
    # The epoch moved: each cached token is checked again once (its read includes the epoch).
    assert (seen.count, seen.epochs) == (2, 3)
