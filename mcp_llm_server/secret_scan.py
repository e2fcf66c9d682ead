"""Secrets in files: names that hold credentials by convention, and contents that carry one.

A name check alone misses a hard link or a copy under an innocent name, so the content is checked too: private
key blocks, the shapes of well-known tokens (prefixed, so a match is almost never anything else), `.env` and
`.netrc` style credential lines, and the server's own configured secrets. A maintained scanner (detect-secrets
1.5.0) was measured and left out: ~15 s per MB of source (its per-line plugin dispatch), ~0.2-0.4 s to import with
`requests` pulled in, and it knows neither Anthropic keys nor `.env` lines in a file not named `.env`.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from collections.abc import Iterable, Sequence

__all__ = ["MIN_OWN_SECRET_CHARS", "secret_in_text", "secret_name"]

# Matched against the normalized file name (see `_normalized`).
_NAMES = (
    ".env",
    ".env.*",
    ".env-*",
    ".env_*",
    "*.env",
    ".envrc",
    ".netrc",
    "_netrc",
    ".pgpass",
    ".my.cnf",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
    ".htpasswd",
    ".vault-token",
    "credentials",
    "credentials.*",
    "*.credentials",
    "authorized_keys",
    "authorized_keys2",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "*.ppk",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "secrets.json",
    "secrets.yaml",
    "secrets.yml",
    "secrets.toml",
    "*.tfvars",
    "*.tfstate",
    "client_secret*.json",
    "service-account*.json",
    "service_account*.json",
)
# Directories whose every file is a credential or key store.
_DIRECTORIES = frozenset({".ssh", ".gnupg", ".aws", ".azure", ".kube", ".password-store"})
# A copy of a secret keeps being one: `.env.bak`, `id_rsa~`, `credentials.orig`.
_COPY_SUFFIXES = (".bak", ".backup", ".old", ".orig", ".save", ".swp", ".swo", ".tmp", ".copy", "~")

MIN_OWN_SECRET_CHARS = 12  # shorter configured values (a short database password) would match ordinary words


def _normalized(name: str) -> str:
    """Case, compatibility forms, surrounding blanks and trailing dots folded; copy suffixes removed."""
    name = unicodedata.normalize("NFKC", name).casefold().strip().rstrip(". ")
    stripped = True
    while stripped:
        stripped = False
        for suffix in _COPY_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)].rstrip(". ")
                stripped = True
    return name


def secret_name(parts: Iterable[str]) -> str | None:
    """The pattern a path (its components) matches, as shown to the caller, or None."""
    parts = [_normalized(part) for part in parts if part not in ("", ".", "/")]
    if not parts:
        return None
    for directory in parts[:-1]:
        if directory in _DIRECTORIES:
            return f"{directory}/"
    return next((pattern for pattern in _NAMES if fnmatch.fnmatchcase(parts[-1], pattern)), None)


def _shapes() -> tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...]:
    """(kind, literal needles, pattern): the pattern runs only on a text holding one of its needles (fast)."""
    token = r"[A-Za-z0-9_\-]"
    shapes = {
        "a private key block": (
            ("PRIVATE KEY", "PuTTY-User-Key-File-"),
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]{64,}?-----END"
            r"|PuTTY-User-Key-File-\d+: [\s\S]*?Private-Lines: ",
        ),
        "an AWS access key id": (
            ("AKIA", "ASIA", "ABIA", "ACCA"),
            r"\b(?:AKIA|ASIA|ABIA|ACCA)(?![0-9A-Z]{9}EXAMPLE)[0-9A-Z]{16}\b",
        ),
        "a GitHub token": (
            ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{60,})\b",
        ),
        "a GitLab token": (
            ("glpat-", "gldt-", "glft-", "glsoat-", "glrt-", "glcbt-", "glptt-", "gloas-"),
            rf"\bgl(?:pat|dt|ft|soat|rt|cbt|ptt|oas)-{token}{{20,}}",
        ),
        "a Slack token": (
            ("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-"),
            r"\bxox[abposr]-\d+-[A-Za-z0-9\-]{10,}",
        ),
        "a Stripe key": (("k_live_",), r"\b[rs]k_live_[0-9A-Za-z]{24,}"),
        "an OpenAI key": (
            ("sk-proj-", "sk-svcacct-", "sk-admin-", "T3BlbkFJ"),
            rf"\bsk-(?:(?:proj|svcacct|admin)-{token}{{40,}}|{token}{{16,}}T3BlbkFJ{token}{{16,}})",
        ),
        "an Anthropic key": (("sk-ant-",), rf"\bsk-ant-[a-z]{{3,6}}\d{{2}}-{token}{{80,}}"),
        "a Google API key": (("AIza",), rf"\bAIza{token}{{35}}(?!{token})"),
        "an npm token": (("npm_",), r"\bnpm_[A-Za-z0-9]{36}\b"),
        "a PyPI token": (("pypi-AgE",), rf"\bpypi-AgE{token}{{60,}}"),
        "a Hugging Face token": (("hf_",), r"\bhf_[A-Za-z0-9]{34,}\b"),
        "a SendGrid key": (("SG.",), rf"\bSG\.{token}{{22}}\.{token}{{43}}(?!{token})"),
        "a .netrc password": (
            ("machine",),
            r"(?m)^[ \t]*(?:default|machine[ \t]+\S+)\s+(?:login\s+\S+\s+)?password\s+\S+",
        ),
    }
    return tuple((kind, needles, re.compile(pattern)) for kind, (needles, pattern) in shapes.items())


_SHAPES = _shapes()
# `NAME=value` lines of an env file whose name says secret, or whose value is a URL with a password. A cheap hint
# finds candidate lines; the line pattern then decides (anchored patterns tried at every line start are slow).
_ENV_CHECKS = (
    (
        re.compile(r"(?:SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY)[A-Z0-9_]*=[^\s=]"),
        re.compile(
            r"[ \t]*(?:export[ \t]+)?(?=[A-Z])[A-Z0-9_]*"
            r"(?:SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY)[A-Z0-9_]*="
            r"[\"']?([^\s\"'$`(){}\[\]<>]{8,})[\"']?[ \t]*\r?"
        ),
    ),
    (
        re.compile(r"://[^\s:/@]+:[^\s@/]+@"),
        re.compile(r"[ \t]*(?:export[ \t]+)?[A-Z][A-Z0-9_]*=[\"']?[a-z][a-z0-9+.\-]*://[^\s:/@]+:([^\s@/]+)@.*"),
    ),
)
_PLACEHOLDER = re.compile(
    r"(?i)^(?:x+|\*+|\.+|<.*>|\$\{.*\}|your[_\-].*|.*[_\-]here|changeme|change[_\-]me|password|passwd|pass|pw|secret"
    r"|token|example|dummy|placeholder|redacted|https?://[^@]*)$"
)


def _line_at(text: str, start: int, end: int) -> str:
    first = text.rfind("\n", 0, start) + 1
    last = text.find("\n", end)
    return text[first : len(text) if last < 0 else last]


def _env_line(text: str) -> bool:
    for hint, line_pattern in _ENV_CHECKS:
        for found in hint.finditer(text):
            line = line_pattern.fullmatch(_line_at(text, found.start(), found.end()))
            if line is not None and not _PLACEHOLDER.match(line.group(1)):
                return True
    return False


def secret_in_text(text: str, own_secrets: Sequence[str] = ()) -> str | None:
    """What kind of secret `text` carries ("a private key block", "this server's own API key"...), or None."""
    if any(len(s) >= MIN_OWN_SECRET_CHARS and s in text for s in own_secrets):
        return "one of this server's own secrets (an API key or token it is configured with)"
    for kind, needles, pattern in _SHAPES:
        if any(needle in text for needle in needles) and pattern.search(text):
            return kind
    if _env_line(text):
        return "a credential assignment (`NAME=value`, as in an env file)"
    return None
