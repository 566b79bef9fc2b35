"""Hostile and malformed requests get clear 4xx answers, never a 500."""

from __future__ import annotations


def test_oversized_body_is_413(api):
    response = api.post(
        "/runs", content=b"{" + b" " * 3_000_000 + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "bytes" in response.json()["message"]


def test_deeply_nested_json_is_4xx(api):
    body = "[" * 100_000 + "]" * 100_000
    response = api.post("/runs", content=body.encode(), headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500


def test_non_utf8_body_is_4xx(api):
    response = api.post(
        "/runs", content=b'{"name": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500


def test_wrong_types_name_the_field(api, spec):
    spec["loop"]["iterations"] = "three"
    response = api.post("/runs", json=spec)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["loop", "iterations"]
