"""Fault campaign: the server over stdio under transient upstream faults, fatal statuses, stalls, cancellations,
malformed stdin and shutdowns, with no API key ever leaking into anything it writes or returns.

Every test drives the real `python -m mcp_llm_server` (with `MCP_LLM_LOG_LEVEL=DEBUG`) against the stand-in
provider. Figures (attempts, retry-after slack, cancel-to-close times, exit times) are logged at INFO: run with
`-o log_cli=true --log-cli-level=INFO` to see them.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY, error_details, stdio_params, text_of
from helpers import EXIT_S, assert_clean_stderr, child_env, wait_until, words
from mcp import Client
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult
from wire import STARTUP_S, wire_server

from mcp_llm_server._standin import RecordedRequest, Reply, StandIn

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pipes"),
]

logger = logging.getLogger(__name__)

TOOLS = {"openai": "ask_openai", "anthropic": "ask_claude"}
LABELS = {"openai": "OpenAI", "anthropic": "Anthropic"}
KEY_FRAGMENT = "0123456789abcdef"  # shared by both test keys: a partial leak shows too
MARKER = re.compile(r"CALL-(\d+)")


# --- shared helpers ---------------------------------------------------------------------------------------


@dataclass
class Transcript:
    """Everything the server wrote or returned during the campaign, to be searched for the keys."""

    texts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, source: str, text: str) -> None:
        self.texts.append((source, text))

    def add_result(self, source: str, result: CallToolResult) -> None:
        self.add(source, result.model_dump_json(by_alias=True))

    def assert_clean(self) -> None:
        for source, text in self.texts:
            for secret in (OPENAI_KEY, ANTHROPIC_KEY, KEY_FRAGMENT):
                assert secret not in text, f"{secret!r} leaked into {source}: …{_around(text, secret)}…"

    @property
    def size(self) -> int:
        return sum(len(text) for _, text in self.texts)


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    return text[max(at - 80, 0) : at + len(needle) + 80]


_CAMPAIGN = Transcript()


@pytest.fixture
def transcript() -> Iterator[Transcript]:
    """This test's transcript; it joins the campaign's, and must hold neither key when the test ends."""
    own = Transcript()
    yield own
    _CAMPAIGN.texts.extend(own.texts)
    own.assert_clean()
    _CAMPAIGN.assert_clean()
    logger.info("secrets: %d texts (%d chars) scanned so far, no key found", len(_CAMPAIGN.texts), _CAMPAIGN.size)


def debug_env(standin: StandIn, **extra: str) -> dict[str, str]:
    """The child's whole environment (nothing from the developer's shell), logging at DEBUG."""
    return child_env(standin, MCP_LLM_LOG_LEVEL="DEBUG", **extra)


def marker_of(rec: RecordedRequest) -> int | None:
    """The `CALL-n` marker in a request's prompt (Responses `input` or Messages `messages`)."""
    found = MARKER.search(json.dumps(rec.body))
    return int(found.group(1)) if found else None


def assert_clean_debug_stderr(stderr: str) -> None:
    assert_clean_stderr(stderr)
    assert "DEBUG" in stderr  # the log level really was DEBUG, so the secrets check saw every log line


@asynccontextmanager
async def session(
    standin: StandIn, tmp_path: Path, transcript: Transcript, **env: str
) -> AsyncIterator[tuple[Client, Path]]:
    """One MCP session over stdio with the real client; the server's stderr goes to a file kept for the checks."""
    params = stdio_params(debug_env(standin, **env)).model_copy(update={"cwd": tmp_path})
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            yield client, stderr_path
    stderr = stderr_path.read_text()
    transcript.add("stderr", stderr)
    assert_clean_debug_stderr(stderr)


async def warm_up(client: Client, standin: StandIn) -> None:
    """One call per provider, so the provider SDK imports are behind us before anything is timed."""
    for provider in ("openai", "anthropic"):
        with anyio.fail_after(STARTUP_S):
            result = await client.call_tool(TOOLS[provider], {"prompt": "warm up"})
        assert not result.is_error, text_of(result)
    await standin.wait_until_idle_async()


# --- 300 calls through transient faults -------------------------------------------------------------------


MAX_ATTEMPTS = 4
CALLS = 300
BATCH = 30
FAULT_RATE = 0.3


