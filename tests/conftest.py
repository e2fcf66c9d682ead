"""Shared fixtures: the stand-in provider, settings pointing at it, and MCP clients over the real server."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent

from mcp_llm_server import state as state_module
from mcp_llm_server._standin import StandIn
from mcp_llm_server.render import ERROR_META_KEY
from mcp_llm_server.server import build_server
from mcp_llm_server.settings import Settings, load_settings
from mcp_llm_server.state import AppState

OPENAI_KEY = "sk-test-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"

# Fast retries so fault tests take milliseconds; behaviour is otherwise the production one.
FAST = {
    "backoff_initial_s": 0.01,
    "backoff_max_s": 0.05,
    "progress_interval_s": 0.05,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def states(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[AppState]]:
    """The AppState of every server started in the test (to look at its limiters)."""
    built: list[AppState] = []
    original = state_module.build_state

    def capture(settings: Settings) -> AppState:
        built.append(original(settings))
        return built[-1]

    monkeypatch.setattr(state_module, "build_state", capture)
    yield built


# Conversations of subprocess servers go to a database of the test session, never the user's data directory.
_SESSION_DB_URL = ""


@pytest.fixture(autouse=True, scope="session")
def _session_database(tmp_path_factory: pytest.TempPathFactory) -> None:
    global _SESSION_DB_URL
    _SESSION_DB_URL = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('store') / 'conversations.db'}"


@pytest.fixture
def make_settings(standin: StandIn, tmp_path: Path) -> SettingsFactory:
    """Settings pointing at the stand-in, with both keys set and a database of the test's own; overrides win."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "openai_api_key": OPENAI_KEY,
            "anthropic_api_key": ANTHROPIC_KEY,
            "openai_base_url": standin.openai_base_url,
            "anthropic_base_url": standin.anthropic_base_url,
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'conversations.db'}",
            **FAST,
            **overrides,
        }
        return load_settings(_env_file=None, **values)

    return make


@pytest.fixture
async def client(make_settings: SettingsFactory) -> AsyncIterator[Client]:
    """The real server in memory (2026 protocol era), through the real MCP client."""
    async with Client(build_server(make_settings()), raise_exceptions=True) as c:
        yield c


@pytest.fixture(scope="module")
def upstream() -> Iterator[StandIn]:
    """One stand-in for a module's server subprocesses (they outlive single tests)."""
    with StandIn() as standin:
        yield standin


def server_env(standin: StandIn, **extra: str) -> dict[str, str]:
    """Environment for a stdio subprocess of the server, pointing at the stand-in."""
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "OPENAI_BASE_URL": standin.openai_base_url,
        "ANTHROPIC_BASE_URL": standin.anthropic_base_url,
        "MCP_LLM_BACKOFF_INITIAL_S": "0.01",
        "MCP_LLM_BACKOFF_MAX_S": "0.05",
        "MCP_LLM_PROGRESS_INTERVAL_S": "0.05",
        "MCP_LLM_DATABASE_URL": _SESSION_DB_URL,
    }
    env.update(extra)
    return env


def stdio_params(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "mcp_llm_server"], env=env)


def error_details(result: CallToolResult) -> dict[str, Any]:
    """The machine-readable details of an error result (in `_meta`, since they do not match the output schema)."""
    assert result.is_error
    details = (result.meta or {}).get(ERROR_META_KEY)
    assert isinstance(details, dict), result
    return details


def text_of(result: CallToolResult) -> str:
    """The text blocks of a tool result, joined."""
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


# --- the store's backends: SQLite always, and a real PostgreSQL (.ci/run starts one) ----------------------------

POSTGRES_ENV = "MCP_LLM_TEST_POSTGRES_URL"


async def fresh_postgres_database(admin_url: str) -> str:
    """A new, empty database on the test PostgreSQL; its SQLAlchemy URL."""
    import secrets

    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    name = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, database=url.database
    )
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of the test's own, on each backend the store supports."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    import os

    admin = os.environ.get(POSTGRES_ENV)
    if not admin:
        if os.environ.get("CI") or os.environ.get("MCP_LLM_REQUIRE_POSTGRES"):
            pytest.fail(f"{POSTGRES_ENV} is not set: .ci/run starts a PostgreSQL and sets it")
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} (a postgresql+asyncpg:// URL), or run .ci/run")
    return await fresh_postgres_database(admin)
