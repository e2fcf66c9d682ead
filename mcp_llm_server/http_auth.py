"""Who an HTTP request comes from: the bearer-token gate in front of `/mcp`, and the OAuth resource metadata.

A request's bearer token is, in turn: the one `MCP_LLM_HTTP_TOKEN` (caller `http:token`), a named token of
`MCP_LLM_HTTP_TOKENS` (caller `token:<name>`), or an OAuth access token of the configured issuer (caller
`oauth:<sub>`). The gate leaves the caller's id in the ASGI scope (`CALLER_SCOPE_KEY`) for the tools, and the
SDK's `user` there, by which the SDK binds a session to the credential that opened it (another caller presenting
that `Mcp-Session-Id` gets 404, as for a session that does not exist).

With OAuth on, the server is an OAuth 2.1 resource server as the MCP authorization spec says: its protected
resource metadata (RFC 9728) is served at `/.well-known/oauth-protected-resource` (and the path-suffixed form), and
a 401 names it in `WWW-Authenticate`; a token without a required scope gets 403 `insufficient_scope`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken, TokenVerifier
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Receive, Scope, Send

from .callers import CALLER_SCOPE_KEY, MAX_CALLER_CHARS, OAUTH_PREFIX, TOKEN_PREFIX
from .http_limits import send_json
from .named_tokens import NamedTokens
from .settings import Settings

__all__ = ["HEALTH_PATH", "METADATA_PATH", "AuthGate", "HttpAuth", "Refusal"]

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
METADATA_PATH = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 401 or 403
    error: str | None  # `invalid_token`, `insufficient_scope`; None when no token was given
    description: str
    scopes: tuple[str, ...] = ()


@dataclass
class HttpAuth:
    """The credentials the server accepts, and how to check a presented one."""

    tokens: NamedTokens = field(default_factory=lambda: NamedTokens({}))  # caller id -> its bearer token
    oauth: TokenVerifier | None = None
    resource_url: str | None = None
    issuer: str | None = None
    required_scopes: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, oauth: TokenVerifier | None = None) -> HttpAuth:
        single = {"http:token": settings.http_token} if settings.http_token is not None else {}
        named = {TOKEN_PREFIX + name: token for name, token in settings.http_tokens.items()}
        return cls(
            tokens=NamedTokens({caller: token.get_secret_value() for caller, token in {**single, **named}.items()}),
            oauth=oauth,
            resource_url=settings.oauth_resource_url,
            issuer=settings.oauth_issuer,
            required_scopes=tuple(settings.oauth_required_scopes),
        )

    @property
    def enabled(self) -> bool:
        return bool(self.tokens) or self.oauth is not None

    @property
    def metadata_paths(self) -> tuple[str, ...]:
        """Where the protected resource metadata is served: the root form and RFC 9728's path-suffixed one."""
        if self.oauth is None or self.resource_url is None:
            return ()
        path = urlsplit(self.resource_url).path.rstrip("/")
        return (METADATA_PATH, METADATA_PATH + path) if path else (METADATA_PATH,)

    def metadata(self) -> dict[str, object]:
        assert self.resource_url is not None and self.issuer is not None
        body: dict[str, object] = {
            "resource": self.resource_url,
            "authorization_servers": [self.issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": "mcp-llm-server",
        }
        if self.required_scopes:
            body["scopes_supported"] = list(self.required_scopes)
        return body

    def metadata_url(self) -> str | None:
        if not self.metadata_paths:
            return None
        assert self.resource_url is not None
        parts = urlsplit(self.resource_url)
        return f"{parts.scheme}://{parts.netloc}{self.metadata_paths[-1]}"

    async def authenticate(self, token: bytes) -> AccessToken | Refusal:
        """The access token a bearer token stands for (its `client_id` is the caller id), or why it is refused."""
        caller = self.tokens.name_of(token)
        if caller is not None:
            return _local_token(caller)
        if self.oauth is not None:
            return await self._oauth_token(token)
        return Refusal(401, "invalid_token", "the bearer token is not valid")

    async def _oauth_token(self, token: bytes) -> AccessToken | Refusal:
        assert self.oauth is not None
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            return Refusal(401, "invalid_token", "the bearer token is not valid")
        verified = await self.oauth.verify_token(text)
        if verified is None or not verified.subject:
            return Refusal(401, "invalid_token", "the access token is not valid (expired, or not for this server)")
        if len(OAUTH_PREFIX + verified.subject) > MAX_CALLER_CHARS:
            return Refusal(401, "invalid_token", f"the token's subject is longer than {MAX_CALLER_CHARS} characters")
        missing = [scope for scope in self.required_scopes if scope not in verified.scopes]
        if missing:
            return Refusal(
                403, "insufficient_scope", f"the access token lacks scope {' '.join(missing)}", self.required_scopes
            )
        return verified.model_copy(update={"client_id": OAUTH_PREFIX + verified.subject})


def _local_token(caller_id: str) -> AccessToken:
    # The session binding compares (client_id, issuer, subject): the caller id alone tells callers apart.
    return AccessToken(token="", client_id=caller_id, scopes=[], subject=caller_id)


class AuthGate:
    """Answers `/healthz` itself (no token: load balancers probe it) and the OAuth metadata; lets the rest through
    only with an accepted bearer token when any is configured, recording the caller in the scope."""

    def __init__(self, app: ASGIApp, auth: HttpAuth) -> None:
        self._app = app
        self._auth = auth
        self._metadata_paths = auth.metadata_paths
        self._metadata_url = auth.metadata_url()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)  # lifespan: starts the session manager and our state
            return
        if scope["path"] == HEALTH_PATH:
            await _answer_get(scope, send, {"status": "ok"})
            return
        if scope["path"] in self._metadata_paths:
            await _answer_get(scope, send, self._auth.metadata(), [(b"access-control-allow-origin", b"*")])
            return
        if self._auth.enabled:
            verdict = await self._check(scope)
            if isinstance(verdict, Refusal):
                await self._refuse(scope, send, verdict)
                return
            scope[CALLER_SCOPE_KEY] = verdict.client_id
            scope["user"] = AuthenticatedUser(verdict)
            scope["auth"] = AuthCredentials(verdict.scopes)
        await self._app(scope, receive, send)

    async def _check(self, scope: Scope) -> AccessToken | Refusal:
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, credentials = given.partition(b" ")
        credentials = credentials.strip()
        if scheme.lower() != b"bearer" or not credentials:
            return Refusal(401, None, "missing bearer token")
        return await self._auth.authenticate(credentials)

    async def _refuse(self, scope: Scope, send: Send, refusal: Refusal) -> None:
        client = (scope.get("client") or ["?"])[0]
        logger.info("refused a request from %s: %s", client, refusal.description)
        await send_json(
            send,
            refusal.status,
            {"error": refusal.error or "invalid_request", "error_description": refusal.description},
            [(b"www-authenticate", self._challenge(refusal).encode())],
        )

    def _challenge(self, refusal: Refusal) -> str:
        parts = ['realm="mcp-llm-server"']
        if refusal.error is not None:
            parts += [f'error="{refusal.error}"', f'error_description="{refusal.description}"']
        if refusal.scopes:
            parts.append(f'scope="{" ".join(refusal.scopes)}"')
        if self._metadata_url is not None:
            parts.append(f'resource_metadata="{self._metadata_url}"')
        return "Bearer " + ", ".join(parts)


async def _answer_get(
    scope: Scope, send: Send, body: dict[str, object], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    if scope["method"] in ("GET", "HEAD"):
        await send_json(send, 200, body, headers)
    else:
        await send_json(send, 405, {"error": "method not allowed"}, [(b"allow", b"GET, HEAD")])
