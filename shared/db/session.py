"""Engine and session factory. Callers own the transaction boundary (request or job)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, pool_size: int = 32, max_overflow: int = 8) -> Engine:
    # pre_ping: survive a Postgres restart without handing out dead connections. The pool covers
    # the 40 threads that serve sync routes, so a request never waits for a connection as well.
    # The kept connections cover the 32 requests a service lets in at once (create_service_app):
    # overflow ones are closed when returned, and at 300 requests/s opening a Postgres connection
    # per request cost more CPU than the requests did. The pool opens connections as needed.
    return create_engine(
        url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=10
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    with factory() as session, session.begin():
        yield session
