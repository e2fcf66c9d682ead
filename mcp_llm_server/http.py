"""Serving MCP over Streamable HTTP: the ASGI app (MCP at `/mcp`, `/healthz`, a bearer token) and its runner.

Responses to tool calls are SSE streams (never `json_response`), so progress notifications reach the client
while the answer is written, in stateful and stateless mode alike. The SDK's DNS-rebinding protection
(Host/Origin checks) stays on whatever the bind address; a bind address other than loopback requires a
bearer token, because every call spends the operator's provider credit.
"""

from __future__ import annotations

import ipaddress
import logging
import resource
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mcp.server import MCPServer
from mcp.server.auth.provider import TokenVerifier
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp

from .http_auth import HEALTH_PATH, AuthGate, HttpAuth
from .http_limits import BodyDeadline, CancelOnDrop, SessionRetryAfter, guarded_protocol
from .settings import Settings

if TYPE_CHECKING:
    from .oauth import JwtVerifier

__all__ = [
    "HEALTH_PATH",
    "MCP_PATH",
    "HttpConfigError",
    "build_http_app",
    "check_exposure",
    "connection_limit",
    "is_loopback",
    "oauth_verifier",
    "serve_http",
    "transport_security",
]

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"

# Open SSE streams are closed at once on shutdown (sse-starlette); this only bounds anything else in flight.
_SHUTDOWN_GRACE_S = 5
_LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
# File descriptors kept free beside the client connections: upstream connections, the store, logs.
_FD_RESERVE = 128
_SESSION_RETRY_AFTER_MAX_S = 60.0


class HttpConfigError(Exception):
    """The HTTP transport cannot start as configured; the message says what to set."""


def is_loopback(host: str) -> bool:
    """True for a bind address reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse to serve beyond loopback without a bearer token."""
    authenticated = settings.http_token is not None or settings.callers_told_apart
    if not is_loopback(host) and not authenticated:
        raise HttpConfigError(
            f"refusing to listen on {host} without a bearer token: set MCP_LLM_HTTP_TOKEN "
            "(at least 16 characters), MCP_LLM_HTTP_TOKENS or MCP_LLM_OAUTH_ISSUER, or bind to 127.0.0.1"
        )


def _host_patterns(entry: str) -> list[str]:
    """`name` allows the name with and without a port; `name:port` and `name:*` are taken as they are."""
    entry = entry.strip().lower()
    has_port = entry.rsplit("]", 1)[-1].count(":") == 1 if entry.startswith("[") else ":" in entry
    return [entry] if has_port else [entry, f"{entry}:*"]


def transport_security(settings: Settings, host: str) -> TransportSecuritySettings:
    """DNS-rebinding protection: loopback names, the bind address and the configured hosts and origins."""
    hosts = [p for name in _LOOPBACK_HOSTS for p in _host_patterns(name)]
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or not (address.is_unspecified or address.is_loopback):  # a concrete name or address
        hosts += _host_patterns(f"[{address}]" if address is not None and address.version == 6 else host)
    for entry in settings.http_allowed_hosts:
        hosts += _host_patterns(entry)
    origins = [f"http://{name}:*" for name in _LOOPBACK_HOSTS] + [f"http://{name}" for name in _LOOPBACK_HOSTS]
    origins += [origin.strip().rstrip("/") for origin in settings.http_allowed_origins]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys(hosts)),
        allowed_origins=list(dict.fromkeys(origins)),
    )


def build_http_app(
    server: MCPServer, settings: Settings, *, host: str, stateless: bool, oauth: TokenVerifier | None = None
) -> ASGIApp:
    """The ASGI app: MCP Streamable HTTP at `/mcp` (SSE responses), `/healthz`, the bearer-token gate (with
    `oauth` checking access tokens when given; see `oauth_verifier`).

    Its lifespan (run by uvicorn, or any ASGI server) starts the SDK's session manager, which enters the MCP
    server's lifespan once for all sessions: one shared client per provider, as over stdio.
    """
    mcp_app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        json_response=False,
        stateless_http=stateless,
        max_request_body_size=settings.max_message_bytes,
        session_idle_timeout=settings.http_session_idle_s,
        max_sessions=settings.http_max_sessions,
        transport_security=transport_security(settings, host),
        host=host,
    )
    app: ASGIApp = mcp_app
    if not stateless:
        app = SessionRetryAfter(CancelOnDrop(app), min(settings.http_session_idle_s, _SESSION_RETRY_AFTER_MAX_S))
    return BodyDeadline(AuthGate(app, HttpAuth.from_settings(settings, oauth)), settings.http_body_timeout_s)


