"""Bearer-token authentication shared by the HTTP services."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from shared.errors import Unauthorized

_bearer = HTTPBearer(auto_error=False, description="an API key from GOLD_API_KEYS")


def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str | None:
    """Return the name of the caller's key; None when authentication is disabled (no keys)."""
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
