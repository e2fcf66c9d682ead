"""Logging to stderr only (stdout is the protocol in stdio mode), with API keys redacted."""

from __future__ import annotations

import logging
import sys

from .redact import RedactingFilter, Redactor

__all__ = ["MCP_TO_PYTHON_LEVEL", "configure_logging"]

MCP_TO_PYTHON_LEVEL = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "emergency": logging.CRITICAL,
}


def configure_logging(level: str, redactor: Redactor) -> None:
    """Send every logger's records to stderr through the redactor; our own loggers at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("mcp_llm_server").setLevel(level)
