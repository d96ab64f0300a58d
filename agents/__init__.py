"""LangChain tools and multi-step task composition on top of :mod:`visionllm2.sdk`.

    from visionllm2.agents import PlanExecutor, RuleBasedPlanner, VisionToolkit

    toolkit = VisionToolkit(session, allowed_dirs=["out"])          # tools bound to a Session
    plan = RuleBasedPlanner().plan("find the red circles, segment them and make them green", image="image1")
    run = PlanExecutor(toolkit).run(plan)                          # every step's typed result, with lineage

    agent = ToolCallingAgent(chat_model, toolkit)                  # or let any LangChain chat model plan
    run = agent.run("find the red circles, segment them and make them green")

Modules: :mod:`.toolkit` (the tools), :mod:`.recipe_tools` (the recipes as tools), :mod:`.schemas`
(their arguments), :mod:`.registry` (ids and lineage), :mod:`.plan` (plans and their executor), :mod:`.rules` (the offline planner),
:mod:`.agent` (the tool-calling loop), :mod:`.paths` (file confinement), :mod:`.budget`, :mod:`.errors`.
"""

from .agent import SYSTEM_PROMPT, AgentRun, ToolCallingAgent
from .budget import Budget
from .errors import (
    AgentError,
    BudgetExceededError,
    GoalNotUnderstoodError,
    PathNotAllowedError,
    PlanError,
    StepFailedError,
)
from .paths import PathPolicy
from .plan import Plan, PlanExecutor, PlanRun, PlanStep, StepResult
from .registry import Lineage, Registry
from .rules import RuleBasedPlanner
from .toolkit import LoadedImage, SavedFile, VisionToolkit

__all__ = [
    "SYSTEM_PROMPT", "AgentError", "AgentRun", "Budget", "BudgetExceededError", "GoalNotUnderstoodError",
    "Lineage", "LoadedImage", "PathNotAllowedError", "PathPolicy", "Plan", "PlanError", "PlanExecutor", "PlanRun",
    "PlanStep", "Registry", "RuleBasedPlanner", "SavedFile", "StepFailedError", "StepResult", "ToolCallingAgent",
    "VisionToolkit",
]
