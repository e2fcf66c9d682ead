"""Model tool calls that outlive their request: jobs, their detaching, and their place in the store.

job     one call's live state: partial text, who listens for its progress, its result
runner  `Detacher`: runs calls in the server's task group, detaches them, writes and finishes their rows
"""

from .job import AnswerJob, RecordingFanout, RecordingProgress, StopReason, current_job
from .runner import BEAT_S, OWNER, Detacher, TooManyDetached, dump_result, load_result

__all__ = [
    "BEAT_S",
    "OWNER",
    "AnswerJob",
    "Detacher",
    "RecordingFanout",
    "RecordingProgress",
    "StopReason",
    "TooManyDetached",
    "current_job",
    "dump_result",
    "load_result",
]
