"""GOLD's Python API: `Client` and `AsyncClient` talk to a running orchestrator (docs/python-client.md);
their errors are in gold.client_errors, all subclasses of `GoldError`."""

from gold.async_client import AsyncClient
from gold.client import Client
from gold.client_errors import (
    AuthenticationError,
    ConflictError,
    GoldError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    UnreachableError,
    ValidationError,
)

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "GoldError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ServerError",
    "UnreachableError",
    "ValidationError",
]
