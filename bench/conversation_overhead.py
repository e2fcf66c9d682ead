"""Added time per call of a conversation: the store read (the history) and write (the new turn), at 1 and 50 turns.

    python bench/conversation_overhead.py [--reps 40] [--turn-chars 2500]

Each sample continues a fresh conversation that already has N turns (SQLite file in a temporary directory, WAL, as
the server uses it): `get` (every turn), the history trimmed and rendered as Anthropic and Responses messages, then
`append` (one transaction, with the expiry/size-cap check). Also reports the first use of the database in this
process (SQLAlchemy imported, engine created, schema checked and created).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from mcp_llm_server.pipeline.context import _as_turn, trim_history
from mcp_llm_server.providers.base import LLMRequest
from mcp_llm_server.providers.history import anthropic_messages, responses_input
from mcp_llm_server.store import ConversationStore, Database, NewTurn


def _turn(n: int, chars: int) -> NewTurn:
    prompt = f"Question {n}: " + "p" * (chars // 5)
    answer = f"Answer {n}: " + "a" * (chars - chars // 5)
    usage = {"input_tokens": 100, "output_tokens": 400, "cached_input_tokens": 0}
    return NewTurn(provider="openai", model="gpt-5.5", system="Be brief.", prompt=prompt, answer=answer, usage=usage)


async def _sample(store: ConversationStore, conversation_id: str, chars: int) -> tuple[float, float, float]:
    """Milliseconds to read the conversation, to build the request messages, and to append the new turn."""
    t0 = time.perf_counter()
    conversation = await store.get(conversation_id)
    t1 = time.perf_counter()
    assert conversation is not None
    kept, _ = trim_history(conversation.turns, 200_000)
    request = LLMRequest(prompt="next", model="m", max_tokens=10, history=tuple(_as_turn(t, "Be brief.") for t in kept))
    anthropic_messages(request)
    responses_input(request)
    t2 = time.perf_counter()
    await store.append(conversation_id, _turn(len(conversation.turns), chars))
    t3 = time.perf_counter()
    return (t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000


async def main(reps: int, chars: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = ConversationStore(
            Database(f"sqlite+aiosqlite:///{Path(tmp) / 'c.db'}"), max_age_s=30 * 86_400, max_chars=200_000_000
        )
        started = time.perf_counter()
        await store.list_recent()
        print(
            f"first use of the database (import SQLAlchemy, open, create schema): "
            f"{(time.perf_counter() - started) * 1000:.1f} ms"
        )
        for turns in (1, 50):
            samples = []
            for rep in range(reps):
                conversation_id = f"c{turns}-{rep}"
                for n in range(turns):
                    await store.append(conversation_id, _turn(n, chars))
                samples.append(await _sample(store, conversation_id, chars))
            read, build, write = (statistics.median(column) for column in zip(*samples, strict=True))
            total = statistics.median(sum(s) for s in samples)
            print(
                f"{turns:>2} turns ({turns * chars / 1000:.0f} kchars of history): read {read:.2f} ms, "
                f"messages {build:.2f} ms, write {write:.2f} ms; added per call (median) {total:.2f} ms "
                f"[{reps} samples]"
            )
        await store.db.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--turn-chars", type=int, default=2500)
    args = parser.parse_args()
    anyio.run(main, args.reps, args.turn_chars)
    sys.exit(0)
