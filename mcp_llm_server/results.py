"""The structured results tools return (their JSON Schemas are published as the tools' output schemas)."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["AskResult", "TokenUsage"]


class TokenUsage(BaseModel):
    input_tokens: int | None = Field(description="Tokens in the request, as the provider counted them.")
    output_tokens: int | None = Field(description="Tokens in the answer, as the provider counted them.")


class AskResult(BaseModel):
    text: str = Field(description="The model's answer.")
    provider: str = Field(description="`openai` or `anthropic`.")
    model: str = Field(description="The model that answered, as the provider named it.")
    stop_reason: str | None = Field(
        description="Why the answer ended: end, max_tokens, stop_sequence, content_filter, refusal "
        "(or the provider's own word)."
    )
    usage: TokenUsage
    latency_ms: float = Field(description="Wall time of the whole call, retries included.")
    attempts: int = Field(description="Upstream requests made (1 unless a transient failure was retried).")
    request_id: str | None = Field(description="The provider's request id, for support tickets.")
