"""`MCP_LLM_HTTP_TOKENS` and the OAuth settings: read at start, refused with the variable and entry named and no
token shown; the lookup that finds whose a token is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_llm_server.named_tokens import NamedTokens
from mcp_llm_server.settings import SettingsError, load_settings

GOOD = "0123456789abcdef-good"


def refusal(**values: object) -> str:
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, **values)
    return str(refused.value)


@pytest.mark.parametrize(
    ("tokens", "said"),
    [
        ({"alice": "short"}, "token 'alice' must be at least 16 characters"),
        ({"alice": GOOD, "bob": GOOD}, "token 'bob' is the same as another name's"),
        ({"has space": GOOD}, "token name 'has space'"),
        ({"alice": GOOD + " "}, "token 'alice' contains whitespace"),
        ({"alice": 12345678901234567890}, "token 'alice': expected the token as a string"),
        ({"alice": {"file": "/no/such/token-file"}}, "token 'alice': cannot read /no/such/token-file"),
        (["alice"], "expected a JSON object"),
    ],
)
def test_a_bad_named_token_stops_the_server_naming_the_entry(tokens: object, said: str) -> None:
    message = refusal(http_tokens=json.dumps(tokens))
    assert message.startswith("MCP_LLM_HTTP_TOKENS") and said in message
    assert GOOD not in message and "short" not in message.replace("must be at least", "")


def test_a_token_from_a_file_and_the_lookup(tmp_path: Path) -> None:
    secret = tmp_path / "bob.token"
    secret.write_text("bob-0123456789abcdef\n")  # the trailing newline is dropped
    settings = load_settings(_env_file=None, http_tokens=json.dumps({"alice": GOOD, "bob": {"file": str(secret)}}))
    assert settings.callers_told_apart and "bob-0123456789abcdef" in settings.secrets()
    tokens = NamedTokens({name: token.get_secret_value() for name, token in settings.http_tokens.items()})
    assert tokens.name_of(b"bob-0123456789abcdef") == "bob" and tokens.name_of(GOOD.encode()) == "alice"
    assert tokens.name_of(b"bob-0123456789abcdeX") is None and tokens.name_of(b"") is None


def test_oauth_needs_the_resource_url_and_urls() -> None:
    assert "MCP_LLM_OAUTH_RESOURCE_URL" in refusal(oauth_issuer="https://login.example.test")
    message = refusal(oauth_issuer="login.example.test")
    assert message.startswith("MCP_LLM_OAUTH_ISSUER") and "must be an http:// or https:// URL" in message
    settings = load_settings(
        _env_file=None,
        oauth_issuer="https://login.example.test",
        oauth_resource_url="https://llm.example.test/mcp",
        oauth_required_scopes="mcp:tools, mcp:admin",
    )
    assert settings.callers_told_apart and settings.oauth_required_scopes == ["mcp:tools", "mcp:admin"]


def test_a_caller_budget_for_a_token_name_that_does_not_exist_is_refused() -> None:
    tokens = json.dumps({"alice": GOOD})
    message = refusal(http_tokens=tokens, caller_budgets=json.dumps({"token:alcie": {"daily_usd": 1}}))
    assert message.startswith("MCP_LLM_CALLER_BUDGETS names token:alcie") and "MCP_LLM_HTTP_TOKENS" in message
    fine = load_settings(_env_file=None, http_tokens=tokens, caller_budgets=json.dumps({"token:alice": {}}))
    assert fine.caller_budgets == {"token:alice": {}}


@pytest.mark.anyio
async def test_a_plain_http_issuer_beyond_loopback_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from mcp_llm_server.http import oauth_verifier

    for issuer in ("http://login.example.test", "http://127.0.0.1:9000", "https://login.example.test"):
        settings = load_settings(_env_file=None, oauth_issuer=issuer, oauth_resource_url="https://llm.example.test/mcp")
        verifier = oauth_verifier(settings)
        assert verifier is not None
        await verifier.aclose()
    warned = [r.getMessage() for r in caplog.records if "plain http://" in r.getMessage()]
    assert warned == [
        "MCP_LLM_OAUTH_ISSUER is plain http:// beyond loopback: the keys tokens are checked with can be forged in "
        "transit"
    ]