class FaultyUpstream:
    """A seeded responder: ~30% of requests fail transiently, but never a call's last allowed attempt.

    Each (call, attempt) draws from its own seeded generator, so the faults do not depend on arrival order.
    """

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self.attempts: Counter[int] = Counter()
        self.faults: dict[str, tuple[str, float | None]] = {}  # request id -> (fault, retry-after)

    def __call__(self, rec: RecordedRequest) -> Reply | None:
        call = marker_of(rec)
        if call is None:
            return None
        with self._lock:
            self.attempts[call] += 1
            attempt = self.attempts[call]
            rng = random.Random(f"{self._seed}:{call}:{attempt}")
            if attempt < MAX_ATTEMPTS and rng.random() < FAULT_RATE:
                return self._fault(rec, rng)
        return Reply(chunks=["answer to ", f"CALL-{call}"])

    def _fault(self, rec: RecordedRequest, rng: random.Random) -> Reply:
        anthropic = rec.api == "messages"
        fault = rng.choice(["429", "500", "529" if anthropic else "503", "reset"])
        retry_after = None
        if fault == "429":
            retry_after = rng.choice([0.05, 0.1, 0.15, 0.2])
            reply = Reply.error(429, retry_after=retry_after)
        elif fault == "reset":
            reply = Reply.reset()
        else:
            reply = Reply.error(int(fault))
        self.faults[rec.request_id] = (fault, retry_after)
        return reply


async def test_transient_faults_every_call_succeeds(standin: StandIn, tmp_path: Path, transcript: Transcript) -> None:
    """300 calls, ~30% of upstream requests failing transiently: all succeed, attempts bounded, retry-after kept."""
    upstream = FaultyUpstream(seed=20260611)
    standin.responder = upstream
    results: dict[int, CallToolResult] = {}
    env = {
        "MCP_LLM_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "MCP_LLM_OPENAI_CONCURRENCY": "64",
        "MCP_LLM_ANTHROPIC_CONCURRENCY": "64",
    }
    started = time.monotonic()
    async with session(standin, tmp_path, transcript, **env) as (client, _):
        await warm_up(client, standin)
        warmed = time.monotonic()

        async def one(call: int) -> None:
            provider = "openai" if call % 2 == 0 else "anthropic"

            async def progress(value: float, total: float | None, message: str | None) -> None:
                transcript.add(f"progress CALL-{call}", message or "")

            arguments = {"prompt": f"Say hello to CALL-{call}"}
            results[call] = await client.call_tool(TOOLS[provider], arguments, progress_callback=progress)

        for first in range(0, CALLS, BATCH):
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for call in range(first, first + BATCH):
                        tg.start_soon(one, call)
        ran = time.monotonic() - warmed
        await standin.wait_until_idle_async()
    total = time.monotonic() - started

    by_call: dict[int, list[RecordedRequest]] = {}
    for rec in standin.requests:
        call = marker_of(rec)
        if call is not None:
            by_call.setdefault(call, []).append(rec)
    assert sorted(results) == list(range(CALLS))
    slacks: list[float] = []
    for call, result in results.items():
        transcript.add_result(f"result CALL-{call}", result)
        assert not result.is_error, text_of(result)
        assert text_of(result) == f"answer to CALL-{call}"
        assert result.structured_content is not None
        attempts = result.structured_content["attempts"]
        requests = sorted(by_call[call], key=lambda r: r.received_at)
        assert 1 <= attempts <= MAX_ATTEMPTS
        assert attempts == len(requests) == upstream.attempts[call], (call, attempts, len(requests))
        assert (
            requests[-1].outcome == "completed" and result.structured_content["request_id"] == requests[-1].request_id
        )
        for rec, following in itertools.pairwise(requests):
            fault, retry_after = upstream.faults[rec.request_id]
            assert rec.outcome == ("reset" if fault == "reset" else "error_status")
            if retry_after is not None:
                # From the 429's arrival, recorded before its answer was written: the server cannot have started
                # waiting earlier, so the bound holds however late the stand-in's thread records anything else.
                slack = following.received_at - rec.received_at - retry_after
                slacks.append(slack)
                assert slack >= -0.001, f"CALL-{call}: retried {-slack * 1000:.1f} ms before the retry-after"

    failed = len(upstream.faults)
    upstream_requests = sum(len(r) for r in by_call.values())
    distribution = Counter(
        result.structured_content["attempts"] for result in results.values() if result.structured_content
    )
    kinds = Counter(fault for fault, _ in upstream.faults.values())
    logger.info(
        "transient faults: %d calls, %d upstream requests, %d failed (%.1f%%: %s); attempts per call %s; "
        "retry-after slack (from the 429's arrival) min %.1f ms, max %.1f ms over %d waits; "
        "300 calls in %.2f s (whole test %.2f s)",
        CALLS,
        upstream_requests,
        failed,
        100.0 * failed / upstream_requests,
        dict(kinds),
        dict(sorted(distribution.items())),
        min(slacks) * 1000,
        max(slacks) * 1000,
        len(slacks),
        ran,
        total,
    )
    assert 0.2 < failed / upstream_requests < 0.4
    assert set(kinds) == {"429", "500", "529", "503", "reset"}
    assert slacks


