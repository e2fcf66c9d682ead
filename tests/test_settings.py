"""Configuration: defaults, validation, `.env`, and how `mcp-llm-server` reports a bad value (exit 2, one line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_server

from mcp_llm_server import __version__
from mcp_llm_server.settings import Settings, SettingsError, load_settings

KEYS = {"OPENAI_API_KEY": "sk-test-openai-settings-0123456789", "ANTHROPIC_API_KEY": "sk-ant-test-settings-0123456789"}
PROVIDER_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No configuration from the developer's shell or checkout: an empty working directory, no relevant variables."""
    for name in list(os.environ):
        if name.upper().startswith("MCP_LLM_") or name.upper() in PROVIDER_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- in process ------------------------------------------------------------------------------------------


def test_defaults(clean_env: Path) -> None:
    """With nothing configured, the defaults are those the README documents and no key is set."""
    s = load_settings()
    assert s.openai_api_key is None and s.anthropic_api_key is None
    assert s.openai_base_url is None and s.anthropic_base_url is None
    assert s.openai_api == "responses"
    assert (s.openai_model, s.anthropic_model, s.max_tokens) == ("gpt-5.5", "claude-sonnet-5-5", 4096)
    assert (s.connect_timeout_s, s.call_timeout_s, s.max_call_timeout_s, s.stall_timeout_s) == (10, 300, 3600, 60)
    assert (s.max_attempts, s.backoff_initial_s, s.backoff_max_s, s.retry_after_max_s) == (4, 0.5, 8, 60)
    assert (s.openai_concurrency, s.anthropic_concurrency) == (64, 64)  # ceilings of the adaptive limits
    assert (s.openai_initial_concurrency, s.anthropic_initial_concurrency) == (None, None)  # 16, at most those
    assert (s.progress_interval_s, s.progress_tail_chars) == (0.25, 600)
    assert (s.max_prompt_chars, s.max_message_bytes) == (400_000, 33_554_432)
    assert s.log_level == "WARNING"
    assert s.secrets() == []


def test_environment_variables(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Provider variables keep their usual names, the server's own carry MCP_LLM_; URLs lose a trailing slash."""
    for name, value in {
        **KEYS,
        "OPENAI_BASE_URL": "http://localhost:11434/v1/",
        "ANTHROPIC_BASE_URL": "  ",
        "MCP_LLM_OPENAI_API": "chat",
        "MCP_LLM_CALL_TIMEOUT_S": "12.5",
        "MCP_LLM_MAX_ATTEMPTS": "2",
        "mcp_llm_log_level": "debug",
    }.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == KEYS["OPENAI_API_KEY"]
    assert s.openai_base_url == "http://localhost:11434/v1"
    assert s.anthropic_base_url is None
    assert (s.openai_api, s.call_timeout_s, s.max_attempts, s.log_level) == ("chat", 12.5, 2, "DEBUG")
    assert sorted(s.secrets()) == sorted(KEYS.values())
    assert KEYS["OPENAI_API_KEY"] not in repr(s) and KEYS["ANTHROPIC_API_KEY"] not in str(s)


def test_dotenv_file_is_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `.env` in the working directory is read; a real environment variable wins over it."""
    (clean_env / ".env").write_text(
        "ANTHROPIC_API_KEY=sk-ant-from-dotenv-0123456789\nMCP_LLM_ANTHROPIC_MODEL=claude-from-dotenv\n"
        "MCP_LLM_CALL_TIMEOUT_S=42\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("MCP_LLM_CALL_TIMEOUT_S", "7")
    s = load_settings()
    assert s.anthropic_api_key is not None
    assert s.anthropic_api_key.get_secret_value() == "sk-ant-from-dotenv-0123456789"
    assert s.anthropic_model == "claude-from-dotenv"
    assert s.call_timeout_s == 7


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MCP_LLM_CALL_TIMEOUT_S", "-1"),
        ("MCP_LLM_STALL_TIMEOUT_S", "0"),
        ("MCP_LLM_MAX_ATTEMPTS", "0"),
        ("MCP_LLM_MAX_TOKENS", "lots"),
        ("MCP_LLM_OPENAI_API", "completions"),
        ("MCP_LLM_LOG_LEVEL", "LOUD"),
        ("MCP_LLM_PROGRESS_INTERVAL_S", "-0.1"),
        ("OPENAI_BASE_URL", "localhost:11434/v1"),
        ("ANTHROPIC_BASE_URL", "ftp://api.anthropic.com"),
    ],
)
def test_bad_value_names_the_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A malformed value raises SettingsError naming the environment variable, without echoing the value."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    if len(value) > 2:  # ("0" may well appear in "greater than 0")
        assert value not in message
    assert "\n" not in message


def test_key_pasted_into_wrong_variable_is_not_echoed(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key pasted into a numeric or URL variable is reported by name only."""
    monkeypatch.setenv("MCP_LLM_CONNECT_TIMEOUT_S", "sk-proj-pasted-by-mistake-0123456789")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "sk-ant-pasted-by-mistake-0123456789")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "MCP_LLM_CONNECT_TIMEOUT_S" in message and "ANTHROPIC_BASE_URL" in message
    assert "pasted-by-mistake" not in message


def test_explicit_overrides_win(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword overrides (as tests and embedders pass them) beat the environment, None included."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env-0123456789")
    s = load_settings(_env_file=None, anthropic_api_key=None, max_attempts=2)
    assert s.anthropic_api_key is None and s.max_attempts == 2
    assert isinstance(s, Settings)


# --- the command -----------------------------------------------------------------------------------------


def test_version_flag() -> None:
    """`mcp-llm-server --version` prints the name and version and exits 0."""
    script = Path(sys.executable).with_name("mcp-llm-server")
    completed = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"mcp-llm-server {__version__}"


@pytest.mark.parametrize(
    ("environment", "dotenv", "named"),
    [
        ({"MCP_LLM_CALL_TIMEOUT_S": "-1"}, "", ["MCP_LLM_CALL_TIMEOUT_S"]),
        # A key pasted into a URL variable, and a second bad value, both in `.env`: one line names both.
        (
            {},
            "OPENAI_BASE_URL=sk-proj-pasted-by-mistake-0123456789\nMCP_LLM_MAX_ATTEMPTS=0\n",
            ["OPENAI_BASE_URL", "MCP_LLM_MAX_ATTEMPTS"],
        ),
    ],
    ids=["negative-timeout-in-environment", "bad-url-and-attempts-in-dotenv"],
)
def test_bad_setting_stops_the_server(
    tmp_path: Path, environment: dict[str, str], dotenv: str, named: list[str]
) -> None:
    """A malformed setting (environment or `.env`) exits 2 with one stderr line naming it; no value, no traceback."""
    if dotenv:
        (tmp_path / ".env").write_text(dotenv, encoding="utf-8")
    completed = run_server(env={**KEYS, "MCP_LLM_LOG_LEVEL": "DEBUG", **environment}, cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stdout == ""
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("mcp-llm-server: configuration error: ")
    assert all(name in lines[0] for name in named)
    assert "Traceback" not in completed.stderr
    assert "pasted-by-mistake" not in completed.stderr
    assert all(key not in completed.stderr for key in KEYS.values())
