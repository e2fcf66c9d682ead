"""OAuth 2.1 access tokens (JWTs) checked against the issuer's published keys, for the HTTP transport.

`JwtVerifier` is the MCP SDK's `TokenVerifier`: a JWT signed by one of the issuer's JWKS keys with an asymmetric
algorithm, for this server (`aud`), of the issuer (`iss`), in date (`exp`, `nbf`, `iat`), with a subject. The JWKS
is fetched with httpx2 (async, a time limit, a 1 MB cap, redirects only within the same origin), kept for a TTL and
refetched when a token names an unknown key, at most once per cooldown, one fetch at a time for all callers.
Required scopes are the gate's check (403, not 401): `missing_scopes`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import anyio
import httpx2
import jwt
from mcp.server.auth.provider import AccessToken

__all__ = [
    "ALLOWED_ALGORITHMS",
    "MAX_DOCUMENT_BYTES",
    "MAX_TOKEN_CHARS",
    "JwtVerifier",
    "discovery_urls",
    "missing_scopes",
]

logger = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 16 * 1024
MAX_DOCUMENT_BYTES = 1024 * 1024
_MAX_REDIRECTS = 3
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")

# Asymmetric algorithms only: the key type (and curve) each needs. Never `none` or HS* (an HMAC "verified" with a
# published public key as its secret is the classic confusion attack).
_KEY_TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
ALLOWED_ALGORITHMS = frozenset(_KEY_TYPES)


class _Refused(Exception):
    """A token is not accepted; the message says why (never the token)."""


class _FetchFailed(Exception):
    """A metadata or JWKS document could not be had; the message says why."""


def missing_scopes(token: AccessToken, required: Iterable[str]) -> list[str]:
    """The required scopes the token does not carry, in the order required (empty: it has them all)."""
    held = set(token.scopes)
    return [scope for scope in required if scope not in held]


def discovery_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may be, in the order the MCP authorization spec tries them: RFC 8414 (the
    well-known segment inserted before an issuer's path), then OpenID Connect (inserted, then appended)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")

    def at(well_known: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, well_known, "", ""))

    if not path:
        return [at("/.well-known/oauth-authorization-server"), at("/.well-known/openid-configuration")]
    return [
        at(f"/.well-known/oauth-authorization-server{path}"),
        at(f"/.well-known/openid-configuration{path}"),
        at(f"{path}/.well-known/openid-configuration"),
    ]


def _canonical_url(url: str) -> str:
    """Scheme and host compared case-insensitively, a trailing slash ignored, no fragment."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, ""))


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


@dataclass(frozen=True)
class _Key:
    kid: str | None
    by_alg: Mapping[str, jwt.PyJWK]  # the allowed algorithms this key's type (and declared alg) permits


def _key_of(jwk: Any) -> _Key | None:
    """One JWKS entry as a verification key per allowed algorithm, or None if it cannot verify any of them."""
    if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
        return None
    kid = jwk.get("kid")
    declared = jwk.get("alg")
    by_alg: dict[str, jwt.PyJWK] = {}
    for alg, (kty, curves) in _KEY_TYPES.items():
        if jwk.get("kty") != kty or (curves is not None and jwk.get("crv") not in curves):
            continue
        if declared is not None and declared != alg:
            continue
        try:
            by_alg[alg] = jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            return None
    if not by_alg or (kid is not None and not isinstance(kid, str)):
        return None
    return _Key(kid, by_alg)


def _parse_jwks(document: dict[str, Any]) -> list[_Key]:
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise _FetchFailed("the JWKS has no 'keys' list")
    keys = [key for key in map(_key_of, entries) if key is not None]
    if not keys:
        raise _FetchFailed(f"none of the JWKS's {len(entries)} keys is an asymmetric signing key we accept")
    return keys