# --- fatal statuses -----------------------------------------------------------------------------------------

# Not retried is proven by the request count; the bound only catches a wait (a timeout, a retry-after): it takes
# milliseconds (logged), and stays far above what a busy machine adds.
FATAL_S = 5.0


async def test_fatal_statuses_fail_at_once(standin: StandIn, tmp_path: Path, transcript: Transcript) -> None:
    """401 and 400: one upstream request, a fast clear error naming provider and status; an echoed key redacted."""
    timings: dict[str, float] = {}
    async with session(standin, tmp_path, transcript) as (client, _):
        await warm_up(client, standin)
        for provider, key in (("openai", OPENAI_KEY), ("anthropic", ANTHROPIC_KEY)):
            for status in (401, 400):
                before = len(standin.requests)
                message = f"Incorrect API key provided: {key}" if status == 401 else "max_tokens: too large"
                standin.script(Reply.error(status, message=message))
                started = time.monotonic()
                with anyio.fail_after(10):
                    result = await client.call_tool(TOOLS[provider], {"prompt": f"fatal {status}"})
                elapsed = time.monotonic() - started
                timings[f"{provider} {status}"] = elapsed
                await standin.wait_until_idle_async()
                transcript.add_result(f"{provider} {status}", result)

                assert len(standin.requests) == before + 1, "a fatal status must not be retried"
                assert standin.requests[-1].outcome == "error_status"
                assert result.is_error
                text = text_of(result)
                assert text.startswith(f"{LABELS[provider]}: ") and f"(HTTP {status})" in text, text
                error = error_details(result)["error"]
                assert error["status"] == status and error["attempts"] == 1 and error["retryable"] is False
                assert error["request_id"] == standin.requests[-1].request_id
                if status == 401:
                    assert error["kind"] == "authentication" and "authentication failed" in text
                    assert key not in text and "[redacted]" in text, text
                else:
                    assert error["kind"] == "bad_request" and "max_tokens: too large" in text
                assert elapsed < FATAL_S, f"{provider} {status} took {elapsed:.3f} s"
    logger.info("fatal statuses: %s", {name: f"{seconds * 1000:.1f} ms" for name, seconds in timings.items()})


# --- a stalled stream among flowing ones ------------------------------------------------------------------

# Long enough that 10 calls through a child process on a busy machine are all served inside it.
STALL_S = 2.0


