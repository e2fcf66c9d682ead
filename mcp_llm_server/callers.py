"""Who is calling, and what of the stored data they may see.

A caller is a string kept with everything it makes (ledger rows, conversations, detached answers):
- `stdio`: the local host; it owns everything, as the single local user always has.
- `http:open` (loopback HTTP without a token) and `http:token` (the one `MCP_LLM_HTTP_TOKEN`).
- `token:<name>`: a named token of `MCP_LLM_HTTP_TOKENS`.
- `oauth:<subject>`: an OAuth access token's subject (`sub`), from the configured issuer.

The prefixes keep the kinds apart: no token name can pass for an OAuth subject or for the local user.
When HTTP callers can be told apart (named tokens or OAuth configured), each one sees only its own data, and an
id of another caller's behaves as if it did not exist; the admin caller (`MCP_LLM_ADMIN_CALLER`) sees everyone's.
Otherwise there is a single user, who sees everything, as before callers existed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CALLER_SCOPE_KEY", "LOCAL", "MAX_CALLER_CHARS", "OAUTH_PREFIX", "TOKEN_PREFIX", "Caller"]

# Where the HTTP gate leaves the authenticated caller's id in the ASGI scope (which the SDK hands to tools).
CALLER_SCOPE_KEY = "mcp_llm_server.caller"

MAX_CALLER_CHARS = 128  # the stored caller columns; an OAuth subject longer than fits is refused
TOKEN_PREFIX = "token:"
OAUTH_PREFIX = "oauth:"


@dataclass(frozen=True, slots=True)
class Caller:
    id: str
    sees_all: bool  # the single user (stdio, or HTTP when callers are not told apart) or the admin

    def owns(self, owner: str | None) -> bool:
        """Whether a row made by `owner` (None: made before callers were recorded) is this caller's to see."""
        return self.sees_all or owner == self.id

    @property
    def scope(self) -> str | None:
        """The owner to filter stored rows by; None: no filter."""
        return None if self.sees_all else self.id


LOCAL = Caller("stdio", sees_all=True)
