"""The stand-in provider in its own process, so it never competes for the benchmark client's GIL.

(In one process, a direct SDK call and the stand-in share one interpreter, while a call through the MCP server
parses in the server's process: the baseline would be handicapped.)
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from mcp_llm_server._standin import Reply, StandIn

__all__ = ["RemoteStandIn"]


def _serve(conn: Connection) -> None:
    with StandIn() as standin:
        conn.send((standin.openai_base_url, standin.anthropic_base_url))
        while True:
            command, argument = conn.recv()
            if command == "stop":
                conn.send(None)
                return
            if command == "default_reply":
                standin.default_reply = argument
                conn.send(None)
            elif command == "clear":
                standin.clear()
                conn.send(None)
            elif command == "reset_peak":
                standin.reset_peak()
                conn.send(None)
            elif command == "peak":
                conn.send(standin.peak_open_requests)
            elif command == "last_delta_sent_at":
                conn.send(list(standin.requests[-1].delta_sent_at))


class RemoteStandIn:
    """The part of `StandIn`'s API the benchmark uses, served from a child process."""

    def __init__(self) -> None:
        self._conn, theirs = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(target=_serve, args=(theirs,), daemon=True)

    def __enter__(self) -> RemoteStandIn:
        self._process.start()
        self.openai_base_url, self.anthropic_base_url = self._conn.recv()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._ask("stop")
        self._process.join(5)

    def _ask(self, command: str, argument: Any = None) -> Any:
        self._conn.send((command, argument))
        return self._conn.recv()

    @property
    def default_reply(self) -> Reply:
        raise AttributeError("write-only")

    @default_reply.setter
    def default_reply(self, reply: Reply) -> None:
        self._ask("default_reply", reply)

    def clear(self) -> None:
        self._ask("clear")

    def reset_peak(self) -> None:
        self._ask("reset_peak")

    @property
    def peak_open_requests(self) -> int:
        return int(self._ask("peak"))

    def last_delta_sent_at(self) -> list[float]:
        return list(self._ask("last_delta_sent_at"))
