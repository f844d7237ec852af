"""The API-key rules: from the named environment variable only, never echoed; none for loopback."""

from __future__ import annotations

import pytest

from orchestrator.core.common.api_keys import resolve_api_key
from orchestrator.core.common.errors import UserError

KEY = "sk-TOPSECRET-0123456789"


def test_resolve_api_key(monkeypatch):
    monkeypatch.delenv("FAKE_KEY_VAR", raising=False)
    for url in ["http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://[::1]:8000/v1", "http://127.4.5.6/v1"]:
        assert resolve_api_key("FAKE_KEY_VAR", url) == "EMPTY"
        assert resolve_api_key(None, url) == "EMPTY"
    with pytest.raises(UserError) as info:
        resolve_api_key("FAKE_KEY_VAR", "https://api.deepseek.com/v1")
    assert str(info.value) == (
        "FAKE_KEY_VAR is not set: the endpoint https://api.deepseek.com/v1 needs an API key; export FAKE_KEY_VAR=..."
    )
    monkeypatch.setenv("FAKE_KEY_VAR", "")
    with pytest.raises(UserError):
        resolve_api_key("FAKE_KEY_VAR", "https://api.deepseek.com/v1")
    monkeypatch.setenv("FAKE_KEY_VAR", KEY + "\n")
    assert resolve_api_key("FAKE_KEY_VAR", "https://api.deepseek.com/v1") == KEY
    assert resolve_api_key("FAKE_KEY_VAR", "http://127.0.0.1:8000/v1") == KEY
    with pytest.raises(UserError) as info:
        resolve_api_key(KEY, "https://api.deepseek.com/v1")  # a key pasted where the name belongs
    assert KEY not in str(info.value)
    with pytest.raises(UserError):
        resolve_api_key(None, "https://api.deepseek.com/v1")
