"""Failover: ask a list of targets in order until one answers (an alias naming several, `a|b|c`).

A target is skipped when it cannot answer: not configured, out of budget, no connection, retries exhausted on
429/5xx/529, an unknown model, a bad key, a stream that stalled. A 400 (the request is wrong, and would be wrong
for the next target too), a refusal, or the call's own deadline end the list: that failure is the call's. A
provider whose connection failed is passed over without a request for a while (`provider_health`), unless it is
the list's last target.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from ..aliases import ModelRef
from ..errors import UpstreamFailure
from ..progress import Progress
from ..providers.base import LLMRequest
from ..results import SkippedTarget
from .call import CallRefused, ModelCall
from .metering import Metered

__all__ = [
    "Answered",
    "FailoverFailed",
    "answer_first",
    "noted",
    "refused_after",
    "skipped_for",
    "switches",
    "targets_to_ask",
    "tried_before",
]

logger = logging.getLogger(__name__)

_SWITCH_FAILURES = frozenset(
    {
        "connection",
        "rate_limited",
        "overloaded",
        "server_error",
        "not_found",
        "authentication",
        "permission",
        "timeout",
        "stalled",
        "stream_error",
    }
)
_SWITCH_REFUSALS = frozenset({"not_configured", "budget_exceeded", "budget_unavailable"})


@dataclass(slots=True)
class Answered:
    ref: ModelRef
    metered: Metered
    skipped: list[SkippedTarget] = field(default_factory=list)


class FailoverFailed(Exception):
    """No target answered: `error` is the last failure (or the one that ended the list), `skipped` the others."""

    def __init__(self, error: UpstreamFailure | CallRefused, skipped: list[SkippedTarget]) -> None:
        super().__init__(str(error))
        self.error = error
        self.skipped = skipped


def switches(error: UpstreamFailure | CallRefused) -> bool:
    """Whether the next target is asked after this failure."""
    if isinstance(error, CallRefused):
        return error.kind in _SWITCH_REFUSALS
    return error.kind in _SWITCH_FAILURES


def skipped_for(ref: ModelRef, error: UpstreamFailure | CallRefused) -> SkippedTarget:
    reason = error.describe_briefly() if isinstance(error, UpstreamFailure) else str(error)
    return SkippedTarget(target=str(ref), kind=error.kind, reason=reason)


def tried_before(skipped: list[SkippedTarget]) -> str:
    """The targets passed over, in words for the end of an error message ("" when none was)."""
    if not skipped:
        return ""
    return "\n\nTargets tried before:" + "".join(f"\n- {s.target}: skipped ({s.reason})" for s in skipped)


def refused_after(refused: CallRefused, skipped: list[SkippedTarget]) -> CallRefused:
    """A refusal that ended a failover list, saying which targets were passed over before it."""
    if not skipped:
        return refused
    details = {**refused.details, "skipped": [s.model_dump() for s in skipped]}
    return CallRefused(refused.kind, f"{refused}{tried_before(skipped)}", details)


def targets_to_ask(
    call: ModelCall, refs: Sequence[ModelRef], skipped: list[SkippedTarget]
) -> Iterator[tuple[int, bool]]:
    """The index of each target to ask, in order, and whether it is the last; a target whose provider was found
    unreachable lately is added to `skipped` instead (the last target is always asked)."""
    for index, ref in enumerate(refs):
        last = index == len(refs) - 1
        down = None if last else call.state.health.down_note(ref.provider)
        if down is None:
            yield index, last
        else:
            skipped.append(SkippedTarget(target=str(ref), kind="connection", reason=f"{ref.provider}: {down}"))


def noted(call: ModelCall, ref: ModelRef, error: UpstreamFailure | CallRefused | None) -> None:
    """Tell the provider's health how the target did (None: it answered)."""
    if error is None:
        call.state.health.answered(ref.provider)
    elif error.kind == "connection":
        call.state.health.unreachable(ref.provider)


async def answer_first(call: ModelCall, refs: Sequence[ModelRef], request: LLMRequest, progress: Progress) -> Answered:
    """The first answer of `refs` in order (`request` with each one's model); raises `FailoverFailed`."""
    skipped: list[SkippedTarget] = []
    for index, last in targets_to_ask(call, refs, skipped):
        ref = refs[index]
        try:
            metered = await call.answer(ref.provider, replace(request, model=ref.model), progress)
            noted(call, ref, None)
            return Answered(ref, metered, skipped)
        except (UpstreamFailure, CallRefused) as error:
            noted(call, ref, error)
            if last or not switches(error):
                raise FailoverFailed(error, skipped) from None
            skipped.append(skipped_for(ref, error))
            logger.warning("%s could not answer (%s); asking %s", ref, error.kind, refs[index + 1])
            await progress.status(f"{ref} could not answer ({error.kind}); asking {refs[index + 1]}")
    raise AssertionError("answer_first needs at least one target")
