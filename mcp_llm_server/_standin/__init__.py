"""A loopback stand-in for the OpenAI and Anthropic HTTP APIs, scriptable per request.

It speaks the real wire formats (JSON and SSE for Responses, Chat Completions and Messages), injects faults
(error statuses, resets, stalls, mid-stream errors, dropped connections) and records every request. The test
suite and the offline demo point the real SDKs at it::

    with StandIn() as s:
        s.script(Reply(text="Hi there"), Reply.error(429, retry_after=1))
        s.rate_limit = RateLimit(max_open=10)  # the 11th open model request is refused (429)
        client = AsyncOpenAI(base_url=s.openai_base_url, api_key="sk-test")
"""

from ._script import Api, Fault, Outcome, RateLimit, RecordedRequest, Reply
from ._server import Responder, StandIn

__all__ = ["Api", "Fault", "Outcome", "RateLimit", "RecordedRequest", "Reply", "Responder", "StandIn"]
