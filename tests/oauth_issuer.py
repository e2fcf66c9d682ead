"""`LocalIssuer`: an OAuth authorization server's public face over loopback HTTP, for the OAuth tests.

Serves its metadata (RFC 8414, or OpenID Connect's) and its JWKS from the test's own event loop, holds RSA and EC
signing keys, and mints access tokens with whatever claims, header and key a test asks for, the bad ones included.
It counts JWKS requests and can answer them with 503 (`jwks_down`) or late (`jwks_delay_s`).

    async with LocalIssuer(audience="http://127.0.0.1:8000/mcp") as issuer:
        token = issuer.mint(sub="alice", scope="llm:ask")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from types import TracebackType
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from mcp_llm_server._standin._http import HttpConnection, HttpError, HttpRequest
from mcp_llm_server._standin._respond import send_json

__all__ = ["DEFAULT", "LocalIssuer", "PrivateKey", "new_key"]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KeyKind = Literal["RSA", "EC"]
Discovery = Literal["oauth", "openid", "none"]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()  # "the issuer's own value" for a `mint` argument (None there means "leave it out")

_ALG_OF: dict[KeyKind, str] = {"RSA": "RS256", "EC": "ES256"}
_HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def new_key(kind: KeyKind = "RSA") -> PrivateKey:
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _public_jwk(kid: str, key: PrivateKey) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        alg = "RS256"
    else:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        alg = "ES256"
    return {**jwk, "kid": kid, "use": "sig", "alg": alg}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_signed(header: dict[str, Any], payload: dict[str, Any], alg: str, secret: bytes) -> str:
    """A JWT PyJWT would refuse to make: `none`, or HMAC with a public key's PEM as the secret."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if alg == "none":
        return signing_input + "."
    digest = hmac.new(secret, signing_input.encode(), _HMAC_HASHES[alg]).digest()
    return f"{signing_input}.{_b64(digest)}"


class LocalIssuer:
    """An issuer at `http://127.0.0.1:<port><path>` serving its metadata and `/jwks.json` (see the module doc)."""

    def __init__(self, *, audience: str | None = None, path: str = "", discovery: Discovery = "oauth") -> None:
        self.audience = audience  # `mint`'s default `aud`
        self.path = path.rstrip("/")
        self.discovery = discovery
        self.keys: dict[str, PrivateKey] = {}  # kid -> key, all published
        self.current: dict[KeyKind, str] = {}  # the kid `mint` signs with, per kind
        self._serial = 0
        for kind in ("RSA", "EC"):
            self.rotate(kind)
        self.jwks_requests = 0
        self.metadata_requests = 0
        self.jwks_down = False
        self.jwks_delay_s = 0.0
        self.jwks_redirect: str | None = None  # answer `/jwks.json` with a 302 there (`/v2/jwks.json` serves too)
        self.jwks_padding_bytes = 0  # a JWKS this much bigger (an extra member)
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], HttpConnection] = {}

    # --- keys and tokens ----------------------------------------------------------------------------------

    def rotate(self, kind: KeyKind = "RSA", *, keep_old: bool = True) -> str:
        """A new signing key of `kind`, published and used by `mint` from now on; its kid."""
        self._serial += 1
        kid = f"{kind.lower()}-{self._serial}"
        old = self.current.get(kind)
        if old is not None and not keep_old:
            del self.keys[old]
        self.keys[kid] = new_key(kind)
        self.current[kind] = kid
        return kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [_public_jwk(kid, key) for kid, key in self.keys.items()]}

    def public_pem(self, kind: KeyKind = "RSA") -> bytes:
        from cryptography.hazmat.primitives import serialization

        public = self.keys[self.current[kind]].public_key()
        return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def mint(
        self,
        *,
        sub: str | None = "alice",
        aud: str | list[str] | None = DEFAULT,
        scope: str | None = None,
        exp_in: float | None = 300,
        iss: str | None = DEFAULT,
        kid: str | None = DEFAULT,
        alg: str = "RS256",
        key: PrivateKey | bytes | None = None,
        **extra_claims: Any,
    ) -> str:
        """A signed access token. `DEFAULT` takes the issuer's own value; None leaves a claim (or the kid) out.
        `key`: another private key (bad signature), or for HS*/none the secret bytes (default: a public PEM)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer if iss is DEFAULT else iss,
            "sub": sub,
            "aud": self.audience if aud is DEFAULT else aud,
            "iat": now,
            "exp": None if exp_in is None else now + int(exp_in),
            "scope": scope,
            **extra_claims,
        }
        payload = {name: value for name, value in claims.items() if value is not None}
        kind: KeyKind = "EC" if alg.startswith("ES") else "RSA"
        header: dict[str, Any] = {"typ": "JWT", "alg": alg}
        chosen_kid = self.current[kind] if kid is DEFAULT else kid
        if chosen_kid is not None:
            header["kid"] = chosen_kid
        if alg == "none" or alg.startswith("HS"):
            secret = key if isinstance(key, bytes) else self.public_pem(kind)
            return _hand_signed(header, payload, alg, secret)
        signing_key = key if key is not None else self.keys[self.current[kind]]
        return jwt.encode(payload, signing_key, algorithm=alg, headers=header)

    # --- serving ------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LocalIssuer is not serving")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.origin + self.path

    @property
    def jwks_url(self) -> str:
        return self.origin + "/jwks.json"

    def metadata_path(self) -> str | None:
        """Where this issuer's metadata is served (RFC 8414 inserts the well-known segment before the path)."""
        if self.discovery == "none":
            return None
        name = "oauth-authorization-server" if self.discovery == "oauth" else "openid-configuration"
        return f"/.well-known/{name}{self.path}"

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_url,
            "authorization_endpoint": self.origin + "/authorize",
            "token_endpoint": self.origin + "/token",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
        }

    async def __aenter__(self) -> LocalIssuer:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        # Aborting the connections ends their handlers (a cancelled one would be logged by asyncio's streams).
        for conn in list(self._connections.values()):
            conn.reset()
        if self._connections:
            _, pending = await asyncio.wait(list(self._connections), timeout=2)
            for task in pending:
                task.cancel()
        await self._server.wait_closed()
        self._server = None

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = HttpConnection(reader, writer)
        self._connections[task] = conn
        try:
            while (request := await conn.read_request()) is not None:
                await self._answer(conn, request)
                if not request.keep_alive:
                    break
        except (HttpError, ConnectionError):
            pass
        finally:
            self._connections.pop(task, None)
            with contextlib.suppress(Exception):
                await conn.close()

    async def _answer(self, conn: HttpConnection, request: HttpRequest) -> None:
        if request.method == "GET" and request.path in {"/jwks.json", "/v2/jwks.json"}:
            self.jwks_requests += 1
            if self.jwks_delay_s:
                conn.start_watching()  # the client giving up (or our closing) ends the wait
                if await conn.wait_disconnect(self.jwks_delay_s):
                    return
                await conn.stop_watching()
            if self.jwks_down:
                await send_json(conn, 503, [], {"error": "temporarily_unavailable"})
            elif self.jwks_redirect is not None and request.path == "/jwks.json":
                await send_json(conn, 302, [("location", self.jwks_redirect)], {})
            else:
                padding = {"padding": "x" * self.jwks_padding_bytes} if self.jwks_padding_bytes else {}
                await send_json(conn, 200, [], {**self.jwks(), **padding})
        elif request.method == "GET" and request.path == self.metadata_path():
            self.metadata_requests += 1
            await send_json(conn, 200, [], self.metadata())
        else:
            await send_json(conn, 404, [], {"error": "not_found"})
