"""Bearer-token authentication shared by the HTTP services, and the principal a key stands for."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from shared.errors import Unauthorized

_bearer = HTTPBearer(auto_error=False, description="an API key from GOLD_API_KEYS")


async def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str | None:
    """Return the name of the caller's key; None when authentication is disabled (no keys).
    Async (no I/O here): a plain def would cost every request a hop to the thread pool."""
    keys: dict[str, SecretStr] = request.app.state.settings.api_keys
    if not keys:
        return None
    if credentials is None:
        raise Unauthorized(
            "missing bearer token: send 'Authorization: Bearer <key>' (keys come from GOLD_API_KEYS)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    for name, secret in keys.items():
        if hmac.compare_digest(credentials.credentials.encode(), secret.get_secret_value().encode()):
            return name
    raise Unauthorized("unknown API key", headers={"WWW-Authenticate": "Bearer"})


Caller = Annotated[str | None, Depends(authenticate)]


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the name of its API key (None when authentication is disabled) and
    whether that key is an admin key (GOLD_ADMIN_KEYS), which sees and manages every tenant's runs."""

    name: str | None
    admin: bool


# In-process callers and a stack without keys: one operator who sees everything, owning nothing.
OPERATOR = Principal(name=None, admin=True)


async def principal(request: Request, caller: Caller) -> Principal:
    if caller is None:
        return OPERATOR
    return Principal(name=caller, admin=caller in request.app.state.settings.admin_keys)


PrincipalDep = Annotated[Principal, Depends(principal)]
