"""The progress relays at the end of a stream: a notification still being sent is delivered, never cancelled."""

from __future__ import annotations

import anyio
import pytest

from mcp_llm_server.progress import fanout_relay, progress_relay


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["single", "fanout"])
async def test_notification_in_flight_survives_the_end(kind: str) -> None:
    """A send still waiting (as over Streamable HTTP) when the stream ends completes; numbers stay 1, 2."""
    sent: list[tuple[float, str]] = []
    started, release = anyio.Event(), anyio.Event()

    async def send(progress: float, message: str) -> None:
        if progress == 1:
            started.set()
            await release.wait()
        sent.append((progress, message))

    async def release_when_all_wait() -> None:
        await started.wait()
        await anyio.wait_all_tasks_blocked()  # the block has ended and waits for the relay
        release.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(release_when_all_wait)
            if kind == "single":
                async with progress_relay(send, interval_s=0, tail_chars=100) as progress:
                    progress.text("a")
                    await started.wait()
                    progress.text("b")
            else:
                async with fanout_relay(send, interval_s=0, tail_chars=100) as fanout:
                    channel = fanout.channel("x")
                    channel.text("a")
                    await started.wait()
                    channel.text("b")
    prefix = "" if kind == "single" else "[x] "
    assert sent == [(1.0, f"{prefix}a"), (2.0, f"{prefix}ab")]
