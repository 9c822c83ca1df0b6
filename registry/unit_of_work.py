"""One unit of work per use case: its reads, writes and audit event commit or roll back together."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from registry.db import WRITE_OPTION
from registry.errors import DependencyUnavailable


class UnitOfWork:
    """`with uow_factory(write=True) as uow: ...; uow.commit()`.

    Leaving the block without `commit()` rolls back. Connection-level database failures
    become `DependencyUnavailable` so that callers answer 503 instead of 500.
    """

    def __init__(self, session_factory: sessionmaker[Session], *, write: bool = False) -> None:
        self._session_factory = session_factory
        self._write = write
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        try:
            # Starts the transaction now; SQLite takes its write lock up front for writers.
            self.session.connection(execution_options={WRITE_OPTION: self._write})
        except sa_exc.SQLAlchemyError as error:
            self.session.close()
            raise _translate(error) from error
        return self

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
    """What services receive: call it to open a unit of work."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def __call__(self, *, write: bool = False) -> UnitOfWork:
        return UnitOfWork(self.session_factory, write=write)


def _translate(error: BaseException) -> DependencyUnavailable:
    return DependencyUnavailable("the registry database is unavailable; try again shortly")
