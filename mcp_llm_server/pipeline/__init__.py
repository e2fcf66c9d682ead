"""The call pipeline every model tool goes through (see `call.py`).

deadline  one time limit from the call's arrival, over every step
policy    the limits read from the settings: time, retries, budget caps, worst-case cost, answer size
context   files and conversation history, the conversation's lock
metering  budget reservation, settlement, ledger row
run       one answer: provider slot, retries, stall limit, the cap on what is collected, progress
call      `model_call`: the above in order, for one tool call
"""

from .call import CallRefused, ModelCall, deadline_refusal, model_call, refusal_result
from .deadline import Deadline, DeadlineExceeded
from .metering import Metered
from .policy import CallLimits, budget_caps, call_limits, caller_caps
from .run import CallOutcome, run_call

__all__ = [
    "CallLimits",
    "CallOutcome",
    "CallRefused",
    "Deadline",
    "DeadlineExceeded",
    "Metered",
    "ModelCall",
    "budget_caps",
    "call_limits",
    "caller_caps",
    "deadline_refusal",
    "model_call",
    "refusal_result",
    "run_call",
]
