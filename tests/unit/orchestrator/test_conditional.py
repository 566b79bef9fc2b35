"""If-None-Match as RFC 9110 reads it: `*`, lists, weak comparison, commas inside a tag."""

from __future__ import annotations

import pytest

from services.orchestrator.conditional import etag_of, none_match

ETAG = etag_of(b'{"status":"running"}')


def test_etag_is_a_strong_tag_of_the_bytes():
    assert ETAG.startswith('"') and ETAG.endswith('"') and '"' not in ETAG[1:-1]
    assert etag_of(b'{"status":"running"}') == ETAG != etag_of(b'{"status":"queued"}')


@pytest.mark.parametrize(
    "header",
    [ETAG, f"W/{ETAG}", f'"a", {ETAG}', f'"a",{ETAG} ', f'"x,y", W/{ETAG}', "*", " * "],
)
def test_current_copy(header):
    assert none_match(header, ETAG)


@pytest.mark.parametrize(
    "header",
    ["", '"a"', ETAG.strip('"'), f'"{ETAG}"', '"a", *', f'W/"{ETAG[1:-2]}"', f'"{ETAG[1:-1]},"'],
)
def test_stale_or_malformed_copy(header):
    assert not none_match(header, ETAG)
