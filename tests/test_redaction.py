"""Secrets never reach the host: an upstream echoing a configured key, token or password (of any shape, anywhere in
its error text, near the cut of a long one too) is redacted end to end, through the real MCP client and SDKs
against the stand-in upstream; a secret with stray whitespace stops the server at start."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SettingsFactory, text_of
from mcp import Client
from mcp.types import CallToolResult
from test_settings import run_server

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.redact import Redactor
from mcp_llm_server.server import build_server
from mcp_llm_server.settings import SettingsError, load_settings

# Keys of several shapes. OpenAI-compatible servers take any key, so every shape is tried as the OpenAI key.
OPENAI_KEYS = {
    "openai-project": "sk-proj-Q3vN8xLw2Rt6Yp0Zk4Hs7Jd1Fb5Gm9Ca_Xe-Tu",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtY3AtbGxtIiwiaWF0IjoxNzAwMDAwMDAwfQ.Zk3QwP9sLr2Vx7Nb4Ty1Hc8Gm5Jd0Fa6Ue",
    "hex40": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "short-password": "hunter42",
}
ANTHROPIC_KEY = "sk-ant-api03-Xy7Lq2Vn9Rb4Tk6Hm1Pz8Wc3Jd5Fg0Se-Ua_Io"
HTTP_TOKEN = "tok-Lr8Vq2Xn6Zb0Pw4Ys9Kd3Hf7Jm1Tc5Ga"
DB_PASSWORD = "pg-Wq5Zr1Nx"
TOOLS = {"openai": "ask_openai", "anthropic": "ask_claude"}
MASK = "[redacted]"

pytestmark = pytest.mark.anyio


def everything(result: CallToolResult) -> str:
    return text_of(result) + json.dumps(result.structured_content) + json.dumps(result.meta)


def assert_no_fragment(secret: str, output: str) -> None:
    """Neither the secret nor any 6 consecutive characters of it (the part left by a cut) appear in `output`."""
    window = min(6, len(secret))
    leaked = {secret[i : i + window] for i in range(len(secret) - window + 1)} & {
        output[i : i + window] for i in range(len(output) - window + 1)
    }
    assert not leaked, f"fragments of a secret leaked: {sorted(leaked)} in {output!r}"


def echo_at(position: int, secret: str) -> str:
    """An upstream error text with `secret` starting at character `position` (words before it, words after)."""
    head = "Invalid authentication: the key you sent was refused by the gateway"
    while len(head) < position - 1:
        head += " and refused again"
    return f"{head[: position - 1]} {secret} was not accepted; check your organisation settings and try again."


def settings_with(make_settings: SettingsFactory, tmp_path: Path, openai_key: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "openai_api_key": openai_key,
        "anthropic_api_key": ANTHROPIC_KEY,
        "http_token": HTTP_TOKEN,
        # The password is in the URL like a PostgreSQL one (SQLite ignores it): it must be redacted all the same.
        "database_url": f"sqlite+aiosqlite://app:{DB_PASSWORD}@/{tmp_path / 'c.db'}",
        "max_attempts": 1,
    }
    return make_settings(**{**values, **overrides})


# --- echoed by an upstream --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", sorted(OPENAI_KEYS))
@pytest.mark.parametrize("position", [20, 380, 395])
async def test_key_echoed_in_401_body(
    make_settings: SettingsFactory, standin: StandIn, tmp_path: Path, shape: str, position: int
) -> None:
    """A 401 whose body echoes the configured key, early or where a 400-character cut falls: no character of it
    comes back (it used to be shortened first, then redacted, leaking the key's first characters)."""
    key = OPENAI_KEYS[shape]
    standin.script(Reply.error(401, message=echo_at(position, key)))
    async with Client(build_server(settings_with(make_settings, tmp_path, key))) as client:
        result = await client.call_tool("ask_openai", {"prompt": "hi"})
    assert result.is_error
    output = everything(result)
    assert "authentication failed" in output and "HTTP 401" in output
    assert_no_fragment(key, output)
    if position < 300:
        assert MASK in output


async def test_anthropic_key_echoed_in_401_body(
    make_settings: SettingsFactory, standin: StandIn, tmp_path: Path
) -> None:
    key = ANTHROPIC_KEY
    standin.script(Reply.error(401, message=echo_at(380, key)), Reply.error(401, message=echo_at(30, key)))
    async with Client(build_server(settings_with(make_settings, tmp_path, OPENAI_KEYS["hex40"]))) as client:
        results = [await client.call_tool("ask_claude", {"prompt": "hi"}) for _ in range(2)]
    for result in results:
        assert result.is_error and "Anthropic: authentication failed" in text_of(result)
        assert_no_fragment(key, everything(result))
    assert MASK in text_of(results[1])


@pytest.mark.parametrize(
    ("name", "secret"),
    [("http-token", HTTP_TOKEN), ("database-password", DB_PASSWORD), ("other-provider-key", ANTHROPIC_KEY)],
)
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_other_secrets_echoed_in_error_message(
    make_settings: SettingsFactory, standin: StandIn, tmp_path: Path, name: str, secret: str, provider: str
) -> None:
    """The HTTP token, the database password and the other provider's key are redacted like the key in use."""
    standin.script(Reply.error(400, message=f"Bad request: unexpected credential '{secret}' in the body."))
    async with Client(build_server(settings_with(make_settings, tmp_path, OPENAI_KEYS["hex40"]))) as client:
        result = await client.call_tool(TOOLS[provider], {"prompt": "hi"})
    assert result.is_error and "HTTP 400" in text_of(result)
    assert f"credential '{MASK}' in the body" in text_of(result)
    assert_no_fragment(secret, everything(result))


@pytest.mark.parametrize("shape", ["hex40", "short-password"])
async def test_key_echoed_in_stream_error(
    make_settings: SettingsFactory, standin: StandIn, tmp_path: Path, shape: str
) -> None:
    """An error event inside a stream (OpenAI Chat Completions, Anthropic) echoing a key is redacted too."""
    key = OPENAI_KEYS[shape]
    standin.script(Reply.midstream_error(after=2, message=f"Stream aborted for key {key}."))
    settings = settings_with(make_settings, tmp_path, key, openai_api="chat")
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("ask_openai", {"prompt": "hi"})
    assert result.is_error
    assert_no_fragment(key, everything(result))
    assert f"Stream aborted for key {MASK}" in text_of(result)


async def test_unconfigured_key_shapes_are_masked(
    make_settings: SettingsFactory, standin: StandIn, tmp_path: Path
) -> None:
    """Keys the server does not know (another account's `sk-…`, a GitHub token) echoed by an upstream are masked."""
    others = ["sk-proj-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2", "ghp_0123456789abcdefghijABCDEFGHIJklmnop"]
    standin.script(Reply.error(403, message=f"Keys {others[0]} and {others[1]} are not allowed here."))
    async with Client(build_server(settings_with(make_settings, tmp_path, OPENAI_KEYS["hex40"]))) as client:
        result = await client.call_tool("ask_openai", {"prompt": "hi"})
    assert f"Keys sk-{MASK} and ghp_{MASK} are not allowed here." in text_of(result)
    for other in others:
        assert_no_fragment(other[4:], everything(result))


# --- stray whitespace is a configuration error -------------------------------------------------------------

_WHITESPACE_CASES = [
    ("OPENAI_API_KEY", OPENAI_KEYS["hex40"] + "\n"),
    ("ANTHROPIC_API_KEY", " " + ANTHROPIC_KEY),
    ("MCP_LLM_HTTP_TOKEN", HTTP_TOKEN[:10] + " " + HTTP_TOKEN[10:]),
    ("MCP_LLM_DATABASE_URL", "postgresql+asyncpg://app:pg-Wq5 Zr1Nx@db:5432/llm"),
]


@pytest.mark.parametrize(("variable", "value"), _WHITESPACE_CASES)
def test_stray_whitespace_in_a_secret_is_refused(variable: str, value: str) -> None:
    """A key with a trailing newline used to be sent, and came back whole in an `Illegal header value` error."""
    field = {
        "OPENAI_API_KEY": "openai_api_key",
        "ANTHROPIC_API_KEY": "anthropic_api_key",
        "MCP_LLM_HTTP_TOKEN": "http_token",
        "MCP_LLM_DATABASE_URL": "database_url",
    }[variable]
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, **{field: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}: ") and "whitespace" in message
    assert_no_fragment(value.strip().rsplit("@", 1)[0].rsplit(":", 1)[-1].replace(" ", ""), message)


@pytest.mark.parametrize(("variable", "value"), _WHITESPACE_CASES[:2])
def test_stray_whitespace_stops_the_server(tmp_path: Path, variable: str, value: str) -> None:
    """`mcp-llm-server` exits 2 at start with one stderr line naming the variable, the value not shown."""
    env = {variable: value, "MCP_LLM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/c.db"}
    completed = run_server(env=env, cwd=tmp_path)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(f"mcp-llm-server: configuration error: {variable}: ")
    assert_no_fragment(value.strip(), completed.stderr)


def test_blank_keys_are_unset() -> None:
    settings = load_settings(_env_file=None, openai_api_key=" ", anthropic_api_key="\n")
    assert settings.openai_api_key is None and settings.anthropic_api_key is None


# --- the Redactor itself ---------------------------------------------------------------------------------


def test_redactor_forms_and_words() -> None:
    """A secret is masked as configured, URL-encoded or decoded; a short one only where it stands alone."""
    redact = Redactor(["p@ss:w0rd/x", "postgres", OPENAI_KEYS["hex40"]])
    assert redact("dsn postgresql://postgres:p%40ss%3Aw0rd%2Fx@db") == f"dsn postgresql://{MASK}:{MASK}@db"
    assert redact("raw p@ss:w0rd/x!") == f"raw {MASK}!"
    assert redact(f"key={OPENAI_KEYS['hex40']}x") == f"key={MASK}x"  # a long secret inside a longer word too
    assert redact("a task-list, risk-free, sk-your-key") == "a task-list, risk-free, sk-your-key"


def test_clip_redacts_before_shortening() -> None:
    key = OPENAI_KEYS["hex40"]
    text = echo_at(380, key)
    clipped = Redactor([key]).clip(text, 400)
    assert len(clipped) <= 400 and clipped.endswith("…") and MASK in clipped
    assert_no_fragment(key, clipped)


def test_redactor_is_fast_on_a_large_answer() -> None:
    """A 1 MB answer: the configured secrets and the key shapes in well under a second (about 25 ms measured)."""
    words = ["the", "model", "task-list", "risk-based", "eyJ", "token", "Bearer", "sk-", "hf_", "gh", "AKIA", "def"]
    text = " ".join(words[i % len(words)] + str(i % 7) for i in range(150_000))[:1_000_000]
    text = text[:500_000] + f" {OPENAI_KEYS['hex40']} " + text[500_000:]
    redact = Redactor([*OPENAI_KEYS.values(), ANTHROPIC_KEY, HTTP_TOKEN, DB_PASSWORD])
    started = time.perf_counter()
    cleaned = redact(text)
    elapsed = time.perf_counter() - started
    assert OPENAI_KEYS["hex40"] not in cleaned and MASK in cleaned
    assert elapsed < 1.0, elapsed
