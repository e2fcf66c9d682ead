"""How well `extract_json`'s repair loop recovers when the model answers badly half of the time.

The stand-in answers each request at random (seeded): half the time a valid object, otherwise (split evenly)
truncated JSON, prose without JSON, or JSON that breaks the schema. 200 calls with `max_attempts` 3, through
the real MCP client, server and OpenAI SDK. Every value returned as a success is re-validated here.

Run: `python -m bench.extract_repair [--calls 200] [--seed 7] [--provider openai|anthropic]`.
With a bad answer at p = 0.5 the expected share of valid results is 1 - p^3 = 87.5 %, and the expected
upstream requests per call are 1 + p + p^2 = 1.75.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from typing import Any

import anyio
import jsonschema
from mcp import Client

from mcp_llm_server._standin import RecordedRequest, Reply, StandIn
from mcp_llm_server.server import build_server
from mcp_llm_server.settings import load_settings
from mcp_llm_server.tools.extract import META_KEY

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "email": {"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+$"},
        "age": {"type": "integer", "minimum": 0},
        "tier": {"enum": ["free", "pro"]},
    },
    "required": ["name", "email", "tier"],
}
VALID = '{"name": "Ann Lee", "email": "ann@example.com", "age": 41, "tier": "pro"}'
INVALID = [
    '{"name": "Ann Lee", "email": "ann@example.com", "age": 41, "tier": "pr',  # truncated JSON
    "I'm sorry, I could not find a customer in that text.",  # no JSON at all
    '{"name": "Ann Lee", "email": "ann at example", "age": -4, "tier": "gold"}',  # schema violations
]


async def run(calls: int, seed: int, provider: str, bad_share: float) -> None:
    rng = random.Random(seed)
    drawn = Counter[str]()

    def respond(request: RecordedRequest) -> Reply:
        if rng.random() < bad_share:
            drawn["invalid"] += 1
            return Reply(text=rng.choice(INVALID))
        drawn["valid"] += 1
        return Reply(text=VALID)

    with StandIn() as standin:
        standin.responder = respond
        settings = load_settings(
            _env_file=None,
            openai_api_key="sk-bench-openai-key-0123456789",
            anthropic_api_key="sk-ant-bench-key-0123456789",
            openai_base_url=standin.openai_base_url,
            anthropic_base_url=standin.anthropic_base_url,
            anthropic_model="claude-standin",
        )
        outcomes = Counter[str]()
        attempts_used = Counter[int]()
        started = time.perf_counter()
        async with Client(build_server(settings), raise_exceptions=True) as client:
            for _ in range(calls):
                args = {"text": "Ann Lee <ann@example.com>, 41, is on the pro plan.", "schema": SCHEMA}
                result = await client.call_tool("extract_json", {**args, "max_attempts": 3, "provider": provider})
                if result.is_error:
                    assert result.structured_content is not None
                    outcomes["failed: " + result.structured_content["error"]["kind"]] += 1
                    attempts_used[result.structured_content["error"]["attempts"]] += 1
                    continue
                jsonschema.validate(result.structured_content, SCHEMA)  # never trust a success either
                assert result.meta is not None
                outcomes["valid"] += 1
                attempts_used[result.meta[META_KEY]["attempts"]] += 1
        elapsed = time.perf_counter() - started
        requests = len(standin.requests)

    valid = outcomes["valid"]
    expected_valid = 1 - bad_share**3
    expected_requests = 1 + bad_share + bad_share**2
    print(f"extract_json repair loop: {calls} calls, max_attempts 3, provider {provider}, seed {seed}")
    print(f"  stand-in answers: {drawn['invalid']} invalid / {sum(drawn.values())} ({bad_share:.0%} drawn at random)")
    print(f"  ended valid:      {valid}/{calls} = {valid / calls:.1%}  (expected {expected_valid:.1%})")
    print(f"  failed:           {json.dumps({k: v for k, v in outcomes.items() if k != 'valid'})}")
    print(f"  upstream requests: {requests} = {requests / calls:.2f} per call  (expected {expected_requests:.2f})")
    print(f"  attempts per call: {dict(sorted(attempts_used.items()))}")
    print(f"  wall time: {elapsed:.2f} s ({elapsed / calls * 1000:.1f} ms per call)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--provider", choices=["openai", "anthropic"], default="openai")
    parser.add_argument("--bad-share", type=float, default=0.5)
    options = parser.parse_args()
    anyio.run(run, options.calls, options.seed, options.provider, options.bad_share)


if __name__ == "__main__":
    main()
