"""The README's facts that the code decides: the configuration table's defaults, and the error kinds it lists."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest

from mcp_llm_server.errors import FailureKind
from mcp_llm_server.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
ROWS = dict(re.findall(r"^\| `([A-Z_]+)` \| (.*?) \| ", README, re.MULTILINE))


def field_of(variable: str) -> str:
    for name, info in Settings.model_fields.items():
        choices = getattr(info.validation_alias, "choices", None) or []
        if variable == f"MCP_LLM_{name.upper()}" or variable in choices:
            return name
    raise AssertionError(f"the README documents {variable}, which no setting reads")


def default_of(name: str) -> Any:
    return Settings.model_fields[name].get_default(call_default_factory=True, validated_data={})


def test_default_models_are_the_settings_defaults() -> None:
    """The README once named `gpt-5.1` and `claude-sonnet-4-5` while the code defaulted to newer models."""
    assert ROWS["MCP_LLM_OPENAI_MODEL"] == f"`{default_of('openai_model')}`"
    assert ROWS["MCP_LLM_ANTHROPIC_MODEL"] == f"`{default_of('anthropic_model')}`"


@pytest.mark.parametrize("variable", sorted(ROWS))
def test_every_documented_default_is_the_code_default(variable: str) -> None:
    """Every row's default, where the code has a plain one, is that value (— stands for none)."""
    value = default_of(field_of(variable))
    shown = ROWS[variable]
    if value is None or value == [] or value == {}:
        return  # documented in words (`—`, "working directory", the effective URL)
    assert shown.startswith("`") and shown.endswith("`"), (variable, shown)
    shown = shown.strip("`")
    if isinstance(value, bool):
        assert shown == str(value).lower(), variable
    elif isinstance(value, int | float):
        assert float(shown) == value, variable
    else:
        assert shown == value, variable


def test_every_setting_is_documented() -> None:
    documented = {field_of(variable) for variable in ROWS}
    assert set(Settings.model_fields) - documented == set()


def test_every_upstream_error_kind_is_documented() -> None:
    for kind in typing.get_args(FailureKind):
        assert f"`{kind}`" in README, kind