class _Documents:
    """GETs of small JSON documents: a time limit for the whole fetch, a size cap, same-origin redirects only."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._client = httpx2.AsyncClient(timeout=timeout_s, follow_redirects=False)

    async def get(self, url: str) -> dict[str, Any]:
        try:
            with anyio.fail_after(self._timeout_s):
                return await self._follow(url)
        except TimeoutError:
            raise _FetchFailed(f"{url}: no answer within {self._timeout_s:g} s") from None
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise _FetchFailed(f"{url}: {type(exc).__name__}: {exc}") from None

    async def _follow(self, url: str) -> dict[str, Any]:
        for _ in range(_MAX_REDIRECTS + 1):
            async with self._client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if not response.is_redirect:
                    return await self._document(url, response)
                target = urljoin(url, response.headers.get("location", ""))
                if _origin(target) != _origin(url):
                    raise _FetchFailed(f"{url}: redirected to another host ({_origin(target)[1]}), not followed")
                url = target
        raise _FetchFailed(f"{url}: more than {_MAX_REDIRECTS} redirects")

    @staticmethod
    async def _document(url: str, response: httpx2.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise _FetchFailed(f"{url}: HTTP {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise _FetchFailed(f"{url}: over {MAX_DOCUMENT_BYTES:,} bytes")
        try:
            document = json.loads(body)
        except ValueError:
            raise _FetchFailed(f"{url}: not JSON") from None
        if not isinstance(document, dict):
            raise _FetchFailed(f"{url}: not a JSON object")
        return document

    async def aclose(self) -> None:
        await self._client.aclose()


class _KeyCache:
    """The issuer's keys: fetched on first use, kept `ttl_s`; a refetch (expired, or a token naming a key we do
    not have) at most once per `cooldown_s` after the last attempt; callers arriving while a fetch is in flight
    wait for it and share its result; a failed refetch keeps the keys we had."""

    def __init__(self, documents: _Documents, *, issuer: str, jwks_url: str | None, ttl_s: float, cooldown_s: float):
        self._documents = documents
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._ttl_s = ttl_s
        self._cooldown_s = cooldown_s
        self._keys: list[_Key] = []
        self._fetched_at: float | None = None  # monotonic time of the last successful fetch
        self._attempted_at: float | None = None  # ... of the last attempt, successful or not
        self._attempts = 0
        self._lock = anyio.Lock()

    def find(self, kid: str | None, alg: str) -> _Key | None:
        if kid is not None:
            return next((key for key in self._keys if key.kid == kid), None)
        fitting = [key for key in self._keys if alg in key.by_alg]
        return fitting[0] if len(fitting) == 1 else None

    @property
    def empty(self) -> bool:
        return not self._keys

    def _stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at >= self._ttl_s

    def _cooling_down(self) -> bool:
        return self._attempted_at is not None and time.monotonic() - self._attempted_at < self._cooldown_s

    async def refresh_if_stale(self) -> None:
        if self._stale():
            await self.refresh()

    async def refresh(self) -> None:
        """Fetch the keys again, unless a fetch ended while we waited for the one in flight or the cooldown runs."""
        seen = self._attempts
        async with self._lock:
            if self._attempts != seen or self._cooling_down():
                return
            try:
                keys = _parse_jwks(await self._documents.get(await self._jwks_location()))
            except _FetchFailed as exc:
                kept = f"keeping the {len(self._keys)} keys we had" if self._keys else "no keys: tokens are refused"
                logger.warning("OAuth: could not fetch the issuer's keys (%s); %s", exc, kept)
            else:
                self._keys, self._fetched_at = keys, time.monotonic()
                logger.info("OAuth: fetched %d signing keys of %s", len(keys), self._issuer)
            finally:
                self._attempts += 1
                self._attempted_at = time.monotonic()

    async def _jwks_location(self) -> str:
        if self._jwks_url is None:
            self._jwks_url = await self._discover()
        return self._jwks_url

    async def _discover(self) -> str:
        failures = []
        for url in discovery_urls(self._issuer):
            try:
                metadata = await self._documents.get(url)
            except _FetchFailed as exc:
                failures.append(str(exc))
                continue
            if metadata.get("issuer") != self._issuer:
                failures.append(f"{url}: its issuer is {metadata.get('issuer')!r}, not {self._issuer!r}")
                continue
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str) or _origin(jwks_uri)[0] not in {"https", _origin(self._issuer)[0]}:
                failures.append(f"{url}: no usable jwks_uri")
                continue
            return jwks_uri
        raise _FetchFailed("no issuer metadata with a jwks_uri: " + "; ".join(failures))


class JwtVerifier:
    """The MCP SDK's `TokenVerifier` for JWT access tokens of one issuer, for one resource (this server)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str | None = None,
        leeway_s: float = 30,
        jwks_ttl_s: float = 600,
        refetch_cooldown_s: float = 30,
        timeout_s: float = 5,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self._audience = _canonical_url(audience)
        self._leeway_s = leeway_s
        self._documents = _Documents(timeout_s)
        self._keys = _KeyCache(
            self._documents, issuer=issuer, jwks_url=jwks_url, ttl_s=jwks_ttl_s, cooldown_s=refetch_cooldown_s
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's access, or None (with one INFO line saying why) if it is not one of ours, valid now."""
        try:
            return await self._verify(token)
        except _Refused as exc:
            logger.info("OAuth token refused: %s", exc)
            return None

    async def aclose(self) -> None:
        await self._documents.aclose()

    async def _verify(self, token: str) -> AccessToken:
        if len(token) > MAX_TOKEN_CHARS:
            raise _Refused(f"over {MAX_TOKEN_CHARS:,} characters ({len(token):,}), not parsed")
        header = _unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALLOWED_ALGORITHMS:
            raise _Refused(f"algorithm {str(alg)[:20]!r} is not allowed (asymmetric ones only)")
        if kid is not None and not isinstance(kid, str):
            raise _Refused("its key id (kid) is not a string")
        key = await self._key(kid, alg)
        claims = self._decode(token, key, alg)
        return self._access(token, claims)

    async def _key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        await self._keys.refresh_if_stale()
        key = self._keys.find(kid, alg)
        if key is None:
            await self._keys.refresh()  # a key the issuer rotated in since we fetched, perhaps
            key = self._keys.find(kid, alg)
        named = f"key {kid[:64]!r}" if kid is not None else f"no key id, and not exactly one {alg} key"
        if key is None and self._keys.empty:
            raise _Refused("we have none of the issuer's keys (its JWKS could not be fetched)")
        if key is None:
            raise _Refused(f"{named}: not among the issuer's keys")
        if alg not in key.by_alg:
            raise _Refused(f"{named} cannot verify {alg} (another key type or algorithm)")
        return key.by_alg[alg]

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self.issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "iss", "sub"], "verify_aud": False, "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            raise _Refused(f"{type(exc).__name__}: {exc}") from None
        return claims

    def _access(self, token: str, claims: dict[str, Any]) -> AccessToken:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise _Refused("no subject (sub)")
        resource = self._matched_audience(claims.get("aud"))
        client_id = next((v for v in (claims.get("azp"), claims.get("client_id")) if isinstance(v, str) and v), sub)
        return AccessToken(
            token=token,
            client_id=client_id,
            scopes=_scopes(claims),
            expires_at=int(claims["exp"]),
            resource=resource,
            subject=sub,
            claims=claims,
        )

    def _matched_audience(self, aud: object) -> str:
        values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        for value in values:
            if isinstance(value, str) and _canonical_url(value) == self._audience:
                return value
        shown = ", ".join(repr(str(v)[:100]) for v in values[:5]) or "none"
        raise _Refused(f"audience {shown} is not this server ({self.audience})")


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, to choose the key by. Not `jwt.get_unverified_header`: that checks every character of the
    whole token in Python, and `jwt.decode` does it again (together half the time of a cached-key check)."""
    segment = token.split(".", 1)[0]
    if token.count(".") != 2 or not _BASE64URL.fullmatch(segment):
        raise _Refused("not a JWT (three base64url parts)")
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError:
        raise _Refused("not a JWT (its header is not base64url JSON)") from None
    if not isinstance(header, dict):
        raise _Refused("not a JWT (its header is not a JSON object)")
    return header


def _scopes(claims: dict[str, Any]) -> list[str]:
    """`scope` (RFC 9068: space-separated), else `scp` (a list, or a string as some issuers send it)."""
    value = claims.get("scope", claims.get("scp"))
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []
