from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services.orchestrator.config import OrchestratorSettings
from shared.artifacts import ArtifactStore
from shared.clients import GeneratorClient, ScorerClient


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One transaction per request, committed before the response is sent (scope="function"),
    so a client never sees a success that was not stored. The exit runs on the event loop: a brief
    COMMIT there is cheaper than a request holding a pooled connection while it waits for a free
    worker thread to commit, which starves the pool under load."""
    session: Session = request.app.state.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


async def get_read_session(request: Request) -> AsyncIterator[Session]:
    """A session for routes that only read: its connection is in autocommit, so a status read is
    one SELECT, not BEGIN, SELECT and COMMIT (three round trips to Postgres on the API's hottest
    path). Every statement sees the latest committed data."""
    session: Session = request.app.state.read_sessions()
    try:
        yield session
    finally:
        session.close()


async def get_read_engine(request: Request) -> Engine:
    """The read sessions' autocommit engine, for the status read (service.run_status): one connection
    and one SELECT, without a Session, whose setup and teardown were a fifth of that route's CPU."""
    return request.app.state.read_engine


async def get_settings(request: Request) -> OrchestratorSettings:
    return request.app.state.settings


def get_artifacts(request: Request) -> ArtifactStore:
    return request.app.state.artifacts


def get_generator(request: Request) -> GeneratorClient:
    return request.app.state.generator


def get_scorer(request: Request) -> ScorerClient:
    return request.app.state.scorer


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]
ReadEngineDep = Annotated[Engine, Depends(get_read_engine)]
SettingsDep = Annotated[OrchestratorSettings, Depends(get_settings)]
GeneratorDep = Annotated[GeneratorClient, Depends(get_generator)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
ScorerDep = Annotated[ScorerClient, Depends(get_scorer)]