async def test_stalled_stream_cut_while_others_flow(standin: StandIn, tmp_path: Path, transcript: Transcript) -> None:
    """A stream that stalls after two tokens is cut at the stall limit; 10 other calls finish meanwhile.

    Every time compared is the stand-in's own record (the stalled stream's last token and its close, each other
    request's end): how late the answers travel back to the client does not matter."""

    def responder(rec: RecordedRequest) -> Reply | None:
        if "STALL" in json.dumps(rec.body):
            return Reply(chunks=words(6), fault="stall", fault_after=2)
        return Reply(chunks=words(5))

    standin.responder = responder
    results: dict[str, CallToolResult] = {}
    async with session(standin, tmp_path, transcript, MCP_LLM_STALL_TIMEOUT_S=str(STALL_S)) as (client, _):
        await warm_up(client, standin)
        first = len(standin.requests)

        async def call(name: str, provider: str, prompt: str) -> None:
            results[name] = await client.call_tool(TOOLS[provider], {"prompt": prompt})

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "stalled", "anthropic", "STALL please")
                await wait_until(
                    lambda: len(standin.requests) > first and standin.requests[first].deltas_sent >= 2,
                    10,
                    "the stalled stream's two tokens",
                )
                stalled_rec = standin.requests[first]
                for i in range(10):
                    tg.start_soon(call, f"other-{i}", "openai" if i % 2 else "anthropic", f"flowing {i}")
            await wait_until(lambda: stalled_rec.outcome is not None, 3, "the stalled stream to be closed")

    for name, result in results.items():
        transcript.add_result(name, result)
    stalled = results.pop("stalled")
    details = error_details(stalled)
    assert details["error"]["kind"] == "stalled", text_of(stalled)
    assert details["error"]["attempts"] == 1  # tokens were forwarded: not retried
    assert details["partial_text"] == "w0 w1 "
    assert stalled_rec.outcome == "stalled_then_disconnected" and stalled_rec.finished_at is not None
    silence = stalled_rec.finished_at - stalled_rec.delta_sent_at[-1]
    # Not before the limit (the server cannot have read the token earlier than it was sent); long before the
    # default 60 s limit.
    assert STALL_S * 0.9 <= silence <= STALL_S + 8.0, f"stalled stream closed {silence:.3f} s after its last token"
    assert len(results) == 10
    for result in results.values():
        assert not result.is_error, text_of(result)
        assert text_of(result) == "".join(words(5))
    others = [r for r in standin.requests[first:] if r is not stalled_rec]
    assert len(others) == 10 and all(r.outcome == "completed" for r in others)
    # Each one was served whole while the stalled stream was still open.
    assert all(r.finished_at is not None and r.finished_at < stalled_rec.finished_at for r in others)
    during = max(r.finished_at or 0.0 for r in others) - stalled_rec.delta_sent_at[-1]
    logger.info(
        "stall: cut %.3f s after the last token (limit %.1f s); the 10 other requests all served %.3f s into it",
        silence,
        STALL_S,
        during,
    )


# --- cancelling 20 streaming calls ------------------------------------------------------------------------

# The streams would run 10 s: closing them all within half that proves the cancel, on a busy machine too. The
# figures (tens of ms on a quiet one) are logged.
CANCEL_CLOSE_S = 5.0


async def test_cancel_twenty_streams(standin: StandIn, tmp_path: Path, transcript: Transcript) -> None:
    """Cancelling 20 in-flight streaming calls closes every upstream stream at once; the server answers on."""
    env = {"MCP_LLM_OPENAI_CONCURRENCY": "32", "MCP_LLM_ANTHROPIC_CONCURRENCY": "32"}
    async with session(standin, tmp_path, transcript, **env) as (client, _):
        await warm_up(client, standin)
        first = len(standin.requests)
        standin.script(*[Reply(chunks=words(200), chunk_delay_s=0.05) for _ in range(20)], Reply(text="still here"))

        def streaming() -> list[RecordedRequest]:
            return [r for r in standin.requests[first:] if r.deltas_sent >= 1]

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    provider = "openai" if i % 2 else "anthropic"
                    tg.start_soon(client.call_tool, TOOLS[provider], {"prompt": f"long {i}"})
                await wait_until(lambda: len(streaming()) == 20, 20, "20 streams with a first token")
                cancelled_at = time.monotonic()
                scope.cancel()
        assert scope.cancelled_caught
        streams = standin.requests[first : first + 20]
        await wait_until(
            lambda: all(r.finished_at is not None for r in streams), CANCEL_CLOSE_S, "every upstream stream closed"
        )
        closes = sorted(r.finished_at - cancelled_at for r in streams if r.finished_at is not None)
        logger.info(
            "cancel: 20 streams closed %.1f..%.1f ms after the cancel (median %.1f ms)",
            closes[0] * 1000,
            closes[-1] * 1000,
            closes[10] * 1000,
        )
        for rec in streams:
            assert rec.outcome == "client_disconnected" and rec.deltas_sent < 200
        assert closes[-1] < CANCEL_CLOSE_S, f"slowest upstream close {closes[-1] * 1000:.1f} ms after the cancel"

        with anyio.fail_after(10):
            after = await client.call_tool("ask_claude", {"prompt": "are you there"})
        transcript.add_result("after cancel", after)
        assert not after.is_error and text_of(after) == "still here"


