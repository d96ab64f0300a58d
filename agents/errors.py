"""Typed errors of the agents layer. All derive from ``visionllm2.sdk.VisionLLMError``.

Every message says what was expected, what came, and the fix, so that an LLM reading it as a
``ToolMessage`` can correct its next call.
"""

from __future__ import annotations

from typing import Any

from visionllm2.sdk.errors import InvalidInputError, VisionLLMError


class AgentError(VisionLLMError):
    """Base of the errors raised by ``visionllm2.agents``."""


class PathNotAllowedError(InvalidInputError, AgentError):
    """A file path a tool would read or write lies outside the directories the user allowed."""


class PlanError(InvalidInputError, AgentError):
    """A plan is malformed: unknown tool, bad arguments, or a reference to a missing or later step."""


class GoalNotUnderstoodError(PlanError):
    """The rule-based planner found no step it knows in the goal."""


class StepFailedError(AgentError):
    """A plan step's tool returned an error. ``step`` and ``tool`` name it; ``run`` holds the steps so far."""

    def __init__(self, message: str, step: str, tool: str, run: Any = None) -> None:
        super().__init__(message)
        self.step, self.tool, self.run = step, tool, run


class BudgetExceededError(AgentError):
    """The step or time budget ran out. ``run`` holds what was done before it stopped."""

    def __init__(self, message: str, run: Any = None) -> None:
        super().__init__(message)
        self.run = run


__all__ = [
    "AgentError", "BudgetExceededError", "GoalNotUnderstoodError", "PathNotAllowedError", "PlanError",
    "StepFailedError",
]
