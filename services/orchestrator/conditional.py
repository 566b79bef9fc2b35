"""Conditional GETs (RFC 9110 section 13.1.2): a strong ETag on a JSON representation, and 304 Not
Modified to an If-None-Match that names it, so a poller that already has the current body gets an
empty answer.

The ETag is a hash of the serialized body rather than something like the run's updated_at: it
changes exactly when the bytes would, whichever column, child row or schema field the body is built
from (a summary also shows iterations, metrics and sample counts)."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

from fastapi import Header, Response, status
from pydantic import BaseModel

IfNoneMatch = Annotated[str | None, Header(max_length=4096)]
# For a route's `responses=`: the OpenAPI entry of the 304.
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    status.HTTP_304_NOT_MODIFIED: {"description": "Not Modified: the If-None-Match names the current ETag"}
}
# Every answer is revalidated (no-cache) and stays out of shared caches (private): the body depends
# on the caller's key.
_CACHE_CONTROL = "private, no-cache"
# An entity tag, weak or strong: W/"..." or "...". Commas are allowed inside the quotes, so a list is
# read tag by tag rather than split on commas.
_ENTITY_TAG = re.compile(r'(?:W/)?("[^"]*")')


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def none_match(if_none_match: str, etag: str) -> bool:
    """Whether the If-None-Match condition is false for a representation with this ETag, i.e. the
    client's copy is current: `*` (the resource exists), or a listed tag equal to it under the weak
    comparison that If-None-Match uses (W/"x" matches "x")."""
    if if_none_match.strip() == "*":
        return True
    return etag in _ENTITY_TAG.findall(if_none_match)


def validators(etag: str) -> dict[str, str]:
    """The headers of a representation tagged `etag`, and of its 304."""
    return {"ETag": etag, "Cache-Control": _CACHE_CONTROL}


def not_modified(etag: str, if_none_match: str | None) -> Response | None:
    """304 with the ETag and no body when the client's copy is current, else None (send the body)."""
    if if_none_match is not None and none_match(if_none_match, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=validators(etag))
    return None


def conditional_json(model: BaseModel, if_none_match: str | None) -> Response:
    """The model as JSON with its ETag, or 304 with the same ETag and no body when the client's copy
    is current. Call it after the access check: another tenant's run must stay a 404."""
    body = model.model_dump_json().encode()
    etag = etag_of(body)
    unchanged = not_modified(etag, if_none_match)
    return unchanged or Response(body, media_type="application/json", headers=validators(etag))
