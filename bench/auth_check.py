"""What checking an OAuth access token costs a request: `JwtVerifier.verify_token` with the issuer's keys cached.

    python -m bench.auth_check [--calls 2000]

A `LocalIssuer` (tests/oauth_issuer.py) serves its JWKS over loopback; the verifier fetches it once, before the
timing. Each figure is the time of one awaited `verify_token` (signature, claims, the AccessToken built), RS256
(RSA 2048) and ES256 (P-256), beside the named-token check of the same run (`NamedTokens.name_of`: a SHA-256 of
the presented token and `hmac.compare_digest` with the stored digest). Rounds of each are interleaved so the
machine's load falls on all alike. Prints the median and p95 in microseconds; takes a few seconds.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from mcp_llm_server.named_tokens import NamedTokens
from mcp_llm_server.oauth import JwtVerifier

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from oauth_issuer import LocalIssuer  # a test helper, found through the path above

AUDIENCE = "https://mcp.example.com/mcp"
NAMED_TOKEN = "tok-bench-0123456789abcdef0123456789abcdef"
ROUNDS = 10


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


async def _time_calls(check: Callable[[], Awaitable[object]], calls: int, into: list[float]) -> None:
    for _ in range(calls):
        started = time.perf_counter()
        if await check() is None:
            raise AssertionError("the check refused a valid token")
        into.append(time.perf_counter() - started)


async def _measure(calls: int) -> dict[str, list[float]]:
    named = NamedTokens({"bench": NAMED_TOKEN})
    presented = NAMED_TOKEN.encode()

    async def named_check() -> object:
        return named.name_of(presented)

    async with LocalIssuer(audience=AUDIENCE) as issuer:
        verifier = JwtVerifier(issuer=issuer.issuer, audience=AUDIENCE, jwks_url=issuer.jwks_url)
        try:
            rs256 = issuer.mint(sub="bench-user", scope="llm:ask llm:read", exp_in=3600)
            es256 = issuer.mint(sub="bench-user", scope="llm:ask llm:read", exp_in=3600, alg="ES256")
            checks: dict[str, Callable[[], Awaitable[object]]] = {
                "named token (SHA-256 + compare_digest)": named_check,
                "OAuth JWT, RS256 (RSA 2048)": lambda: verifier.verify_token(rs256),
                "OAuth JWT, ES256 (P-256)": lambda: verifier.verify_token(es256),
            }
            times: dict[str, list[float]] = {name: [] for name in checks}
            for check in checks.values():  # warm-up; the first JWT fetches the JWKS
                await _time_calls(check, 20, [])
            assert issuer.jwks_requests == 1
            per_round = max(1, calls // ROUNDS)
            for _ in range(ROUNDS):
                for name, check in checks.items():
                    await _time_calls(check, per_round, times[name])
            assert issuer.jwks_requests == 1, "a key was refetched during the timing"
        finally:
            await verifier.aclose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    started = time.perf_counter()
    times = anyio.run(_measure, args.calls)
    print("| check | median | p95 | calls |\n|---|---|---|---|")
    for name, samples in times.items():
        median_us, p95_us = statistics.median(samples) * 1e6, _p95(samples) * 1e6
        print(f"| {name} | {median_us:.1f} µs | {p95_us:.1f} µs | {len(samples)} |")
    print(f"\nbenchmark took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
