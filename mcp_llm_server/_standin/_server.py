"""``StandIn``: the loopback server, its background thread, scripting queues and request log."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio

from ._http import HttpConnection, HttpError, HttpRequest
from ._respond import Headers, respond, send_error, send_json
from ._script import Api, Outcome, RateLimit, RecordedRequest, Reply
from ._wire import Provider, anthropic_models, openai_models

logger = logging.getLogger(__name__)

Responder = Callable[[RecordedRequest], "Reply | None"]

_ROUTES: dict[str, Api] = {
    "/v1/responses": "responses",
    "/v1/chat/completions": "chat",
    "/v1/messages": "messages",
    "/v1/models": "models",
}
_KEEP_ALIVE_OUTCOMES: frozenset[Outcome] = frozenset({"completed", "error_status", "midstream_error"})
_POLL_S = 0.005


class StandIn:
    """A scriptable stand-in for the OpenAI and Anthropic HTTP APIs, served from a background thread.

    Usable as ``with StandIn() as s: ...`` or with explicit ``start()`` / ``stop()``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.responder: Responder | None = None
        self.default_reply = Reply()
        self.rate_limit: RateLimit | None = None  # None: no cap on open requests
        self.openai_models: list[str] = ["gpt-standin", "gpt-standin-mini"]
        self.anthropic_models: list[str] = ["claude-standin", "claude-standin-haiku"]
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._model_queues: dict[str, deque[Reply]] = {}
        self._requests: list[RecordedRequest] = []
        self._serial = itertools.count(1)
        self._open = 0
        self._peak = 0
        self._admitted = 0  # model requests open under `rate_limit`
        self._admitted_peak = 0
        self._refused = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._connections: dict[asyncio.Task[Any], HttpConnection] = {}

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> StandIn:
        if self._thread is not None:
            raise RuntimeError("StandIn already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="standin-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(5.0):
            raise TimeoutError("stand-in did not start within 5 s")
        if self._startup_error is not None:
            self._thread.join(1.0)
            self._thread = None
            raise RuntimeError("stand-in failed to start") from self._startup_error
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Close every connection (stalled ones too) and join the server thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"stand-in thread did not stop within {timeout} s")
        self._thread = None
        self._port = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("StandIn is not running")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # --- scripting ----------------------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, one per request, in arrival order."""
        with self._lock:
            self._queue.extend(replies)

    def script_model(self, model: str, *replies: Reply) -> None:
        """Queue replies for requests naming ``model``; these win over the global queue."""
        with self._lock:
            self._model_queues.setdefault(model, deque()).extend(replies)

    def _pick(self, rec: RecordedRequest) -> Reply:
        responder = self.responder
        if responder is not None:
            try:
                chosen = responder(rec)
            except Exception as exc:
                logger.debug("stand-in responder raised", exc_info=True)
                return Reply.error(500, message=f"stand-in responder raised {exc!r}")
            if chosen is not None:
                return chosen
        with self._lock:
            queue = self._model_queues.get(rec.model or "")
            if queue:
                return queue.popleft()
            if self._queue:
                return self._queue.popleft()
        return self.default_reply

    # --- recording ----------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def open_requests(self) -> int:
        return self._open

    @property
    def peak_open_requests(self) -> int:
        return self._peak

    @property
    def peak_admitted_requests(self) -> int:
        """The most model requests served at once under `rate_limit` (refused ones not counted)."""
        return self._admitted_peak

    @property
    def refused_requests(self) -> int:
        """Model requests refused by `rate_limit` since the last `reset_peak`."""
        return self._refused

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = self._open
            self._admitted_peak = self._admitted
            self._refused = 0

    def clear(self) -> None:
        """Forget recorded requests and every scripted queue."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._model_queues.clear()

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests were received; returns them all."""
        deadline = time.monotonic() + timeout
        while len(self._requests) < n:
            if time.monotonic() >= deadline:
                raise TimeoutError(self._timeout_message(f"{n} requests", timeout))
            time.sleep(_POLL_S)
        return self.requests

    def wait_until_idle(self, timeout: float = 5.0) -> None:
        """Block until no request is being served."""
        deadline = time.monotonic() + timeout
        while self._open:
            if time.monotonic() >= deadline:
                raise TimeoutError(self._timeout_message("no open requests", timeout))
            time.sleep(_POLL_S)

    async def wait_for_requests_async(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:  # noqa: ASYNC109
        """Like ``wait_for_requests`` but yields to the caller's event loop while polling."""
        deadline = time.monotonic() + timeout
        while len(self._requests) < n:
            if time.monotonic() >= deadline:
                raise TimeoutError(self._timeout_message(f"{n} requests", timeout))
            await anyio.sleep(_POLL_S)
        return self.requests

    async def wait_until_idle_async(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Like ``wait_until_idle`` but yields to the caller's event loop while polling."""
        deadline = time.monotonic() + timeout
        while self._open:
            if time.monotonic() >= deadline:
                raise TimeoutError(self._timeout_message("no open requests", timeout))
            await anyio.sleep(_POLL_S)

    def _timeout_message(self, goal: str, timeout: float) -> str:
        seen = ", ".join(f"{r.method} {r.path} ({r.outcome or 'open'})" for r in self.requests) or "none"
        return f"stand-in: waited {timeout} s for {goal}; {self._open} open; received: {seen}"

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(rec)
            self._open += 1
            self._peak = max(self._peak, self._open)

    def _finish(self, rec: RecordedRequest, outcome: Outcome) -> None:
        with self._lock:
            rec.outcome = outcome
            rec.finished_at = time.monotonic()
            self._open -= 1

    # --- server thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._on_connect, self.host, self._requested_port)
        self._port = server.sockets[0].getsockname()[1]
        logger.debug("stand-in listening on %s:%s", self.host, self._port)
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            # Aborting the transports ends every handler on its own (a stalled one sees the disconnect);
            # cancelling is the fallback for a handler that does not notice in time.
            for conn in list(self._connections.values()):
                conn.reset()
            if self._connections:
                _, pending = await asyncio.wait(list(self._connections), timeout=0.5)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=0.5)
            await server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = HttpConnection(reader, writer)
        self._connections[task] = conn
        try:
            while (request := await conn.read_request()) is not None:
                if not await self._serve(conn, request):
                    break
        except HttpError as exc:
            logger.debug("stand-in: bad request: %s", exc)
            with contextlib.suppress(ConnectionError, OSError):
                await send_json(conn, exc.status, [("connection", "close")], {"error": {"message": str(exc)}})
        except asyncio.CancelledError:
            # Only stop() cancels a handler. Not re-raising: asyncio's stream callback (3.11) would report a
            # cancelled handler task as an unhandled error.
            conn.reset()
        except Exception:
            logger.debug("stand-in: connection handler failed", exc_info=True)
        finally:
            self._connections.pop(task, None)
            await conn.close()

    async def _serve(self, conn: HttpConnection, request: HttpRequest) -> bool:
        """Serve one request; True if the connection may carry another."""
        serial = next(self._serial)
        rec, provider = self._recorded(request, serial)
        id_header = "request-id" if provider == "anthropic" else "x-request-id"
        headers: Headers = [(id_header, rec.request_id)]
        if not request.keep_alive:
            headers.append(("connection", "close"))
        self._record(rec)
        logger.debug("stand-in %s: %s %s model=%s", rec.request_id, rec.method, rec.path, rec.model)
        outcome: Outcome = "client_disconnected"
        conn.start_watching()
        try:
            outcome = await self._dispatch(conn, rec, request, provider, headers, serial)
        except (ConnectionError, OSError):
            outcome = "client_disconnected"
        except asyncio.CancelledError:
            stalled = rec.reply is not None and rec.reply.fault == "stall"
            outcome = "stalled_then_disconnected" if stalled else "client_disconnected"
            raise
        finally:
            self._finish(rec, outcome)
            logger.debug("stand-in %s: %s", rec.request_id, outcome)
        await conn.stop_watching()
        return outcome in _KEEP_ALIVE_OUTCOMES and request.keep_alive and not conn.disconnected

    async def _dispatch(
        self,
        conn: HttpConnection,
        rec: RecordedRequest,
        request: HttpRequest,
        provider: Provider,
        headers: Headers,
        serial: int,
    ) -> Outcome:
        if rec.api == "models" and request.method == "GET":
            ids = self.anthropic_models if provider == "anthropic" else self.openai_models
            await send_json(
                conn, 200, headers, anthropic_models(ids) if provider == "anthropic" else openai_models(ids)
            )
            return "completed"
        if rec.api in ("models", "other") or request.method != "POST":
            message = f"Unknown request URL: {request.method} {request.path}"
            await send_error(conn, provider, rec, 404, headers, message=message)
            return "error_status"
        if not isinstance(rec.body, dict):
            await send_error(conn, provider, rec, 400, headers, message="The request body is not a JSON object.")
            return "error_status"
        limit = self.rate_limit
        if limit is None:
            rec.reply = self._pick(rec)
            return await respond(conn, rec, rec.reply, provider, headers, serial)
        if not self._admit(limit):
            rec.reply = limit.refusal(provider)
            return await respond(conn, rec, rec.reply, provider, headers, serial)
        try:
            rec.reply = self._pick(rec)
            return await respond(conn, rec, rec.reply, provider, headers, serial)
        finally:
            with self._lock:
                self._admitted -= 1

    def _admit(self, limit: RateLimit) -> bool:
        with self._lock:
            if self._admitted >= limit.max_open:
                self._refused += 1
                return False
            self._admitted += 1
            self._admitted_peak = max(self._admitted_peak, self._admitted)
            return True

    def _recorded(self, request: HttpRequest, serial: int) -> tuple[RecordedRequest, Provider]:
        api = _ROUTES.get(request.path, "other")
        anthropic = api == "messages" or (
            api != "responses" and api != "chat" and "anthropic-version" in request.headers
        )
        body: Any = None
        if request.body:
            with contextlib.suppress(ValueError):
                body = json.loads(request.body)
        model = body.get("model") if isinstance(body, dict) else None
        stream = isinstance(body, dict) and body.get("stream") is True
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=dict(request.headers),
            body=body,
            api=api,
            model=model if isinstance(model, str) else None,
            stream=stream,
            request_id=f"req_standin_{serial}",
            received_at=time.monotonic(),
        )
        return rec, "anthropic" if anthropic else "openai"