# --- malformed stdin ----------------------------------------------------------------------------------------


FUZZ_LINES = 5000
OVERSIZED_BYTES = 40 * 1024 * 1024  # over the default 32 MiB MCP_LLM_MAX_MESSAGE_BYTES
BIG_PROMPT_CHARS = 10 * 1024 * 1024  # under the message limit, far over MCP_LLM_MAX_PROMPT_CHARS


def _templates() -> list[Any]:
    """JSON-RPC-ish messages to mutate. No tools/call among them has a string prompt: none can reach upstream."""
    return [
        {"jsonrpc": "2.0", "id": "fz", "method": "ping"},
        {"jsonrpc": "2.0", "id": "fz", "method": "tools/list", "params": {"cursor": 7}},
        {"jsonrpc": "2.0", "id": "fz", "method": "tools/call", "params": {"name": "ask_openai", "arguments": {}}},
        {
            "jsonrpc": "2.0",
            "id": "fz",
            "method": "tools/call",
            "params": {"name": "ask_claude", "arguments": {"prompt": 42}},
        },
        {"jsonrpc": "2.0", "id": "fz", "method": "tools/call", "params": {"name": "ask_openai", "arguments": "hi"}},
        {"jsonrpc": "2.0", "id": "fz", "method": "tools/call", "params": {"name": 5, "arguments": {"prompt": None}}},
        {"jsonrpc": "2.0", "id": "fz", "method": "tools/call", "params": [1, 2, 3]},
        {
            "jsonrpc": "2.0",
            "id": "fz",
            "method": "tools/call",
            "params": {"name": "ask_many", "arguments": {"prompt": []}},
        },
        {
            "jsonrpc": "2.0",
            "id": "fz",
            "method": "tools/call",
            "params": {"name": "extract_json", "arguments": {"text": 1}},
        },
        {"jsonrpc": "2.0", "id": "fz", "method": "resources/read", "params": {"uri": 12}},
        {"jsonrpc": "2.0", "id": "fz", "method": "resources/read", "params": {"uri": "llm://nothing"}},
        {"jsonrpc": "2.0", "id": "fz", "method": "prompts/get", "params": {"name": "nope"}},
        {"jsonrpc": "2.0", "id": "fz", "method": "logging/setLevel", "params": {"level": 3}},
        {"jsonrpc": "2.0", "id": "fz", "method": "initialize", "params": {"protocolVersion": 2025}},
        {"jsonrpc": "2.0", "id": "fz", "method": "completion/complete", "params": {"ref": None}},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "fz-none"}},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": [], "progress": "x"}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": "fz", "result": {"unexpected": True}},
        {"jsonrpc": "2.0", "id": "fz", "error": {"code": -1, "message": "not asked"}},
        {"jsonrpc": "1.0", "id": "fz", "method": "ping"},
        {"jsonrpc": "2.0", "id": {"nested": ["id"]}, "method": "ping"},
        {"jsonrpc": "2.0", "id": None, "method": "ping"},
        {"jsonrpc": "2.0", "id": "fz"},
        {"jsonrpc": "2.0", "id": "fz", "method": 17},
        [{"jsonrpc": "2.0", "id": "fz", "method": "ping"}],
        [],
        {},
        "a string",
        3.5,
        None,
    ]


