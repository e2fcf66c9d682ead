"""`oauth.JwtVerifier` against a real issuer over loopback (`LocalIssuer`): what it accepts, what it refuses, and how
it fetches the issuer's keys (cache, rotation, cooldown, single flight, outages, discovery)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from mcp.server.auth.provider import AccessToken
from oauth_issuer import LocalIssuer, new_key

from mcp_llm_server.oauth import JwtVerifier, discovery_urls, missing_scopes

pytestmark = pytest.mark.anyio

AUDIENCE = "http://127.0.0.1:9/mcp"  # this server's resource URL (never served: only compared)


@pytest.fixture
async def issuer() -> AsyncIterator[LocalIssuer]:
    async with LocalIssuer(audience=AUDIENCE) as served:
        yield served


@pytest.fixture
async def make_verifier(issuer: LocalIssuer) -> AsyncIterator[Callable[..., JwtVerifier]]:
    made: list[JwtVerifier] = []

    def make(**overrides: Any) -> JwtVerifier:
        options: dict[str, Any] = {"issuer": issuer.issuer, "audience": AUDIENCE, "jwks_url": issuer.jwks_url}
        verifier = JwtVerifier(**{**options, **overrides})
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        await verifier.aclose()


@pytest.fixture
def verifier(make_verifier: Callable[..., JwtVerifier]) -> JwtVerifier:
    return make_verifier()


async def test_a_valid_token_gives_its_subject_scopes_and_client(issuer: LocalIssuer, verifier: JwtVerifier) -> None:
    token = issuer.mint(sub="alice", scope="llm:ask llm:read", client_id="desktop-app")
    access = await verifier.verify_token(token)
    assert isinstance(access, AccessToken)
    assert (access.subject, access.client_id, access.scopes) == ("alice", "desktop-app", ["llm:ask", "llm:read"])
    assert access.resource == AUDIENCE and access.token == token
    assert access.expires_at is not None and access.expires_at > time.time()
    assert access.claims is not None and access.claims["iss"] == issuer.issuer


async def test_es256_azp_scp_and_an_audience_list_with_a_trailing_slash(
    issuer: LocalIssuer, verifier: JwtVerifier
) -> None:
    token = issuer.mint(alg="ES256", aud=["https://other.example", AUDIENCE + "/"], scp=["a", "b"], azp="cli")
    access = await verifier.verify_token(token)
    assert access is not None
    assert (access.client_id, access.scopes, access.resource) == ("cli", ["a", "b"], AUDIENCE + "/")
    plain = await verifier.verify_token(issuer.mint(sub="bob"))
    assert plain is not None and (plain.client_id, plain.scopes) == ("bob", [])  # no client claim: the subject


async def test_a_token_without_kid_uses_the_one_key_of_its_type(issuer: LocalIssuer, verifier: JwtVerifier) -> None:
    assert await verifier.verify_token(issuer.mint(kid=None)) is not None
    assert await verifier.verify_token(issuer.mint(kid=None, alg="ES256")) is not None
    issuer.rotate("RSA")  # two RSA keys now: which one is not for us to guess
    fresh = JwtVerifier(issuer=issuer.issuer, audience=AUDIENCE, jwks_url=issuer.jwks_url)
    try:
        assert await fresh.verify_token(issuer.mint(kid=None)) is None
    finally:
        await fresh.aclose()


def _now() -> int:
    return int(time.time())


REFUSED: dict[str, Callable[[LocalIssuer], str]] = {
    "expired": lambda i: i.mint(exp_in=-120),
    "no exp": lambda i: i.mint(exp_in=None),
    "not yet valid (nbf)": lambda i: i.mint(nbf=_now() + 120),
    "issued in the future (iat)": lambda i: i.mint(iat=_now() + 120),
    "wrong audience": lambda i: i.mint(aud="http://127.0.0.1:9/other"),
    "audience of another host": lambda i: i.mint(aud="http://127.0.0.2:9/mcp"),
    "no audience": lambda i: i.mint(aud=None),
    "wrong issuer": lambda i: i.mint(iss="http://127.0.0.1:1/evil"),
    "issuer with a trailing slash": lambda i: i.mint(iss=i.issuer + "/"),
    "no issuer": lambda i: i.mint(iss=None),
    "missing sub": lambda i: i.mint(sub=None),
    "empty sub": lambda i: i.mint(sub=""),
    "bad signature (another key, same kid)": lambda i: i.mint(key=new_key("RSA")),
    "EC signature under the RSA kid": lambda i: i.mint(alg="ES256", kid=i.current["RSA"]),
    "alg none": lambda i: i.mint(alg="none"),
    "alg none without kid": lambda i: i.mint(alg="none", kid=None),
    "HS256 keyed with the public key": lambda i: i.mint(alg="HS256"),
    "HS256 keyed with the public key, no kid": lambda i: i.mint(alg="HS256", kid=None),
    "oversized": lambda i: i.mint(padding="x" * 17_000),
    "garbage": lambda i: "not-a-jwt",
    "three garbage parts": lambda i: "a.b.c",
    "empty": lambda i: "",
    "signature cut off": lambda i: i.mint().rsplit(".", 1)[0] + ".",
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_refused_tokens(
    case: str, issuer: LocalIssuer, verifier: JwtVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    assert await verifier.verify_token(issuer.mint()) is not None  # the keys are there: the refusal is the token's
    token = REFUSED[case](issuer)
    with caplog.at_level(logging.INFO, logger="mcp_llm_server.oauth"):
        assert await verifier.verify_token(token) is None
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("OAuth token refused")]
    assert len(refusals) == 1, caplog.text
    assert not [part for part in token.split(".") if len(part) > 8 and part in caplog.text]


async def test_rotation_an_unknown_kid_refetches_once(
    issuer: LocalIssuer, make_verifier: Callable[..., JwtVerifier]
) -> None:
    verifier = make_verifier(refetch_cooldown_s=0)
    old = issuer.mint()
    assert await verifier.verify_token(old) is not None
    assert issuer.jwks_requests == 1
    issuer.rotate("RSA", keep_old=False)
    assert await verifier.verify_token(issuer.mint()) is not None
    assert issuer.jwks_requests == 2
    assert await verifier.verify_token(issuer.mint()) is not None  # cached now
    assert issuer.jwks_requests == 2
    assert await verifier.verify_token(old) is None  # its key is gone from the set we refetched


async def test_random_unknown_kids_refetch_at_most_once_per_cooldown(
    issuer: LocalIssuer, make_verifier: Callable[..., JwtVerifier]
) -> None:
    cooldown = 1.0
    verifier = make_verifier(refetch_cooldown_s=cooldown)
    assert await verifier.verify_token(issuer.mint()) is not None
    started = time.monotonic()
    await anyio.sleep(cooldown * 1.2)

    async def random_kid() -> None:
        assert await verifier.verify_token(issuer.mint(kid=uuid.uuid4().hex)) is None

    for _ in range(3):
        async with anyio.create_task_group() as group:
            for _ in range(30):
                group.start_soon(random_kid)
        for _ in range(30):
            await random_kid()
    elapsed = time.monotonic() - started
    refetches = issuer.jwks_requests - 1
    assert 1 <= refetches <= elapsed // cooldown + 1, (refetches, elapsed)
    assert await verifier.verify_token(issuer.mint()) is not None  # the known key still verifies


async def test_concurrent_first_verifications_share_one_fetch(
    issuer: LocalIssuer, make_verifier: Callable[..., JwtVerifier]
) -> None:
    verifier = make_verifier(refetch_cooldown_s=0)
    issuer.jwks_delay_s = 0.2  # all 50 arrive while the first fetch is in flight
    tokens = [issuer.mint(sub=f"user-{n}", alg="RS256" if n % 2 else "ES256") for n in range(50)]
    subjects: list[str | None] = []

    async def verify(token: str) -> None:
        access = await verifier.verify_token(token)
        subjects.append(access.subject if access else None)

    async with anyio.create_task_group() as group:
        for token in tokens:
            group.start_soon(verify, token)
    assert sorted(subjects, key=str) == sorted((f"user-{n}" for n in range(50)), key=str)
    assert issuer.jwks_requests == 1


async def test_jwks_down_at_start_refuses_then_recovers_after_the_cooldown(
    issuer: LocalIssuer, make_verifier: Callable[..., JwtVerifier], caplog: pytest.LogCaptureFixture
) -> None:
    cooldown = 0.5
    verifier = make_verifier(refetch_cooldown_s=cooldown)
    issuer.jwks_down = True
    token = issuer.mint()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="mcp_llm_server.oauth"):
        assert await verifier.verify_token(token) is None
    assert "no keys" in caplog.text and "HTTP 503" in caplog.text
    assert "refused: we have none of the issuer's keys" in caplog.text
    for _ in range(20):  # refused, without asking the issuer each time
        assert await verifier.verify_token(token) is None
    issuer.jwks_down = False
    await anyio.sleep(cooldown * 1.5)
    assert await verifier.verify_token(token) is not None
    assert 2 <= issuer.jwks_requests <= 2 + (time.monotonic() - started) // cooldown


async def test_jwks_down_later_keeps_the_cached_keys(
    issuer: LocalIssuer, make_verifier: Callable[..., JwtVerifier], caplog: pytest.LogCaptureFixture
) -> None:
    verifier = make_verifier(jwks_ttl_s=0.05, refetch_cooldown_s=0)
    assert await verifier.verify_token(issuer.mint()) is not None
    issuer.jwks_down = True
    await anyio.sleep(0.1)  # the keys are past their TTL: the next token refetches, and that fails
    with caplog.at_level(logging.WARNING, logger="mcp_llm_server.oauth"):
        assert await verifier.verify_token(issuer.mint(alg="ES256")) is not None
    assert issuer.jwks_requests >= 2
    assert "keeping the 2 keys we had" in caplog.text


async def test_a_slow_jwks_is_given_up_at_the_timeout(
    issuer: LocalIssuer, make_verifier: Callable[..., JwtVerifier]
) -> None:
    verifier = make_verifier(timeout_s=0.3)
    issuer.jwks_delay_s = 30
    started = time.monotonic()
    assert await verifier.verify_token(issuer.mint()) is None
    assert time.monotonic() - started < 10


async def test_a_redirect_is_followed_within_the_issuer_host_only(
    issuer: LocalIssuer, make_verifier: Callable[..., JwtVerifier], caplog: pytest.LogCaptureFixture
) -> None:
    issuer.jwks_redirect = "/v2/jwks.json"
    assert await make_verifier().verify_token(issuer.mint()) is not None
    assert issuer.jwks_requests == 2
    issuer.jwks_redirect = f"http://localhost:{issuer.port}/v2/jwks.json"  # the same server, by another name
    with caplog.at_level(logging.WARNING, logger="mcp_llm_server.oauth"):
        assert await make_verifier().verify_token(issuer.mint()) is None
    assert "redirected to another host (localhost:" in caplog.text
    assert issuer.jwks_requests == 3


async def test_a_jwks_over_the_size_cap_is_not_read(
    issuer: LocalIssuer, verifier: JwtVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    issuer.jwks_padding_bytes = 1_100_000
    with caplog.at_level(logging.WARNING, logger="mcp_llm_server.oauth"):
        assert await verifier.verify_token(issuer.mint()) is None
    assert "over 1,048,576 bytes" in caplog.text


@pytest.mark.parametrize(
    ("discovery", "path"), [("oauth", ""), ("oauth", "/tenants/acme"), ("openid", ""), ("openid", "/realm")]
)
async def test_the_jwks_is_found_from_the_issuer_metadata(discovery: Any, path: str) -> None:
    async with LocalIssuer(audience=AUDIENCE, discovery=discovery, path=path) as issuer:
        verifier = JwtVerifier(issuer=issuer.issuer, audience=AUDIENCE)
        try:
            access = await verifier.verify_token(issuer.mint(sub="carol"))
            assert access is not None and access.subject == "carol"
            assert (issuer.metadata_requests, issuer.jwks_requests) == (1, 1)
            assert await verifier.verify_token(issuer.mint(alg="ES256")) is not None
            assert (issuer.metadata_requests, issuer.jwks_requests) == (1, 1)
        finally:
            await verifier.aclose()


async def test_no_metadata_no_keys(caplog: pytest.LogCaptureFixture) -> None:
    async with LocalIssuer(audience=AUDIENCE, discovery="none") as issuer:
        verifier = JwtVerifier(issuer=issuer.issuer, audience=AUDIENCE)
        try:
            with caplog.at_level(logging.WARNING, logger="mcp_llm_server.oauth"):
                assert await verifier.verify_token(issuer.mint()) is None
        finally:
            await verifier.aclose()
    assert "no issuer metadata with a jwks_uri" in caplog.text
    assert issuer.jwks_requests == 0


def test_discovery_urls_insert_the_well_known_segment_before_the_path() -> None:
    assert discovery_urls("https://auth.example.com") == [
        "https://auth.example.com/.well-known/oauth-authorization-server",
        "https://auth.example.com/.well-known/openid-configuration",
    ]
    assert discovery_urls("https://auth.example.com/tenant1/") == [
        "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
        "https://auth.example.com/.well-known/openid-configuration/tenant1",
        "https://auth.example.com/tenant1/.well-known/openid-configuration",
    ]


def test_missing_scopes() -> None:
    access = AccessToken(token="t", client_id="c", scopes=["llm:ask", "llm:read"])
    assert missing_scopes(access, ["llm:ask"]) == []
    assert missing_scopes(access, ["llm:admin", "llm:ask", "llm:write"]) == ["llm:admin", "llm:write"]
    assert missing_scopes(access, []) == []