def connection_limit(wanted: int) -> int:
    """The connection limit the file-descriptor limit allows: the soft limit is raised (up to the hard one) to
    hold `wanted` connections plus a reserve; if it cannot be, the connection limit is lowered, with a warning.
    Otherwise accept() would fail with EMFILE before the limit is reached, and no new client would get in."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    allowed = soft - _FD_RESERVE
    if allowed < 1:
        raise HttpConfigError(f"the file-descriptor limit ({soft}) is too low: raise it (`ulimit -n`)")
    logger.warning(
        "MCP_LLM_HTTP_MAX_CONNECTIONS=%d needs %d file descriptors, the limit is %d: at most %d connections",
        wanted,
        needed,
        soft,
        allowed,
    )
    return allowed


@contextmanager
def _sigterm_ends_quietly() -> Iterator[None]:
    """uvicorn shuts down gracefully on SIGTERM, then raises the signal again for whatever handler was there
    before it; with a no-op one the process exits 0 once the lifespan has closed the upstream clients."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def serve_http(server: MCPServer, settings: Settings, *, host: str, port: int, stateless: bool) -> None:
    """Serve until SIGTERM or SIGINT; refuses (`HttpConfigError`) a non-loopback host without a token."""
    import uvicorn

    check_exposure(settings, host)
    oauth = oauth_verifier(settings)
    app = build_http_app(server, settings, host=host, stateless=stateless, oauth=oauth)
    # No log config of uvicorn's own: its records go to our stderr handler (redacted), at our level.
    logging.getLogger("uvicorn").setLevel(settings.log_level)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=_SHUTDOWN_GRACE_S,
        http=guarded_protocol(connection_limit(settings.http_max_connections), settings.http_header_timeout_s),
    )
    if not settings.http_allowed_hosts and not is_loopback(host):
        logger.warning(
            "MCP_LLM_HTTP_ALLOWED_HOSTS is empty: requests are accepted only with a loopback or %s Host header "
            "(others get 421); list the names clients use",
            host,
        )
    mode = "stateless" if stateless else "stateful"
    where = f"[{host}]" if ":" in host else host
    logger.info("serving MCP (%s) at http://%s:%d%s", mode, where, port, MCP_PATH)
    try:
        with _sigterm_ends_quietly():
            await uvicorn.Server(config).serve()
    finally:
        if oauth is not None:
            await oauth.aclose()


def oauth_verifier(settings: Settings) -> JwtVerifier | None:
    """The access-token check of `MCP_LLM_OAUTH_ISSUER`, when set (its keys are fetched on the first token)."""
    if settings.oauth_issuer is None:
        return None
    from .oauth import JwtVerifier  # PyJWT and cryptography: only when OAuth is on (about 60 ms to import)

    assert settings.oauth_resource_url is not None  # the settings require it with the issuer
    for variable, url in (
        ("MCP_LLM_OAUTH_ISSUER", settings.oauth_issuer),
        ("MCP_LLM_OAUTH_JWKS_URL", settings.oauth_jwks_url),
    ):
        host = urlsplit(url or "").hostname
        if url is not None and url.startswith("http://") and host is not None and not is_loopback(host):
            logger.warning(
                "%s is plain http:// beyond loopback: the keys tokens are checked with can be forged in transit",
                variable,
            )
    return JwtVerifier(
        issuer=settings.oauth_issuer, audience=settings.oauth_resource_url, jwks_url=settings.oauth_jwks_url
    )