def fuzz_line(rng: random.Random, index: int) -> bytes:
    """One malformed (or at least unexpected) stdin line, never containing a newline."""
    kind = rng.randrange(10)
    if kind == 0:  # random bytes, as a host with a broken encoder might send them
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        line = raw.decode("utf-8", errors="replace").encode()
    elif kind == 1:  # unknown method, with an id: deserves an error response
        line = json.dumps({"jsonrpc": "2.0", "id": f"fz-{index}", "method": f"no/such/{rng.randrange(10**6)}"}).encode()
    elif kind == 2:  # huge numbers
        number = rng.choice(["1e400", "-1e400", "9" * rng.randrange(20, 6000), "1" + "0" * 400 + ".5", "-0", "NaN"])
        line = f'{{"jsonrpc":"2.0","id":{number},"method":"ping","params":{{"n":{number}}}}}'.encode()
    elif kind == 3:  # deep nesting
        depth = rng.choice([64, 1000, 10_000, 100_000])
        inner = "[" * depth + "]" * depth
        line = f'{{"jsonrpc":"2.0","id":"fz-{index}","method":"ping","params":{{"deep":{inner}}}}}'.encode()
    elif kind == 4:  # blank, whitespace or control characters only
        line = rng.choice([b"", b"   ", b"\t", b"\r", b"\x00\x01\x02", b"\xef\xbb\xbf"])
    else:  # a template: intact, truncated, or with a byte changed, inserted or deleted
        text = json.dumps(rng.choice(_templates())).replace('"fz"', f'"fz-{index}"')
        action = rng.choice(["intact", "truncate", "truncate", "flip", "insert", "delete"])
        at = rng.randrange(len(text))
        char = chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000), 0]))
        if action == "truncate":
            text = text[:at]
        elif action == "flip":
            text = text[:at] + char + text[at + 1 :]
        elif action == "insert":
            text = text[:at] + char + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + 1 :]
        line = text.encode("utf-8", errors="replace")
    return line.replace(b"\n", b" ")


