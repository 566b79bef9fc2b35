from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from services.orchestrator.config import OrchestratorSettings


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error."""
    with request.app.state.sessions() as session, session.begin():
        yield session


def get_settings(request: Request) -> OrchestratorSettings:
    return request.app.state.settings


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[OrchestratorSettings, Depends(get_settings)]
