"""Plans: small DAGs of tool calls whose inputs name earlier steps' outputs, as replayable JSON.

    plan = Plan(goal="find the red circles, segment them and make them green", steps=[
        PlanStep(id="detect_1", tool="detect", args={"classes": ["red circle"], "image_id": "image1"}),
        PlanStep(id="segment_1", tool="segment", args={"prompts": ["$detect_1.boxes"]}),
        PlanStep(id="edit_1", tool="edit", args={"instruction": "make the red circles green",
                                                  "region_id": "$segment_1.masks"}),
    ])
    run = PlanExecutor(toolkit).run(plan)     # validates first, then runs step by step
    run["edit_1"].artifact                    # Images; run.lineage("edit_1") == ["segment_1", "detect_1"]
    Plan.from_json(plan.to_json())            # the same plan; on the same images and weights, the same results

A **reference** is a whole argument value (or a list item) ``"$<step>.<output>"``, optionally
``"$<step>.<output>[k]"`` for item k. Outputs are the kinds a step's tool produces (``boxes``,
``masks``, ``poses``, ``images``, ``image``, ``text``, ``path``; a tool lists them in
``metadata["outputs"]``); a reference resolves to the id the earlier step produced
(``"turn0.boxes"``), which is what the tools take. A step may only name earlier steps, so every
plan is a DAG in execution order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visionllm2.model.errors import describe
from visionllm2.sdk.errors import VisionLLMError

from .budget import Budget
from .errors import BudgetExceededError, PlanError, StepFailedError
from .toolkit import VisionToolkit, validation_message

REFERENCE = re.compile(r"^\$([A-Za-z_]\w*)\.([A-Za-z_]\w*)(\[-?\d+\])?$")
STEP_ID = r"^[A-Za-z_]\w*$"


class PlanStep(BaseModel):
    """One tool call: its id (what later steps reference), the tool's name and its arguments."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=STEP_ID, description="Unique name, e.g. 'detect_1'.")
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)

    def references(self) -> Iterator[tuple[str, str, str, str]]:
        """``(field, step, output, item)`` of every reference in the arguments (``item`` is ``"[k]"`` or ``""``)."""
        for name, value in self.args.items():
            for item in _strings(value):
                match = REFERENCE.match(item)
                if match:
                    yield name, match.group(1), match.group(2), match.group(3) or ""


