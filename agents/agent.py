"""A tool-calling loop that lets any LangChain chat model drive the vision tools.

    from langchain_openai import ChatOpenAI                  # or any chat model with bind_tools
    agent = ToolCallingAgent(ChatOpenAI(model="gpt-4o-mini"), VisionToolkit(session))
    run = agent.run("find the red circles, segment them and make them green")
    run.answer                       # the model's closing text
    run.steps[-1].artifact           # Images; run.steps[k].parents: the steps it built on
    run.plan.to_json()               # the calls that succeeded, as a replayable Plan

The loop: bind the tools to the model, invoke it on the conversation, run every tool call it
makes, feed back a ``ToolMessage`` each (``status="error"`` with the expected-vs-got text when
the arguments or the turn were bad, so the model can correct itself), and repeat until it
answers without a tool call. A :class:`~visionllm2.agents.budget.Budget` bounds tool calls and
time; running out raises :class:`~visionllm2.agents.errors.BudgetExceededError` holding the
partial run.
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, ConfigDict, Field

from visionllm2.model.errors import describe
from visionllm2.sdk.errors import InvalidInputError

from .budget import Budget
from .errors import BudgetExceededError
from .plan import Plan, PlanStep, StepResult, call_tool
from .registry import base_id
from .toolkit import VisionToolkit

SYSTEM_PROMPT = """You operate a vision model through tools. Images and results are referred to by id, never by \
pixels: image ids such as 'image1'; result ids such as 'turn0.boxes' (every box found in turn 0) or \
'turn0.boxes[2]' (one of them), given in each tool's answer. Pass those ids to later tools: segment(prompts=...), \
edit(region_id=...), image_id=..., save_result(result_id=...). Recipe tools (detect_segment_edit, inspect_parts, \
measure_structures, map_objects, in_context_segment) give ids such as 'recipe0.masks', used the same way. Call tools, read their answers, then decide the next \
call. If a tool answers with an error, correct the arguments it names. When the goal is reached, answer in one or \
two plain sentences without calling a tool.
Images in the session: {images}."""


class AgentRun(BaseModel):
    """What an agent run did.

    Attributes:
        goal: the user's goal.
        messages: the whole conversation with the chat model (system, human, AI, tool messages).
        steps: one :class:`StepResult` per tool call, failed ones included (``status="error"``).
        plan: the calls that succeeded, as a :class:`Plan` whose arguments name earlier steps'
            outputs (``$detect_1.boxes``): replay it with ``PlanExecutor`` on the same images.
        answer: the model's final text ("" if the run stopped early).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    goal: str
    messages: list[BaseMessage] = Field(default_factory=list)
    steps: list[StepResult] = Field(default_factory=list)
    plan: Plan | None = None
    answer: str = ""

    @property
    def final(self) -> StepResult | None:
        """The last tool call that succeeded."""
        return next((s for s in reversed(self.steps) if s.status == "success"), None)


