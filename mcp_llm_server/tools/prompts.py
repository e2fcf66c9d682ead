"""Prompts hosts show as slash commands, each a message that steers the host's model to this server's tools.

- `second_opinion`: another model's answer to a question, compared with the host model's own view.
- `judge`: several models answer; the host model labels their answers A, B, C… (not by model, so the name does not
  sway it) and says where they agree and differ, which it trusts and why.
- `review_files`: another model reviews files (read by this server, within its file roots) with a focus.

A prompt is offered only while the tools it names are exposed (`MCP_LLM_TOOLS`, `MCP_LLM_DISABLED_TOOLS`).
"""

from __future__ import annotations

import re
from typing import Annotated

from mcp.server import MCPServer
from pydantic import Field

from ..sdk_adapter import registered_tools

__all__ = ["register_prompts"]

MAX_ARGUMENT_CHARS = 100_000  # a question or a list of paths; the tools have their own limits after that

Question = Annotated[str, Field(min_length=1, max_length=MAX_ARGUMENT_CHARS, description="The question to ask.")]
Target = Annotated[
    str | None,
    Field(
        max_length=200,
        description="Who answers: `openai`, `anthropic`, `provider:model` or an alias (list_models shows them). "
        "Default: a model of the other provider than yours.",
    ),
]
Targets = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        description="Who answers, comma-separated: `openai`, `anthropic`, `provider:model` or aliases, e.g. "
        "`openai, anthropic:claude-opus-5`.",
    ),
]
Paths = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ARGUMENT_CHARS,
        description="The files to review, separated by commas or new lines (paths this server may read).",
    ),
]
Focus = Annotated[
    str,
    Field(
        max_length=2000,
        description="What the review should look for (bugs, security, naming...). Default: correctness.",
    ),
]


def _items(text: str) -> list[str]:
    return [item.strip() for item in re.split(r"[,\n]", text) if item.strip()]


def _quoted(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def second_opinion(question: Question, target: Target = None) -> str:
    """Ask another model the question and compare its answer with your own."""
    ask = (
        f'call `ask_many` with `targets` = ["{target}"] and `prompt` = the question below'
        if target
        else "call `ask_openai` with `prompt` = the question below (or `ask_claude` if you are an OpenAI model "
        "yourself: the second opinion should come from another model family)"
    )
    return (
        f"I want a second opinion from another model. Using the mcp-llm-server tools, {ask}. The other model "
        "sees nothing of our conversation, so the prompt must hold the whole question and the context it needs.\n"
        "Then answer me: your own view, the other model's, where they agree, where they differ, and what you "
        "conclude (say which points you checked rather than took on trust).\n\n"
        f"The question:\n{question}"
    )


def judge(question: Question, targets: Targets) -> str:
    """Ask several models the question and judge their answers, labelled A, B, C… rather than by model."""
    return (
        "I want several models to answer this, and you to judge their answers. Using the mcp-llm-server tools, "
        f"call `ask_many` with `targets` = {_quoted(_items(targets))} and `prompt` = the question below (the models "
        "see nothing of our conversation, so the prompt must be self-contained).\n"
        "Then label the answers A, B, C… in the order they come back, and refer to them only by label, not by "
        "model, so the name does not sway you. Say where they agree, where they differ, which answer you trust "
        "most and why, and give your own synthesis. A target that failed is reported with its error: say so and "
        "judge the others.\n\n"
        f"The question:\n{question}"
    )


def review_files(paths: Paths, focus: Focus = "") -> str:
    """Have another model review files (read by this server) with a focus, and check its findings."""
    files = _items(paths)
    looking_for = focus.strip() or "correctness: bugs, unhandled cases, wrong assumptions"
    return (
        "I want another model to review some files. Using the mcp-llm-server tools, call `ask_claude` (or "
        f"`ask_openai` if you are a Claude model yourself) with `files` = {_quoted(files)} and a `prompt` asking for "
        f"a review focused on {looking_for}: each finding with its file and line, why it matters and a concrete "
        "fix, most important first, and nothing about style unless it hides a defect.\n"
        "Then give me the findings you agree with after checking them against the files yourself, and say which "
        "ones you dismissed and why. If the server refuses a file (outside its roots, too large, or looking like "
        "a secret), tell me what it said."
    )


_PROMPTS = (
    (second_opinion, "A second opinion", {"ask_openai", "ask_claude", "ask_many"}),
    (judge, "Several models, judged", {"ask_many"}),
    (review_files, "A review of files by another model", {"ask_openai", "ask_claude"}),
)


def register_prompts(server: MCPServer) -> None:
    """Register the prompts whose tools are exposed (call after the tool toggles are applied)."""
    exposed = {tool.name for tool in registered_tools(server)}
    for function, title, tools in _PROMPTS:
        if tools <= exposed:
            description = (function.__doc__ or "").strip() or None
            server.prompt(name=function.__name__, title=title, description=description)(function)