class Plan(BaseModel):
    """A goal and the steps that reach it, in execution order."""

    model_config = ConfigDict(extra="forbid")

    goal: str = ""
    steps: list[PlanStep] = Field(min_length=1)

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        """A plan from :meth:`to_json` (or an LLM); :class:`PlanError` says what is malformed."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'plan'}: {e['msg']}" for e in error.errors())
            raise PlanError(f"plan: expected {{'goal': str, 'steps': [{{'id', 'tool', 'args'}}, ...]}}, got {problems}") from None

    def validate_for(self, tools: Iterable[BaseTool]) -> None:
        """Check every step against the tools before anything runs; :class:`PlanError` lists all problems.

        Checked: unique step ids; known tools; references to earlier steps and to outputs their tools
        produce, of a kind the argument accepts; the arguments against each tool's schema.
        """
        by_name = {tool.name: tool for tool in tools}
        problems: list[str] = []
        seen: dict[str, str] = {}  # step id → tool name
        for step in self.steps:
            where = f"step {step.id!r}"
            if step.id in seen:
                problems.append(f"{where}: expected a unique step id, got it twice")
            tool = by_name.get(step.tool)
            if tool is None:
                problems.append(f"{where}: expected a tool among {sorted(by_name)}, got {step.tool!r}")
                seen[step.id] = step.tool
                continue
            problems += _check_references(step, seen, by_name, tool)
            schema = tool.args_schema
            if isinstance(schema, type) and issubclass(schema, BaseModel):
                try:
                    schema.model_validate(step.args)  # references are strings, as the ids they become
                except ValidationError as error:
                    problems.append(f"{where}: {validation_message(step.tool, schema, error)}")
            seen[step.id] = step.tool
        if problems:
            raise PlanError(f"plan for {self.goal!r} is invalid: " + " | ".join(problems))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _outputs(tool: BaseTool) -> list[str] | None:
    return list((tool.metadata or {}).get("outputs") or []) or None


def _check_references(step: PlanStep, seen: dict[str, str], tools: dict[str, BaseTool], tool: BaseTool) -> list[str]:
    problems = []
    where = f"step {step.id!r}"
    accepts = getattr(tool.args_schema, "accepts", {}) or {}
    for name, value in step.args.items():
        for item in _strings(value):
            if item.startswith("$") and not REFERENCE.match(item):
                problems.append(f"{where}.{name}: expected a reference '$<step>.<output>' or '$<step>.<output>[k]', "
                                f"got {item!r}")
    for name, source, output, _ in step.references():
        if source not in seen:
            problems.append(f"{where}.{name}: expected a reference to an earlier step ({sorted(seen) or 'none'}), "
                            f"got ${source}")
            continue
        produced = _outputs(tools[seen[source]]) if seen[source] in tools else None
        if produced is not None and output not in produced:
            problems.append(f"{where}.{name}: expected an output of {source} ({seen[source]} gives {produced}), "
                            f"got {output!r}")
        elif name in accepts and output not in accepts[name]:
            problems.append(f"{where}.{name}: expected a reference to {list(accepts[name])}, got "
                            f"${source}.{output}")
    return problems


class StepResult(BaseModel):
    """What one step did.

    Attributes:
        step, tool: the step id and the tool it called.
        args: the arguments as called, references resolved to ids.
        status: ``"success"`` or ``"error"`` (the tool's error text is then in ``content``).
        content: the text the tool gave the LLM.
        outputs: output kind → id (or text) that later steps may reference.
        parents: the steps whose outputs this one consumed (its lineage, one level).
        seconds: wall-clock time of the call.
        artifact: the typed result (``Boxes``, ``Masks``, ``Images``, …); not written to JSON.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    step: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    status: Literal["success", "error"] = "success"
    content: str = ""
    outputs: dict[str, str] = Field(default_factory=dict)
    parents: list[str] = Field(default_factory=list)
    seconds: float = 0.0
    artifact: Any = Field(default=None, exclude=True)


class PlanRun(BaseModel):
    """Every step's result of an executed plan, with lineage."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    plan: Plan
    steps: list[StepResult] = Field(default_factory=list)

    def __getitem__(self, step: str) -> StepResult:
        for result in self.steps:
            if result.step == step:
                return result
        raise KeyError(f"no step {step!r} ran; ran: {[s.step for s in self.steps]}")

    @property
    def final(self) -> StepResult | None:
        """The last step that succeeded."""
        return next((s for s in reversed(self.steps) if s.status == "success"), None)

    @property
    def artifacts(self) -> dict[str, Any]:
        """Step id → typed result of every successful step."""
        return {s.step: s.artifact for s in self.steps if s.status == "success"}

    def lineage(self, step: str) -> list[str]:
        """Every step ``step`` depends on, directly or not, nearest first."""
        chain, queue = [], list(self[step].parents)
        while queue:
            current = queue.pop(0)
            if current not in chain:
                chain.append(current)
                queue += self[current].parents
        return chain


def resolve(value: Any, outputs: dict[str, dict[str, str]], parents: list[str]) -> Any:
    """``value`` with every reference replaced by the id it names; the steps named go into ``parents``."""
    if isinstance(value, list):
        return [resolve(item, outputs, parents) for item in value]
    match = REFERENCE.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    source, output, item = match.group(1), match.group(2), match.group(3) or ""
    produced = outputs.get(source, {})
    if output not in produced:
        raise PlanError(f"${source}.{output}: expected an output {source} produced ({sorted(produced)}), got {output!r}")
    if source not in parents:
        parents.append(source)
    return produced[output] + item


def call_tool(tool: BaseTool, args: dict[str, Any], call_id: str) -> ToolMessage:
    """Invoke ``tool`` as a tool call; typed SDK errors from any tool come back as an error message."""
    try:
        message = tool.invoke({"name": tool.name, "args": args, "id": call_id, "type": "tool_call"})
    except VisionLLMError as error:
        return ToolMessage(f"{type(error).__name__}: {error}", tool_call_id=call_id, name=tool.name, status="error")
    if not isinstance(message, ToolMessage):  # a tool that builds its own output
        return ToolMessage(str(message), tool_call_id=call_id, name=tool.name)
    return message


class PlanExecutor:
    """Runs plans on a toolkit's tools within a budget.

    Args:
        toolkit: the :class:`VisionToolkit` (its extra tools included).
        budget: a plan with more steps than ``budget.max_steps`` is refused before it starts;
            the time budget is checked before every step.
    """

    def __init__(self, toolkit: VisionToolkit, budget: Budget | None = None) -> None:
        self.toolkit = toolkit
        self.budget = budget or Budget()

    def run(self, plan: Plan) -> PlanRun:
        """Validate ``plan``, then run it. A failing step raises :class:`StepFailedError` (its ``run``
        holds the steps so far); a spent budget raises :class:`BudgetExceededError`."""
        if not isinstance(plan, Plan):
            raise PlanError(f"plan: expected a Plan (Plan.from_json reads JSON), got {describe(plan)}")
        tools = {tool.name: tool for tool in self.toolkit.get_tools()}
        plan.validate_for(tools.values())
        run = PlanRun(plan=plan)
        if len(plan.steps) > self.budget.max_steps:
            raise BudgetExceededError(
                f"plan: expected at most {self.budget.max_steps} steps (the step budget), got {len(plan.steps)}; "
                "raise Budget(max_steps=...)", run=run)
        meter = self.budget.start()
        outputs: dict[str, dict[str, str]] = {}
        for step in plan.steps:
            try:
                meter.take_step(f"step {step.id!r}")
            except BudgetExceededError as error:
                error.run = run
                raise
            parents: list[str] = []
            try:
                args = {name: resolve(value, outputs, parents) for name, value in step.args.items()}
            except PlanError as error:  # an extra tool that did not produce what it declared
                raise StepFailedError(f"step {step.id!r} ({step.tool}): {error}", step.id, step.tool, run) from None
            start = time.perf_counter()
            message = call_tool(tools[step.tool], args, step.id)
            result = StepResult(step=step.id, tool=step.tool, args=args, status=message.status, content=message.text,
                                parents=parents, seconds=time.perf_counter() - start, artifact=message.artifact)
            if message.status == "success":
                result.outputs = self.toolkit.outputs_of(message.artifact)
                outputs[step.id] = result.outputs
            run.steps.append(result)
            if message.status == "error":
                raise StepFailedError(f"step {step.id!r} ({step.tool}) failed: {message.text}", step.id, step.tool, run)
        return run
