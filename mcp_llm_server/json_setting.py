"""Settings given as a JSON object: in the environment a JSON string, from code a mapping already."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["json_object"]


def json_object(value: object, shape: str) -> dict[Any, Any]:
    """`value` as a mapping (a blank string: empty); a ValueError showing `shape` (what is expected) otherwise.
    The value itself is never echoed: it may be a secret pasted into the wrong variable."""
    if isinstance(value, str):
        if value.strip() == "":
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg}): expected {shape}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object {shape}")
    return value