def well_formed_request_id(line: bytes) -> str | int | None:
    """The id of a line that is a JSON-RPC 2.0 request object with a string or integer id (valid or not otherwise)."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str):
        return None
    request_id = message.get("id")
    if (
        isinstance(request_id, bool)
        or not isinstance(request_id, str | int)
        or (isinstance(request_id, int) and abs(request_id) >= 2**53)
    ):
        return None
    return request_id


async def test_malformed_stdin(standin: StandIn, tmp_path: Path, transcript: Transcript) -> None:
    """5,000 fuzzed lines, a 40 MB line, a 10 MB prompt: server lives, answers valid requests, writes only JSON-RPC."""
    rng = random.Random(5000)
    valid: dict[str, str] = {}
    started = time.monotonic()
    async with wire_server(debug_env(standin), tmp_path, tmp_path / "stderr.txt") as server:
        fuzz_bytes = 0
        fuzz_requests: dict[str | int, bytes] = {}  # fuzz lines that are requests with a usable id
        for index in range(FUZZ_LINES):
            line = fuzz_line(rng, index)
            fuzz_bytes += len(line) + 1
            if (request_id := well_formed_request_id(line)) is not None:
                fuzz_requests[request_id] = line
            server.send_raw(line + b"\n")
            if index % 100 == 99:  # a valid request every 100 lines, with a known id
                request_id = f"valid-{index}"
                valid[request_id] = rng.choice(["ping", "tools/list"])
                server.request(request_id, valid[request_id], {})
            if index == 1500:  # over the message limit: dropped whole, never answered
                padding = "x" * OVERSIZED_BYTES
                server.send({"jsonrpc": "2.0", "id": "oversized", "method": "tools/call", "params": {"name": padding}})
            if index == 3000:  # a well-formed call whose prompt is far too long
                server.call("big-prompt", "ask_openai", {"prompt": "y" * BIG_PROMPT_CHARS})
        server.request("unknown-prompt", "prompts/get", {"name": "nope"})
        server.request("unknown-method", "no/such/method", {})
        for i in range(5):
            request_id = f"valid-after-{i}"
            valid[request_id] = "ping" if i % 2 else "tools/list"
            server.request(request_id, valid[request_id], {})
        await server.written(within=60)
        written = time.monotonic()
        for request_id in valid:
            await server.response(request_id, within=60)
        answered = time.monotonic()

        big = await server.response("big-prompt", within=10)
        assert big["result"]["isError"] is True, big
        assert "The prompt is 10,485,760 characters" in big["result"]["content"][0]["text"], big
        assert "MCP_LLM_MAX_PROMPT_CHARS" in big["result"]["content"][0]["text"]
        assert server.find_response("oversized") is None
        unknown_prompt, unknown_method = server.find_response("unknown-prompt"), server.find_response("unknown-method")
        assert unknown_prompt is not None and unknown_prompt["error"]["code"] == -32602, unknown_prompt
        assert unknown_method is not None and unknown_method["error"]["code"] == -32601, unknown_method
        assert standin.requests == [], "no malformed or refused input may reach the provider"
        assert server.process.poll() is None, "the server died"

        # Still fully working: a real call goes upstream and back.
        standin.script(Reply(text="after the storm"))
        server.call("final-call", "ask_claude", {"prompt": "still there?"})
        final = await server.response("final-call", within=STARTUP_S)
        assert final["result"]["content"][0]["text"] == "after the storm", final

        server.close_stdin()
        closing = time.monotonic()
        code = await server.exit_code(within=EXIT_S)
        exit_s = time.monotonic() - closing
        await server.until(lambda: server.stdout_closed, 5, "stdout EOF")

        for request_id, method in valid.items():
            response = server.find_response(request_id)
            assert response is not None and "result" in response, (request_id, response)
            if method == "tools/list":
                assert {"ask_openai", "ask_claude"} <= {tool["name"] for tool in response["result"]["tools"]}
            else:
                assert response["result"] == {}
        assert server.bad_lines == [], server.bad_lines[:5]
        for message in server.messages:
            assert ("method" in message) != ("id" in message and ("result" in message or "error" in message)), message
        stdout, stderr = server.stdout_text(), server.stderr_text()
    transcript.add("fuzz stdout", stdout)
    transcript.add("fuzz stderr", stderr)
    assert code == 0
    assert exit_s < EXIT_S
    assert_clean_debug_stderr(stderr)
    assert "dropped a message larger than" in stderr
    errors = [m for m in server.messages if "error" in m]
    # JSON-RPC allows array params, MCP does not; the SDK drops such a request unanswered. All others are answered.
    unanswered = Counter(
        f"params {type(json.loads(line).get('params')).__name__}"
        for request_id, line in fuzz_requests.items()
        if server.find_response(request_id) is None
    )
    logger.info(
        "malformed stdin: %d fuzz lines were requests with a usable id; %d of them got no response (%s)",
        len(fuzz_requests),
        sum(unanswered.values()),
        dict(unanswered.most_common()),
    )
    assert set(unanswered) <= {"params list"}, unanswered
    logger.info(
        "malformed stdin: %d fuzz lines (%.1f kB) + a %d MB line + a %d MB prompt + %d valid requests; "
        "%d stdout lines, all JSON-RPC (%d error responses); written in %.2f s, all valid ones answered %.2f s "
        "later; exit 0 %.3f s after stdin closed",
        FUZZ_LINES,
        fuzz_bytes / 1000,
        OVERSIZED_BYTES // (1024 * 1024),
        BIG_PROMPT_CHARS // (1024 * 1024),
        len(valid),
        len(server.lines),
        len(errors),
        written - started,
        answered - written,
        exit_s,
    )


# --- shutdown mid-call --------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stdin-closed", "sigterm"])
async def test_shutdown_mid_call(standin: StandIn, tmp_path: Path, transcript: Transcript, how: str) -> None:
    """Stdin closed or SIGTERM during a streaming call: a prompt exit 0, no traceback, upstream stream closed."""
    standin.script(Reply(chunks=words(200), chunk_delay_s=0.05))
    async with wire_server(debug_env(standin), tmp_path, tmp_path / "stderr.txt") as server:
        server.call(1, "ask_claude", {"prompt": "a long story"}, token="tok")
        await server.until(lambda: bool(server.progress("tok")), STARTUP_S, "the first streamed token")
        stopping = time.monotonic()
        if how == "sigterm":
            server.process.send_signal(signal.SIGTERM)
        else:
            server.close_stdin()
        code = await server.exit_code(within=EXIT_S)
        exit_s = time.monotonic() - stopping
        await server.until(lambda: server.stdout_closed, 5, "stdout EOF")
        assert server.bad_lines == []
        stdout, stderr = server.stdout_text(), server.stderr_text()
    transcript.add(f"{how} stdout", stdout)
    transcript.add(f"{how} stderr", stderr)
    await wait_until(
        lambda: bool(standin.requests) and standin.requests[0].outcome is not None, CANCEL_CLOSE_S, "upstream closed"
    )
    rec = standin.requests[0]
    assert rec.finished_at is not None
    logger.info(
        "shutdown (%s): exit %d %.3f s after; upstream stream closed %.3f s after",
        how,
        code,
        exit_s,
        rec.finished_at - stopping,
    )
    assert code == 0 and exit_s < EXIT_S
    assert rec.outcome == "client_disconnected" and rec.deltas_sent < 200
    assert_clean_debug_stderr(stderr)
