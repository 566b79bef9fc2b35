import json

from gold.stack import api_keys_json
from shared.settings import GoldSettings


def test_the_local_stack_keeps_the_users_team_keys_beside_its_own(monkeypatch):
    monkeypatch.setenv("GOLD_API_KEYS", json.dumps({"team-a": "ka", "local": "old"}))
    keys = json.loads(api_keys_json(GoldSettings(), "launcher-token"))
    assert keys == {"team-a": "ka", "local": "launcher-token"}


def test_without_user_keys_only_the_launchers_key(monkeypatch):
    monkeypatch.delenv("GOLD_API_KEYS", raising=False)
    assert json.loads(api_keys_json(GoldSettings(), "t")) == {"local": "t"}