class ToolCallingAgent:
    """Drives a toolkit's tools with a chat model that supports ``bind_tools``.

    Args:
        model: any LangChain chat model (``BaseChatModel``) implementing ``bind_tools``.
        toolkit: the tools and the session they act on.
        budget: tool calls and seconds allowed per :meth:`run`.
        system_prompt: replaces :data:`SYSTEM_PROMPT` (``{images}`` is filled with the session's images).
    """

    def __init__(self, model: BaseChatModel, toolkit: VisionToolkit, budget: Budget | None = None,
                 system_prompt: str = SYSTEM_PROMPT) -> None:
        if not hasattr(model, "bind_tools"):
            raise InvalidInputError(f"model: expected a LangChain chat model with bind_tools, got {describe(model)}")
        self.model = model
        self.toolkit = toolkit
        self.budget = budget or Budget()
        self.system_prompt = system_prompt

    def run(self, goal: str) -> AgentRun:
        """Work on ``goal`` until the model answers without a tool call, or the budget runs out."""
        if not isinstance(goal, str) or not goal.strip():
            raise InvalidInputError(f"goal: expected a non-empty instruction, got {goal!r}")
        tools = {tool.name: tool for tool in self.toolkit.get_tools()}
        bound = self.model.bind_tools(list(tools.values()))
        run = AgentRun(goal=goal, messages=[
            SystemMessage(self.system_prompt.format(images=self.toolkit.describe_images())), HumanMessage(goal)])
        recorder = _Recorder(goal)
        meter = self.budget.start()
        try:
            while True:
                meter.check_time("asking the model")
                reply = bound.invoke(run.messages)
                if not isinstance(reply, AIMessage):
                    raise InvalidInputError(f"model: expected an AIMessage reply, got {describe(reply)}")
                run.messages.append(reply)
                if not reply.tool_calls and not reply.invalid_tool_calls:
                    run.answer = reply.text
                    break
                for call in reply.tool_calls:
                    meter.take_step(f"tool call {call['name']!r}")
                    call_id = call.get("id") or f"call_{len(run.steps) + 1}"
                    tool = tools.get(call["name"])
                    start = time.perf_counter()
                    if tool is None:
                        message = ToolMessage(
                            f"InvalidInputError: tool: expected one of {sorted(tools)}, got {call['name']!r}",
                            tool_call_id=call_id, name=call["name"], status="error")
                    else:
                        message = call_tool(tool, call["args"], call_id)
                    run.messages.append(message)
                    run.steps.append(recorder.record(call["name"], call["args"], message, self.toolkit,
                                                     time.perf_counter() - start))
                for bad in reply.invalid_tool_calls:
                    meter.take_step(f"malformed tool call {bad.get('name')!r}")
                    call_id = bad.get("id") or f"call_{len(run.steps) + 1}"
                    message = ToolMessage(
                        f"InvalidInputError: {bad.get('name')}: expected arguments as a JSON object, got "
                        f"{bad.get('args')!r} ({bad.get('error') or 'unreadable'})",
                        tool_call_id=call_id, name=bad.get("name") or "unknown", status="error")
                    run.messages.append(message)
                    run.steps.append(recorder.record(bad.get("name") or "unknown", {}, message, self.toolkit, 0.0))
        except BudgetExceededError as error:
            run.plan = recorder.plan()
            error.run = run
            raise
        run.plan = recorder.plan()
        return run


class _Recorder:
    """Turns successful tool calls into plan steps, rewriting produced ids into ``$step.output`` references."""

    def __init__(self, goal: str) -> None:
        self.goal = goal
        self.steps: list[PlanStep] = []
        self.produced: dict[str, str] = {}  # id (or text) a step produced → its reference

    def record(self, tool: str, args: dict[str, Any], message: ToolMessage, toolkit: VisionToolkit,
               seconds: float) -> StepResult:
        number = sum(step.tool == tool for step in self.steps) + 1
        step_id = f"{tool}_{number}" if message.status == "success" else f"{tool}_failed_{len(self.steps) + 1}"
        parents: list[str] = []
        referenced = {name: self._reference(value, parents) for name, value in args.items()}
        result = StepResult(step=step_id, tool=tool, args=args, status=message.status, content=message.text,
                            parents=parents, seconds=seconds, artifact=message.artifact)
        if message.status == "success":
            result.outputs = toolkit.outputs_of(message.artifact)
            for output, value in result.outputs.items():
                self.produced.setdefault(value, f"${step_id}.{output}")
            self.steps.append(PlanStep(id=step_id, tool=tool, args=referenced))
        return result

    def _reference(self, value: Any, parents: list[str]) -> Any:
        if isinstance(value, list):
            return [self._reference(item, parents) for item in value]
        if not isinstance(value, str):
            return value
        base = base_id(value)
        if value in self.produced:
            reference, item = self.produced[value], ""
        elif base in self.produced:
            reference, item = self.produced[base], value[len(base):]  # "turn0.boxes[2]" → "$detect_1.boxes[2]"
        else:
            return value  # an id from outside the run (an image the user loaded): kept as is
        step = reference[1:].split(".", 1)[0]
        if step not in parents:
            parents.append(step)
        return reference + item

    def plan(self) -> Plan | None:
        return Plan(goal=self.goal, steps=self.steps) if self.steps else None
