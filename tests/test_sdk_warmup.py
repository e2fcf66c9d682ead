"""The SDK warm-up streams one answer per API through an in-memory transport: it must keep working as the SDKs
change (`warm_sdks` itself never raises, so this calls the part that does)."""

from __future__ import annotations

import pytest

from mcp_llm_server.sdk_warmup import WarmApi, _warm


@pytest.mark.anyio
@pytest.mark.parametrize("api", ["responses", "chat", "messages"])
async def test_each_api_streams_its_warm_up_answer(api: WarmApi) -> None:
    await _warm([api])
