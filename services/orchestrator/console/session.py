"""Console sessions: an API key pasted once at /ui/login becomes a random session id in an HttpOnly,
SameSite=Strict cookie, signed with HMAC. The session (in Redis, so every orchestrator replica
shares it) holds the key's NAME and a CSRF token, never the key: the principal is rebuilt from the
settings on each request, exactly as shared.auth builds it for the API, so a key removed from
GOLD_API_KEYS signs its sessions out and GOLD_ADMIN_KEYS decides admin rights in one place."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import SecretStr
from redis import Redis

from shared.auth import OPERATOR, Principal

COOKIE = "gold_session"
SESSION_TTL_S = 12 * 3600
_SESSION_KEY = "gold:console:session:{}"
# The signing secret lives in Redis, made once by whichever replica comes first: no setting to
# configure, and every replica verifies every cookie.
_SECRET_KEY = "gold:console:secret"


class SignInRequired(Exception):
    """No valid session: the page answers with a redirect to /ui/login."""


class BadCsrfToken(Exception):
    """A state-changing form without this session's CSRF token."""


@dataclass(frozen=True)
class ConsoleSession:
    principal: Principal
    csrf: str
    # None when authentication is disabled (no GOLD_API_KEYS): nothing to sign out of.
    session_id: str | None


def _redis(request: Request) -> Redis:
    # The probe client has short timeouts: a page waits seconds at most on a Redis outage.
    redis: Redis = request.app.state.redis_probe
    return redis


def _secret(redis: Redis) -> bytes:
    redis.set(_SECRET_KEY, secrets.token_hex(32), nx=True)
    value = redis.get(_SECRET_KEY)
    assert isinstance(value, bytes)
    return value


def _sign(session_id: str, secret: bytes) -> str:
    return f"{session_id}.{hmac.new(secret, session_id.encode(), hashlib.sha256).hexdigest()}"


def _unsign(cookie: str, secret: bytes) -> str | None:
    session_id, _, _ = cookie.partition(".")
    return session_id if session_id and hmac.compare_digest(_sign(session_id, secret), cookie) else None


def key_name(request: Request, key: str) -> str | None:
    """The name of the API key `key`, as shared.auth.authenticate matches it; None if unknown."""
    keys: dict[str, SecretStr] = request.app.state.settings.api_keys
    for name, secret in keys.items():
        if hmac.compare_digest(key.encode(), secret.get_secret_value().encode()):
            return name
    return None


def auth_enabled(request: Request) -> bool:
    return bool(request.app.state.settings.api_keys)


def sign_in(request: Request, name: str) -> str:
    """A new session for the key named `name`; returns the cookie value to set."""
    redis = _redis(request)
    session_id = secrets.token_urlsafe(32)
    state = {"name": name, "csrf": secrets.token_urlsafe(32)}
    redis.set(_SESSION_KEY.format(session_id), json.dumps(state), ex=SESSION_TTL_S)
    return _sign(session_id, _secret(redis))


def sign_out(request: Request, session: ConsoleSession) -> None:
    if session.session_id is not None:
        _redis(request).delete(_SESSION_KEY.format(session.session_id))


def _principal(request: Request, name: str) -> Principal:
    settings = request.app.state.settings
    return Principal(name=name, admin=name in settings.admin_keys)


def current_session(request: Request) -> ConsoleSession:
    """The signed-in session of this request, or SignInRequired."""
    if not auth_enabled(request):
        # As the API without keys: the operator, who sees everything. Forms still carry a token
        # (derived from the Redis secret) so another site cannot post them blind.
        return ConsoleSession(OPERATOR, _csrf_without_auth(request), None)
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise SignInRequired
    redis = _redis(request)
    session_id = _unsign(cookie, _secret(redis))
    if session_id is None:
        raise SignInRequired
    raw = redis.get(_SESSION_KEY.format(session_id))
    if raw is None:
        raise SignInRequired
    state = json.loads(raw)
    if state["name"] not in request.app.state.settings.api_keys:  # the key was revoked
        raise SignInRequired
    return ConsoleSession(_principal(request, state["name"]), state["csrf"], session_id)


def _csrf_without_auth(request: Request) -> str:
    return hmac.new(_secret(_redis(request)), b"csrf", hashlib.sha256).hexdigest()


def check_csrf(session: ConsoleSession, token: str | None) -> None:
    if not token or not hmac.compare_digest(token, session.csrf):
        raise BadCsrfToken


SignedInDep = Annotated[ConsoleSession, Depends(current_session)]
