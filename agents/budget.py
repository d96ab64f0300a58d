"""Step and time budgets that stop runaway agent loops and plans."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from visionllm2.sdk.errors import InvalidInputError

from .errors import BudgetExceededError


@dataclass(frozen=True)
class Budget:
    """How much an agent run or a plan may do.

    Attributes:
        max_steps: tool calls (agent) or plan steps, at most; the next one raises
            :class:`BudgetExceededError`.
        max_seconds: wall-clock seconds from the start of the run. Checked before every model
            call and every step; a step already running is not interrupted.
        clock: seconds from any origin (``time.monotonic``; tests pass a fake one).
    """

    max_steps: int = 16
    max_seconds: float = 600.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise InvalidInputError(f"Budget.max_steps: expected an int >= 1, got {self.max_steps!r}")
        if not (isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0 and not math.isnan(self.max_seconds)):
            raise InvalidInputError(f"Budget.max_seconds: expected a positive number, got {self.max_seconds!r}")

    def start(self) -> Meter:
        """A fresh meter counting from now."""
        return Meter(self)


class Meter:
    """A running budget: ``take_step`` before each step, ``check_time`` before each model call."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.clock = budget.clock
        self.started = self.clock()
        self.steps = 0

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def check_time(self, doing: str) -> None:
        """Raise :class:`BudgetExceededError` when the time budget is spent."""
        if self.elapsed > self.budget.max_seconds:
            raise BudgetExceededError(
                f"time budget exceeded before {doing}: expected at most {self.budget.max_seconds:g} s, "
                f"{self.elapsed:.1f} s have passed after {self.steps} steps; raise Budget(max_seconds=...) "
                "or give a simpler goal"
            )

    def take_step(self, doing: str) -> None:
        """Count one step; raise :class:`BudgetExceededError` if it would pass either budget."""
        if self.steps >= self.budget.max_steps:
            raise BudgetExceededError(
                f"step budget exceeded before {doing}: expected at most {self.budget.max_steps} steps, "
                f"{self.steps} have run (a model that keeps calling tools loops); raise Budget(max_steps=...) "
                "or give a simpler goal"
            )
        self.check_time(doing)
        self.steps += 1
