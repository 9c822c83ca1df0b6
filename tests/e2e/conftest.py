"""Fixtures for end-to-end tests that start and stop their own servers."""

from __future__ import annotations

import pytest

from tests.conftest import IN_CI
from tests.e2e.servers import ThrowawayPostgres


@pytest.fixture
def postgres():
    """A PostgreSQL cluster of this test's own (never the shared server), to stop at will."""
    try:
        server = ThrowawayPostgres()
    except Exception as error:
        if IN_CI:
            raise
        pytest.skip(f"cannot run a throwaway PostgreSQL here: {error}")
    yield server
    server.destroy()
