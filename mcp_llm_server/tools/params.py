"""Tool arguments shared by several tools: their types, constraints and descriptions (the host's model reads them)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

__all__ = [
    "ConversationId",
    "Files",
    "MaxTokens",
    "Model",
    "Prompt",
    "ReasoningEffortArg",
    "System",
    "Temperature",
    "TimeoutS",
]

Prompt = Annotated[
    str,
    Field(
        min_length=1,
        description="The question or task for the model. Include all the context it needs: "
        "it sees nothing of this conversation.",
    ),
]
System = Annotated[
    str | None,
    Field(description="Optional system instructions (role, tone, format) for the model."),
]
Model = Annotated[
    str | None,
    Field(
        min_length=1,
        description="Model name as the provider spells it, or an alias this server defines; `list_models` "
        "lists both. Omit to use the server's default model.",
    ),
]
TargetModel = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="Who to ask: `provider:model` (e.g. `openai:gpt-5.5`, `ollama:qwen3`), a provider alone (its "
        "default model), or an alias. `list_models` lists the providers, their models and the aliases.",
    ),
]
MaxTokens = Annotated[
    int | None,
    Field(ge=1, le=200_000, description="Upper bound on the answer's length in tokens. Omit for the default."),
]
Temperature = Annotated[
    float | None,
    Field(
        ge=0,
        le=2,
        description="Sampling temperature, 0 (focused) to 2 (varied). Omit for the model's default; "
        "some reasoning models accept only their default.",
    ),
]
TimeoutS = Annotated[
    float | None,
    Field(
        gt=0,
        le=3600,
        description="Give up after this many seconds for the whole call, retries included. "
        "Omit for the server's default.",
    ),
]
ReasoningEffortArg = Annotated[
    Literal["low", "medium", "high"] | None,
    Field(
        description="Let the model reason before answering: `low`, `medium` or `high` effort (OpenAI reasoning "
        "effort; Anthropic extended thinking with a budget of 2,048, 8,192 or 16,384 tokens, added to max_tokens). "
        "Its reasoning summary streams as progress marked `[reasoning]`. Omit for the model's default "
        "(no extended thinking on Anthropic).",
    ),
]
ConversationId = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=64,
        description="Continue this conversation: its earlier turns (prompts, system text, files and answers) are sent "
        "to the model before your prompt, whichever provider they were asked of. Every result carries a "
        "`conversation_id` (a new one when you give none); `list_conversations` shows them.",
    ),
]
Files = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=4096)]] | None,
    Field(
        max_length=50,
        description="Paths of files the server reads and sends with the prompt, each labelled with its path "
        "(saves pasting them): text, or PNG/JPEG/GIF/WebP images and PDFs, sent as image or document input. "
        "Relative paths start at the server's first allowed root (MCP_LLM_FILE_ROOTS, else the client's MCP "
        "roots); files outside the roots, secrets (by name or content), special and other binary files and files "
        "over the size caps are refused before any model call.",
    ),
]
