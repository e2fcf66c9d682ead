"""The `mcp-llm-server` command: serve over stdio (the default) or run the offline demo."""

from __future__ import annotations

import argparse
import sys

from . import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-llm-server",
        description="An MCP server that asks OpenAI and Anthropic models. Configured by environment "
        "variables (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve MCP over stdio (the default)")
    commands.add_parser("demo", help="offline demo: a local stand-in provider, this server, and a real MCP client")
    return parser


def _serve() -> int:
    import anyio

    from .logs import configure_logging
    from .redact import Redactor
    from .server import build_server
    from .settings import SettingsError, load_settings
    from .stdio import serve_stdio

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"mcp-llm-server: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, Redactor(settings.secrets()))
    server = build_server(settings)
    anyio.run(lambda: serve_stdio(server, max_message_bytes=settings.max_message_bytes))
    return 0


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        sys.exit(run_demo())
    try:
        code = _serve()
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
