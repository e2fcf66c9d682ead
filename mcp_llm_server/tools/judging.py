"""`ask_many`'s judge and stances: each target may argue a stance, and a judge model weighs the answers.

The judge sees the question and the answers labelled A, B, C… in target order, never the models' names (a name
must not sway it), and writes a synthesis: where they agree, where they differ, which it trusts and why. It runs
through the same pipeline as every answer (deadline, budget, retries, redaction, progress); `fanout` runs it.
"""

from __future__ import annotations

import string
from dataclasses import replace

from ..pipeline import CallRefused
from ..providers.base import LLMRequest
from ..results import TargetAnswer

__all__ = ["JUDGE_SYSTEM", "MAX_STANCE_CHARS", "check_stances", "judge_prompt", "stance_requests"]

MAX_STANCE_CHARS = 2000
_STANCES = {
    "for": "Argue for the position the question asks about: make the strongest honest case in its favour, and say "
    "what would change your mind.",
    "against": "Argue against the position the question asks about: make the strongest honest case against it, "
    "and say what would change your mind.",
    "neutral": "Weigh the question evenly: give the best case on each side before your own conclusion.",
}
JUDGE_SYSTEM = (
    "You judge answers that several assistants gave to one question. They are labelled A, B, C…; you are not told "
    "which model wrote which, and must not guess. Write a synthesis: where the answers agree, where they differ "
    "(and which side of each difference is right, with your reason), which answer you trust most and why, and "
    "the answer you would give. Refer to the answers by their labels."
)


def check_stances(stances: list[str] | None, targets: int) -> None:
    """Refuse (before any request) stances that do not pair one to one with the targets."""
    if stances is not None and len(stances) != targets:
        raise CallRefused(
            "invalid_stances",
            f"{len(stances)} stances for {targets} targets: give one stance per target, in the targets' order "
            "(`for`, `against`, `neutral`, or your own words), or omit `stances`.",
            {"stances": len(stances), "targets": targets},
        )


def _with_stance(system: str | None, stance: str) -> str:
    told = _STANCES.get(stance.strip().lower(), f"Take this stance in your answer: {stance.strip()}")
    return f"{system}\n\n{told}" if system else told


def stance_requests(request: LLMRequest, models: list[str], stances: list[str] | None) -> list[LLMRequest]:
    """One request per target: its model, and its stance added to the system text."""
    if stances is None:
        return [replace(request, model=model) for model in models]
    return [
        replace(request, model=model, system=_with_stance(request.system, stance))
        for model, stance in zip(models, stances, strict=True)
    ]


def _labels(count: int) -> list[str]:
    letters = string.ascii_uppercase
    return [letters[i] if i < len(letters) else f"A{i}" for i in range(count)]


def judge_prompt(question: str, answers: list[TargetAnswer]) -> tuple[str, dict[str, str]]:
    """The judge's prompt, and which label stands for which target."""
    labels = dict(zip(_labels(len(answers)), (a.target for a in answers), strict=True))
    parts = [f"The question:\n{question}\n\nThe answers:"]
    for label, answer in zip(labels, answers, strict=True):
        body = answer.text if answer.error is None else f"(no answer: this assistant failed, {answer.error.kind})"
        parts.append(f"\n### Answer {label}\n{body}")
    return "\n".join(parts), labels
