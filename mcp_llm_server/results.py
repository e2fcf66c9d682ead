"""The structured results tools return (their JSON Schemas are published as the tools' output schemas)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from .providers.base import Usage

__all__ = ["AskManyResult", "AskResult", "DetachFields", "TargetAnswer", "TargetError", "TokenUsage"]


class TokenUsage(BaseModel):
    input_tokens: int | None = Field(description="Tokens in the request, as the provider counted them.")
    output_tokens: int | None = Field(description="Tokens in the answer, as the provider counted them.")
    reasoning_tokens: int | None = Field(
        default=None,
        description="Of output_tokens, those spent reasoning (OpenAI reasoning tokens, Anthropic thinking tokens); "
        "null when the provider reports no separate count.",
    )
    cached_input_tokens: int | None = Field(
        default=None,
        description="Of the input, tokens read from the provider's prompt cache (Anthropic cache_read_input_tokens, "
        "OpenAI cached_tokens); null when not reported.",
    )

    @classmethod
    def of(cls, usage: Usage) -> TokenUsage:
        return cls(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cached_input_tokens=usage.cached_input_tokens,
        )


class DetachFields(BaseModel):
    """How a model tool's result says whether it is whole, or the call goes on in the server (it detached)."""

    status: Literal["complete", "running"] = Field(
        default="complete",
        description="`complete`: the whole result. `running`: the call outlived MCP_LLM_DETACH_AFTER_S and goes on "
        "in the server; the answer text is what was written so far: call get_answer with `answer_id` for the rest.",
    )
    answer_id: str | None = Field(
        default=None,
        description="Set when the call detached from its request: get_answer and cancel_answer take it.",
    )
    elapsed_s: float | None = Field(default=None, description="Seconds since the call started (running results).")
    next_step: str | None = Field(default=None, description="What to do next (running results).")


class SkippedTarget(BaseModel):
    """A failover target that could not answer: `kind` as in errors (connection, not_found...)."""

    target: str
    kind: str
    reason: str


class AskResult(DetachFields):
    text: str = Field(description="The model's answer.")
    truncated: bool = Field(default=False, description="Whether `text` was cut to the server's output cap.")
    omitted_chars: int = Field(default=0, description="Characters cut from the end of `text`.")
    truncation_note: str | None = Field(
        default=None, description="How much was cut, and where to read the whole answer (null when nothing was)."
    )
    provider: str = Field(description="The provider that answered: `openai`, `anthropic` or a named one.")
    model: str = Field(description="The model that answered, as the provider named it.")
    stop_reason: str | None = Field(
        description="Why the answer ended: end, max_tokens, stop_sequence, content_filter, refusal "
        "(or the provider's own word)."
    )
    usage: TokenUsage
    cost_usd: float | None = Field(
        default=None,
        description="What this answer cost in USD (genai-prices, or MCP_LLM_MODEL_PRICES); null when the model's "
        "price is unknown (see cost_note).",
    )
    cost_note: str | None = Field(default=None, description="Why cost_usd is null, or where its price came from.")
    latency_ms: float = Field(description="Wall time of the whole call, retries included.")
    attempts: int = Field(description="Upstream requests made (1 unless a transient failure was retried).")
    request_id: str | None = Field(description="The provider's request id, for support tickets.")
    conversation_id: str | None = Field(
        default=None,
        description="The conversation this turn was saved to: pass it as `conversation_id` to continue "
        "(null only when it could not be saved).",
    )
    turns_omitted: int = Field(
        default=0, description="Earliest turns of the conversation left out to fit MCP_LLM_HISTORY_MAX_CHARS."
    )
    notes: list[str] | None = Field(
        default=None,
        description="What went wrong around a complete answer (it could not be saved, its cost could not be "
        "recorded); null when nothing did.",
    )
    skipped: list[SkippedTarget] | None = Field(
        default=None, description="Failover targets tried before the one that answered; null when none was."
    )


class TargetError(BaseModel):
    kind: str = Field(
        description="What went wrong: not_configured, rate_limited, overloaded, server_error, authentication, "
        "permission, bad_request, not_found, timeout, stalled, connection, stream_error, deadline, internal..."
    )
    message: str = Field(description="What happened and what to do, in words.")
    status: int | None = Field(description="The upstream HTTP status, when there was one.")
    request_id: str | None = Field(description="The provider's request id, when there was one.")
    retryable: bool = Field(description="Whether calling again may succeed.")
    partial_text: str = Field(description="Answer text received before a stream broke (often empty).")


class TargetAnswer(BaseModel):
    target: str = Field(description="The target as `provider:model` (the default model filled in).")
    provider: str = Field(description="`openai` or `anthropic`.")
    model: str = Field(description="The model that answered as the provider named it, or the model asked for.")
    text: str | None = Field(description="The answer; null when this target failed.")
    truncated: bool = Field(
        default=False,
        description="Whether `text` (for a failed target, `error.partial_text`) was cut to the server's output cap.",
    )
    omitted_chars: int = Field(default=0, description="Characters cut from the end of it.")
    truncation_note: str | None = Field(
        default=None, description="How much was cut, and where to read the whole answer (null when nothing was)."
    )
    stop_reason: str | None = Field(description="Why the answer ended (see ask_openai); null on failure.")
    usage: TokenUsage | None = Field(description="Token usage; null on failure.")
    cost_usd: float | None = Field(
        default=None,
        description="What this answer cost in USD (genai-prices, or MCP_LLM_MODEL_PRICES); null when the model's "
        "price is unknown (see cost_note).",
    )
    cost_note: str | None = Field(default=None, description="Why cost_usd is null, or where its price came from.")
    latency_ms: float = Field(description="Wall time of this target, retries and any wait for a free slot included.")
    attempts: int = Field(description="Upstream requests made for this target (0 if none was made).")
    request_id: str | None = Field(description="The provider's request id, for support tickets.")
    error: TargetError | None = Field(description="Why this target failed; null when it answered.")
    skipped: list[SkippedTarget] | None = Field(
        default=None, description="Failover targets tried before the one that answered; null when none was."
    )


class AskManyResult(DetachFields):
    answers: list[TargetAnswer] = Field(description="One entry per target, in the order the targets were given.")
    judgment: TargetAnswer | None = Field(
        default=None,
        description="The judge's synthesis (`text`), or why the judge failed (`error`); null without a judge.",
    )
    labels: dict[str, str] | None = Field(
        default=None, description="What the judge saw each answer as: label (A, B…) to target; null without a judge."
    )
    succeeded: int = Field(description="Targets that answered.")
    failed: int = Field(description="Targets that failed (their entries carry `error`).")
    cost_usd: float | None = Field(
        default=None,
        description="What the answers cost together in USD; null when an answer's price is unknown (then "
        "cost_note says which).",
    )
    cost_note: str | None = Field(default=None, description="Why cost_usd is null.")
    latency_ms: float = Field(description="Wall time of the whole fan-out.")
    conversation_id: str | None = Field(
        default=None,
        description="The conversation the answers were saved to (one turn per answer): pass it as `conversation_id` "
        "to continue (null when nothing could be saved).",
    )
    turns_omitted: int = Field(
        default=0, description="Earliest turns of the conversation left out to fit MCP_LLM_HISTORY_MAX_CHARS."
    )
    notes: list[str] | None = Field(
        default=None,
        description="What went wrong around a complete answer (it could not be saved, its cost could not be "
        "recorded); null when nothing did.",
    )
