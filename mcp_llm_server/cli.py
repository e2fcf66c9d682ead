"""The `mcp-llm-server` command: serve over stdio (the default) or Streamable HTTP, or run the offline demo."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from . import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-llm-server",
        description="An MCP server that asks OpenAI and Anthropic models. Configured by environment "
        "variables (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_serve_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command")
    _add_serve_options(commands.add_parser("serve", help="serve MCP (the default)"), defaults=False)
    commands.add_parser("demo", help="offline demo: a local stand-in provider, this server, and a real MCP client")
    return parser


def _port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return port


def _add_serve_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The transport options, on the top level and on `serve` (there without defaults, not to mask the top's)."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--transport", choices=["stdio", "http"], default=default("stdio"), help="default: stdio")
    parser.add_argument("--host", default=default(None), help="http: address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=default(None), help="http: port (default 8000)")
    parser.add_argument(
        "--stateless",
        action="store_true",
        default=default(False),
        help="http: no sessions, so replicas can sit behind a plain load balancer (or MCP_LLM_HTTP_STATELESS=1)",
    )


def _serve(args: argparse.Namespace) -> int:
    from .settings import SettingsError, load_settings

    try:
        settings = load_settings()  # before the heavy imports, so a bad setting is reported at once
    except SettingsError as exc:
        print(f"mcp-llm-server: configuration error: {exc}", file=sys.stderr)
        return 2

    import anyio

    from .logs import configure_logging
    from .redact import Redactor
    from .server import build_server
    from .stdio import serve_stdio

    configure_logging(settings.log_level, Redactor(settings.secrets()))
    try:
        server = build_server(settings)  # checks MCP_LLM_TOOLS / MCP_LLM_DISABLED_TOOLS against the tools
    except SettingsError as exc:
        print(f"mcp-llm-server: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.transport == "http":
        from .http import HttpConfigError, check_exposure, serve_http

        host = args.host or "127.0.0.1"
        try:
            check_exposure(settings, host)
        except HttpConfigError as exc:
            print(f"mcp-llm-server: {exc}", file=sys.stderr)
            return 2
        stateless = args.stateless or settings.http_stateless
        try:
            anyio.run(lambda: serve_http(server, settings, host=host, port=args.port or 8000, stateless=stateless))
        except HttpConfigError as exc:  # e.g. a file-descriptor limit too low for any connection
            print(f"mcp-llm-server: {exc}", file=sys.stderr)
            return 2
        return 0
    anyio.run(lambda: serve_stdio(server, max_message_bytes=settings.max_message_bytes))
    _exit_at_once(0)


def _exit_at_once(code: int) -> NoReturn:
    """Exit without finalising the interpreter: tearing down the provider SDKs' objects takes seconds on a busy
    machine, and a host that closed stdin or sent SIGTERM expects the server gone at once. Everything is closed
    already (the lifespan closed the clients); only the logs and std streams need flushing."""
    import contextlib
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.transport != "http" and (args.host is not None or args.port is not None or args.stateless):
        parser.error("--host, --port and --stateless need --transport http")
    if args.command == "demo":
        from .demo import run_demo

        sys.exit(run_demo())
    try:
        code = _serve(args)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
