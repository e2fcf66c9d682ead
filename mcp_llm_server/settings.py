"""Configuration from the environment (and an optional `.env` file).

The provider's own variable names are kept for keys and base URLs (`OPENAI_API_KEY`, `ANTHROPIC_BASE_URL`...)
so an existing shell setup works unchanged; everything that belongs to this server is prefixed `MCP_LLM_`.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .aliases import PROVIDER_NAMES, alias_providers, parse_aliases
from .caller_budgets import CallerBudgets, parse_caller_budgets
from .callers import TOKEN_PREFIX
from .named_tokens import parse_named_tokens
from .pricing import ModelPrice
from .providers_config import ProviderSpec, parse_providers

__all__ = ["Settings", "SettingsError", "load_settings"]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
OpenAIApi = Literal["responses", "chat"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MCP_LLM_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
    )

    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "MCP_LLM_OPENAI_API_KEY")
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "MCP_LLM_ANTHROPIC_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "MCP_LLM_OPENAI_BASE_URL")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "MCP_LLM_ANTHROPIC_BASE_URL")
    )

    openai_api: OpenAIApi = "responses"
    openai_model: str = Field(default="gpt-5.5", min_length=1)
    anthropic_model: str = Field(default="claude-sonnet-5-5", min_length=1)
    max_tokens: int = Field(default=4096, ge=1, le=1_000_000)
    # Named providers beside the two built in: `{"name": {"base_url", "api", "api_key_env"?, ...}}`.
    providers: Annotated[dict[str, ProviderSpec], NoDecode] = Field(default_factory=dict)

    # Model catalogue and the surface hosts see.
    model_aliases: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)  # name -> `provider:model`
    models_ttl_s: float = Field(default=3600.0, ge=0, le=604_800)  # 0: every list_models call asks upstream
    tools: Annotated[list[str] | None, NoDecode] = None  # None: every tool (unless disabled)
    disabled_tools: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_output_chars: int = Field(default=80_000, ge=1_000, le=100_000_000)

    connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    call_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    stall_timeout_s: float = Field(default=60.0, gt=0, le=86_400)
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024, le=4 * 1024**3)
    max_call_timeout_s: float = Field(default=3600.0, gt=0, le=86_400)
    # A model tool still working after this long returns `status: running` with an `answer_id` (fetched later with
    # get_answer) instead of outliving the host's request timeout; 0: never detach.
    detach_after_s: float = Field(default=50.0, ge=0, le=3600)
    max_detached: int = Field(default=16, ge=1, le=10_000)  # detached answers running at once in one process

    max_attempts: int = Field(default=4, ge=1, le=20)
    backoff_initial_s: float = Field(default=0.5, ge=0, le=60)
    backoff_max_s: float = Field(default=8.0, ge=0, le=600)
    retry_after_max_s: float = Field(default=60.0, ge=0, le=3600)

    # Upstream requests open to a provider at once: the limit starts at the initial one, grows on success and shrinks
    # on 429/529 (adaptive_limit.py), never past the ceiling (`*_concurrency`). The ceiling only bounds this
    # server's own sockets and streams and the burst before a provider's first 429; the provider's 429s set the
    # real limit. The initial one lets a typical fan-out (ask_many takes 8 targets; a host's parallel calls) go
    # out in one wave.
    openai_concurrency: int = Field(default=64, ge=1, le=1024)
    anthropic_concurrency: int = Field(default=64, ge=1, le=1024)
    openai_initial_concurrency: int | None = Field(default=None, ge=1, le=1024)  # None: 16, at most the ceiling
    anthropic_initial_concurrency: int | None = Field(default=None, ge=1, le=1024)

    progress_interval_s: float = Field(default=0.25, ge=0, le=60)
    progress_tail_chars: int = Field(default=600, ge=0, le=100_000)
    heartbeat_s: float = Field(default=10.0, ge=0, le=3600)  # 0: no heartbeats
    max_prompt_chars: int = Field(default=400_000, ge=1, le=50_000_000)
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)

    extract_provider: str = "openai"  # a built-in or named provider
    extract_max_schema_bytes: int = Field(default=65_536, ge=256, le=10_000_000)
    extract_max_schema_depth: int = Field(default=32, ge=2, le=1000)

    # Conversations (SQLite under the user data directory unless a SQLAlchemy async URL is given).
    database_url: str | None = None
    history_max_chars: int = Field(default=200_000, ge=0, le=50_000_000)
    conversation_max_age_days: float = Field(default=30.0, ge=0, le=36_500)  # 0: kept until deleted
    conversations_max_chars: int = Field(default=200_000_000, ge=0, le=100_000_000_000)  # 0: no cap

    # Costs and budgets (USD). Prices: `{"model" or "provider:model": {"input_per_mtok", "output_per_mtok",
    # "cached_input_per_mtok"?}}`, winning over genai-prices. A budget left unset is no cap.
    model_prices: dict[str, ModelPrice] = Field(default_factory=dict)
    unknown_model_price: ModelPrice | None = None  # what budgets count for a model without a price (None: 0)
    budget_daily_usd: float | None = Field(default=None, ge=0)
    budget_monthly_usd: float | None = Field(default=None, ge=0)
    openai_budget_daily_usd: float | None = Field(default=None, ge=0)
    openai_budget_monthly_usd: float | None = Field(default=None, ge=0)
    anthropic_budget_daily_usd: float | None = Field(default=None, ge=0)
    anthropic_budget_monthly_usd: float | None = Field(default=None, ge=0)
    # Caps every caller has, each in windows of its own; `caller_budgets` overrides them for the callers it names.
    caller_budget_daily_usd: float | None = Field(default=None, ge=0)
    caller_budget_monthly_usd: float | None = Field(default=None, ge=0)
    caller_budgets: Annotated[CallerBudgets, NoDecode] = Field(default_factory=dict)

    # Files as context.
    file_roots: Annotated[list[str], NoDecode] = Field(default_factory=list)  # empty: only the client's MCP roots
    allow_secret_files: bool = False
    max_file_bytes: int = Field(default=512 * 1024, ge=1, le=100_000_000)
    max_files_total_bytes: int = Field(default=1024 * 1024, ge=1, le=1_000_000_000)
    # Images and PDFs (`files.py`): caps of their own, and a total apart from the text files'.
    # 3.75 MiB: its base64, which Anthropic measures, is Anthropic's 5 MiB per-image cap.
    max_image_bytes: int = Field(default=3_932_160, ge=1, le=1_000_000_000)
    max_document_bytes: int = Field(default=20 * 1024 * 1024, ge=1, le=1_000_000_000)
    # Base64 27 MiB: with the text and history, under Anthropic's 32 MB request.
    max_media_total_bytes: int = Field(default=20 * 1024 * 1024, ge=1, le=10_000_000_000)

    log_level: LogLevel = "WARNING"

    # Streamable HTTP (`--transport http`) only.
    http_token: SecretStr | None = None
    # Callers told apart: named tokens (`{"name": "token" or {"file": "/path"}}`, the caller is `token:<name>`) and
    # OAuth access tokens (JWTs of `oauth_issuer` for `oauth_resource_url`; the caller is `oauth:<sub>`).
    http_tokens: Annotated[dict[str, SecretStr], NoDecode] = Field(default_factory=dict)
    oauth_issuer: str | None = None
    oauth_resource_url: str | None = None  # this server's MCP URL, the audience its tokens must carry
    oauth_jwks_url: str | None = None  # None: from the issuer's metadata
    oauth_required_scopes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_caller: str | None = None  # a caller id (`token:ops`, `oauth:<sub>`) that sees everyone's data and usage
    http_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    http_allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    http_stateless: bool = False
    # Bounds under abuse: open connections (beyond it a new one evicts the oldest still sending its headers, or
    # gets 503), time to send the headers and the body, stateful sessions and their idle expiry.
    http_max_connections: int = Field(default=1000, ge=1, le=1_000_000)
    http_header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    http_body_timeout_s: float = Field(default=30.0, gt=0, le=86_400)
    http_max_sessions: int = Field(default=500, ge=1, le=1_000_000)
    http_session_idle_s: float = Field(default=1800.0, gt=0, le=604_800)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("openai_initial_concurrency", "anthropic_initial_concurrency")
    @classmethod
    def _initial_within_ceiling(cls, value: int | None, info: ValidationInfo) -> int | None:
        ceiling_field = info.field_name.replace("_initial", "") if info.field_name else ""
        ceiling = info.data.get(ceiling_field)
        if value is not None and isinstance(ceiling, int) and value > ceiling:
            variable = f"MCP_LLM_{ceiling_field.upper()}"
            raise ValueError(f"the initial limit must not exceed the ceiling {variable}={ceiling}")
        return value

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _aliases(cls, value: object) -> object:
        return parse_aliases(value)

    @field_validator("providers", mode="before")
    @classmethod
    def _providers(cls, value: object) -> object:
        return parse_providers(value)

    @field_validator("extract_provider", mode="before")
    @classmethod
    def _canonical_provider(cls, value: object) -> object:
        return PROVIDER_NAMES.get(value.strip().lower(), value.strip().lower()) if isinstance(value, str) else value

    @field_validator("tools", mode="before")
    @classmethod
    def _enabled_tools(cls, value: object) -> object:
        if isinstance(value, str):  # blank: not set
            return [item.strip() for item in value.split(",") if item.strip()] or None
        return value

    @field_validator("disabled_tools", mode="before")
    @classmethod
    def _disabled_tools(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if value and info.data.get("tools") is not None:
            raise ValueError("set MCP_LLM_TOOLS (the tools to expose) or MCP_LLM_DISABLED_TOOLS, not both")
        return value

    @field_validator("openai_api_key", "anthropic_api_key", "http_token", mode="before")
    @classmethod
    def _secret(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip() == "":  # blank: not set
                return None
            _no_stray_whitespace(value)
        return value

    @field_validator("http_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("http_tokens", mode="before")
    @classmethod
    def _named_tokens(cls, value: object) -> object:
        return parse_named_tokens(value)

    @field_validator("oauth_issuer", "oauth_resource_url", "oauth_jwks_url", "admin_caller", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("oauth_issuer", "oauth_resource_url", "oauth_jwks_url")
    @classmethod
    def _oauth_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("oauth_resource_url")
    @classmethod
    def _resource_with_issuer(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("oauth_issuer") is not None:
            raise ValueError("must be set with MCP_LLM_OAUTH_ISSUER: this server's MCP URL (the tokens' audience)")
        return value

    @field_validator("http_allowed_hosts", "http_allowed_origins", "oauth_required_scopes", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("file_roots", mode="before")
    @classmethod
    def _path_list(cls, value: object) -> object:
        if isinstance(value, str):  # separated like PATH: `:` (`;` on Windows)
            return [item.strip() for item in value.split(os.pathsep) if item.strip()]
        return value

    @field_validator(
        "unknown_model_price",
        "budget_daily_usd",
        "budget_monthly_usd",
        "openai_budget_daily_usd",
        "openai_budget_monthly_usd",
        "anthropic_budget_daily_usd",
        "anthropic_budget_monthly_usd",
        "caller_budget_daily_usd",
        "caller_budget_monthly_usd",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("caller_budgets", mode="before")
    @classmethod
    def _caller_budgets(cls, value: object) -> object:
        return parse_caller_budgets(value)

    @field_validator("database_url")
    @classmethod
    def _blank_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        password = urlsplit(value.strip()).password
        if password is not None:
            _no_stray_whitespace(password, what="its password")
        return value.strip()

    @field_validator("openai_base_url", "anthropic_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _providers_named_exist(self) -> Settings:
        """Aliases and the extract provider name providers that exist; no alias hides a provider's name."""
        known = {"openai", "anthropic", *self.providers}
        unknown = sorted(alias_providers(self.model_aliases) - known)
        if unknown:
            raise ValueError(
                f"MCP_LLM_MODEL_ALIASES: the provider `{unknown[0]}` is neither built in (openai, "
                "anthropic) nor named in MCP_LLM_PROVIDERS"
            )
        clash = sorted(set(self.model_aliases) & set(self.providers))
        if clash:
            raise ValueError(f"MCP_LLM_MODEL_ALIASES: the alias `{clash[0]}` is the name of a provider")
        if self.extract_provider not in known:
            raise ValueError(
                f"MCP_LLM_EXTRACT_PROVIDER: `{self.extract_provider}` is neither openai, anthropic nor a name in "
                "MCP_LLM_PROVIDERS"
            )
        return self

    @model_validator(mode="after")
    def _caller_budgets_name_known_tokens(self) -> Settings:
        """A cap for `token:<name>` with no such named token would apply to nobody: a typo, refused at start."""
        if self.http_tokens:
            unknown = [
                caller
                for caller in self.caller_budgets
                if caller.startswith(TOKEN_PREFIX) and caller.removeprefix(TOKEN_PREFIX) not in self.http_tokens
            ]
            if unknown:
                raise ValueError(
                    f"MCP_LLM_CALLER_BUDGETS names {unknown[0]}, but MCP_LLM_HTTP_TOKENS has no token named "
                    f"{unknown[0].removeprefix(TOKEN_PREFIX)!r}: fix the name, or add the token"
                )
        return self

    @property
    def callers_told_apart(self) -> bool:
        """Whether HTTP callers have identities of their own (and each sees only its own data)."""
        return bool(self.http_tokens) or self.oauth_issuer is not None

    def secrets(self) -> list[str]:
        """The configured secret values, for redaction."""
        keys = (self.openai_api_key, self.anthropic_api_key, self.http_token, *self.http_tokens.values())
        found = [s.get_secret_value() for s in keys if s is not None]
        found += [spec.api_key for spec in self.providers.values() if spec.api_key]
        if self.database_url:  # a PostgreSQL URL may carry a password
            password = urlsplit(self.database_url).password
            if password:
                found.append(password)
        return found


def _no_stray_whitespace(secret: str, what: str = "it") -> None:
    """A secret never contains whitespace: a space or newline pasted with it would be sent (and echoed back in an
    `Illegal header value` error) or make the secret fail. The message never shows the secret."""
    if any(char.isspace() for char in secret):
        raise ValueError(f"{what} contains whitespace (a stray space or newline?); remove it")


class SettingsError(Exception):
    """A setting is malformed; the message names the environment variable."""


def _env_name(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else "?"
    info = Settings.model_fields.get(name)
    if info is None:  # pydantic reports a field read through its alias by the alias itself
        return name.upper()
    alias = info.validation_alias
    if isinstance(alias, AliasChoices) and alias.choices:
        return str(alias.choices[0])
    return f"MCP_LLM_{name.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; raise `SettingsError` with one line per bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            # Never echo the offending value: it may be a key pasted into the wrong variable.
            if err["loc"]:
                problems.append(f"{_env_name(err['loc'])}: {err['msg']}")
            else:  # a check across settings: its message names the variables
                problems.append(err["msg"].removeprefix("Value error, "))
        raise SettingsError("; ".join(problems)) from None
