"""Answers run by another process on the same database: whether that process is gone, and waiting on the store."""

from __future__ import annotations

import os

from .runner import HOST, OWNER

__all__ = ["POLL_S", "STALE_AFTER_S", "owner_gone"]

POLL_S = 0.25  # how often a get_answer or cancel_answer reads the store for an answer another process runs
# A running answer whose heartbeat (written about once a second) is older than this has lost its process.
STALE_AFTER_S = 10.0


def owner_gone(owner: str, heartbeat_at: float, now: float) -> bool:
    """Whether the process that ran an answer is gone: its heartbeat is stale, or it ran on this host and in this pid
    namespace (`HOST`) under a pid that is no longer alive (or is this process's own pid, from an earlier run)."""
    if now - heartbeat_at > STALE_AFTER_S:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if owner == OWNER or host != HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # this pid, another nonce: a previous run of this process (pid 1 in a container, say)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
