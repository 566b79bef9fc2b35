"""The CLI's own variables (GOLD_API_TOKEN, GOLD_FOLLOW_PATIENCE_S) go through CliSettings, read when used."""

from pathlib import Path

import pytest

from gold import session
from shared.settings import GoldSettings


def test_the_api_token_variable_is_the_bearer_token_and_wins_over_the_local_one(monkeypatch, tmp_path: Path):
    (tmp_path / "api_token").write_text("local-token\n")
    settings = GoldSettings(data_dir=tmp_path)
    assert session.orchestrator_client(settings)._http.headers["Authorization"] == "Bearer local-token"
    monkeypatch.setenv("GOLD_API_TOKEN", "team-token")
    assert session.orchestrator_client(settings)._http.headers["Authorization"] == "Bearer team-token"


def test_no_token_anywhere_sends_none(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("GOLD_API_TOKEN", raising=False)
    assert "Authorization" not in session.orchestrator_client(GoldSettings(data_dir=tmp_path))._http.headers


def test_a_bad_patience_names_the_variable(monkeypatch):
    monkeypatch.setenv("GOLD_FOLLOW_PATIENCE_S", "soon")
    with pytest.raises(ValueError, match="follow_patience_s"):
        session.patiently(lambda: "run")
