"""The prompts hosts show as slash commands, through the real MCP client: listed, rendered, refused when an argument
is missing, offered only with the tools they name, and steering to calls the tools accept."""

from __future__ import annotations

import re

import pytest
from conftest import SettingsFactory
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_llm_server._standin import StandIn
from mcp_llm_server.server import build_server

pytestmark = pytest.mark.anyio


def text_of_prompt(result: object) -> str:
    messages = result.messages  # type: ignore[attr-defined]
    assert len(messages) == 1 and messages[0].role == "user"
    text: str = messages[0].content.text
    return text


async def test_the_prompts_are_listed_with_their_arguments(make_settings: SettingsFactory) -> None:
    async with Client(build_server(make_settings())) as client:
        prompts = {prompt.name: prompt for prompt in (await client.list_prompts()).prompts}
    assert set(prompts) == {"second_opinion", "judge", "review_files"}
    arguments = {name: [(a.name, a.required) for a in p.arguments or []] for name, p in prompts.items()}
    assert arguments == {
        "second_opinion": [("question", True), ("target", False)],
        "judge": [("question", True), ("targets", True)],
        "review_files": [("paths", True), ("focus", False)],
    }
    assert all(p.description and p.title for p in prompts.values())


async def test_each_prompt_names_its_tools_and_carries_the_arguments(make_settings: SettingsFactory) -> None:
    async with Client(build_server(make_settings())) as client:
        plain = text_of_prompt(await client.get_prompt("second_opinion", {"question": "Why is the sky blue?"}))
        aimed = text_of_prompt(
            await client.get_prompt("second_opinion", {"question": "Why?", "target": "anthropic:claude-x"})
        )
        judged = text_of_prompt(await client.get_prompt("judge", {"question": "Q?", "targets": "openai,\nfast"}))
        review = text_of_prompt(
            await client.get_prompt("review_files", {"paths": "src/a.py,\n src/b.py", "focus": "security"})
        )
    assert "`ask_openai`" in plain and "Why is the sky blue?" in plain
    assert '`targets` = ["anthropic:claude-x"]' in aimed and "`ask_many`" in aimed
    assert '`targets` = ["openai", "fast"]' in judged and "A, B, C" in judged
    assert '`files` = ["src/a.py", "src/b.py"]' in review and "focused on security" in review


async def test_a_missing_argument_is_refused(make_settings: SettingsFactory) -> None:
    async with Client(build_server(make_settings())) as client:
        with pytest.raises(MCPError, match="targets"):
            await client.get_prompt("judge", {"question": "Q?"})


async def test_a_prompt_is_offered_only_with_its_tools(make_settings: SettingsFactory) -> None:
    async with Client(build_server(make_settings(disabled_tools="ask_many"))) as client:
        names = {prompt.name for prompt in (await client.list_prompts()).prompts}
    assert names == {"review_files"}


async def test_the_judge_prompt_steers_to_a_call_ask_many_accepts(
    make_settings: SettingsFactory, standin: StandIn
) -> None:
    """What the prompt tells the model to send is a valid ask_many call: both targets answer."""
    async with Client(build_server(make_settings())) as client:
        text = text_of_prompt(await client.get_prompt("judge", {"question": "Q?", "targets": "openai, anthropic"}))
        targets = re.findall(r'"([^"]+)"', re.search(r"`targets` = \[([^\]]*)\]", text).group(1))  # type: ignore[union-attr]
        result = await client.call_tool("ask_many", {"prompt": "Q?", "targets": targets})
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["succeeded"] == 2
