"""One unit of work per use case: its reads, writes and audit event commit or roll back together.

A use case may also `announce` what it changed (registry/changes.py); the announcements are
handed to the factory's listeners once the commit has succeeded, and dropped otherwise.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable
from types import TracebackType
from typing import Protocol

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from registry.changes import ChangeListener, RegistryChange
from registry.db import WRITE_OPTION
from registry.errors import DependencyUnavailable
from registry.repository import Repository
from registry.sql_repository import SqlRepository

log = logging.getLogger(__name__)


class UnitOfWork(ABC):
    """`with uow_factory(write=True) as work: ...; work.commit()`.

    Leaving the block without `commit()` rolls back. Subclasses supply the storage
    (`_begin`, `_commit`, `_rollback`, `_end`); this base keeps the after-commit contract, so
    the SQL unit of work and the in-memory one used by unit tests cannot differ on it.
    """

    repo: Repository

    def __init__(self, listeners: Iterable[ChangeListener] = ()) -> None:
        self._listeners = listeners
        self._announced: list[RegistryChange] = []
        self._committed: list[RegistryChange] = []

    def announce(self, change: RegistryChange) -> None:
        """Record a change to deliver to the listeners if, and only if, it commits."""
        self._announced.append(change)

    def commit(self) -> None:
        self._commit()
        self._committed.extend(self._announced)
        self._announced.clear()

    def rollback(self) -> None:
        self._rollback()
        self._announced.clear()

    def __enter__(self) -> UnitOfWork:
        self._begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._announced.clear()
        try:
            self._end(exc)
        finally:
            # Delivered once the transaction is over and its connection released: what was
            # committed is true even if the block failed afterwards.
            committed, self._committed = self._committed, []
            deliver(committed, self._listeners)

    @abstractmethod
    def _begin(self) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...

    @abstractmethod
    def _end(self, exc: BaseException | None) -> None:
        """Roll back what was not committed and release the resources."""


def deliver(changes: Iterable[RegistryChange], listeners: Iterable[ChangeListener]) -> None:
    """Hand each change to each listener; a failing listener never fails the use case,
    whose change is already committed (it is logged, and the others still hear of it)."""
    for change in changes:
        for listener in listeners:
            try:
                listener(change)
            except Exception:
                log.exception("a registry change listener failed on %r", change)


class UnitOfWorkProvider(Protocol):
    """What services receive: call it to open a unit of work."""

    def __call__(self, *, write: bool = False) -> UnitOfWork: ...


class SqlUnitOfWork(UnitOfWork):
    """A unit of work on one SQLAlchemy session.

    Connection-level database failures become `DependencyUnavailable` so that callers
    answer 503 instead of 500.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        write: bool = False,
        listeners: Iterable[ChangeListener] = (),
    ) -> None:
        super().__init__(listeners)
        self._session_factory = session_factory
        self._write = write
        self.session: Session

    def _begin(self) -> None:
        self.session = self._session_factory()
        try:
            # Starts the transaction now; SQLite takes its write lock up front for writers.
            self.session.connection(execution_options={WRITE_OPTION: self._write})
        except sa_exc.SQLAlchemyError as error:
            self.session.close()
            raise _translate(error) from error
        self.repo = SqlRepository(self.session)

    def _commit(self) -> None:
        self.session.commit()

    def _rollback(self) -> None:
        self.session.rollback()

    def _end(self, exc: BaseException | None) -> None:
        try:
            self.session.rollback()
        except sa_exc.SQLAlchemyError:
            pass  # the connection is already gone; closing below releases what is left
        finally:
            self.session.close()
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or (
            isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
        ):
            raise _translate(exc) from exc


class UnitOfWorkFactory:
    """Opens SQL units of work; holds the listeners every one of them reports to."""

    def __init__(
        self, session_factory: sessionmaker[Session], listeners: Iterable[ChangeListener] = ()
    ) -> None:
        self.session_factory = session_factory
        self.listeners: list[ChangeListener] = list(listeners)

    def subscribe(self, listener: ChangeListener) -> None:
        """Receive every registry change committed through this factory from now on."""
        self.listeners.append(listener)

    def __call__(self, *, write: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.session_factory, write=write, listeners=self.listeners)


def _translate(error: BaseException) -> DependencyUnavailable:
    return DependencyUnavailable("the registry database is unavailable; try again shortly")
