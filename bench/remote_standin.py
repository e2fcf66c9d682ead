"""The stand-in provider in its own process, so it never competes for the benchmark client's GIL.

(In one process, a direct SDK call and the stand-in share one interpreter, while a call through the MCP server
parses in the server's process: the baseline would be handicapped.)
"""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from mcp_llm_server._standin import RateLimit, RecordedRequest, Reply, StandIn

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
            else:
                conn.send(_limit_command(standin, command, argument))


def _limit_command(standin: StandIn, command: str, argument: Any) -> Any:
    if command == "rate_limit":
        standin.rate_limit = argument
    elif command == "random_delays":  # (low, high): each model request answered after a uniform random delay
        standin.responder = None if argument is None else _random_delays(*argument)
    elif command == "served":  # answered (not refused) model requests: when each came and ended; refusals
        spans = [
            (r.received_at, r.finished_at)
            for r in standin.requests
            if r.reply is not None and r.reply.status == 200 and r.finished_at is not None
        ]
        return spans, standin.refused_requests, standin.peak_admitted_requests
    return None


def _random_delays(low: float, high: float) -> Callable[[RecordedRequest], Reply]:
    rng = random.Random(14)  # the same delays in every run

    def reply(request: RecordedRequest) -> Reply:
        return Reply(text="ok", delay_s=rng.uniform(low, high))

    return reply


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

    def set_rate_limit(self, limit: RateLimit | None) -> None:
        self._ask("rate_limit", limit)

    def random_delays(self, bounds: tuple[float, float] | None) -> None:
        self._ask("random_delays", bounds)

    def served(self) -> tuple[list[tuple[float, float]], int, int]:
        """Since the last `clear` / `reset_peak`: when each answered model request came and ended (the stand-in's
        monotonic clock), the requests refused by the rate limit, and the most answered at once."""
        spans, refused, peak = self._ask("served")
        return [(float(a), float(b)) for a, b in spans], int(refused), int(peak)
