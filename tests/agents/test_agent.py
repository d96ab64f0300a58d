"""ToolCallingAgent with langchain-core's fake chat model: scripted tool calls, errors fed back, budgets, replay."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, SystemMessage, ToolMessage

from visionllm2.agents import (
    AgentRun,
    Budget,
    BudgetExceededError,
    PlanExecutor,
    ToolCallingAgent,
    VisionToolkit,
)
from visionllm2.sdk import Boxes, Images, InvalidInputError, Masks, Session

GOAL = "find the red circles, segment them and make them green"


def calls(*pairs: tuple[str, dict]) -> AIMessage:
    """An AIMessage asking for tool calls, as a tool-calling chat model writes it."""
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"{name}-{k}"}
                                             for k, (name, args) in enumerate(pairs)])


SCRIPT = [
    calls(("load_image", {"path": "scene.png"})),
    calls(("detect", {"classes": ["red circle"], "image_id": "image1"})),
    calls(("segment", {"prompts": ["turn0.boxes"]})),
    calls(("edit", {"instruction": "make the red circles green", "region_id": "turn1.masks"})),
    AIMessage(content="Done: three red circles found, segmented and turned green (turn2.images)."),
]


def test_the_agent_detects_segments_and_edits_by_id(scripted, toolkit):
    model = scripted(responses=SCRIPT)
    run = ToolCallingAgent(model, toolkit).run(GOAL)
    assert isinstance(run, AgentRun) and run.answer.startswith("Done: three red circles")
    assert [t.name for t in model.bound] == [t.name for t in toolkit.get_tools()]
    first_prompt = model.seen[0]
    assert isinstance(first_prompt[0], SystemMessage) and "'turn0.boxes[2]'" in first_prompt[0].text
    assert first_prompt[1].text == GOAL
    # each tool answer was fed back to the model as a ToolMessage with the ids to use next
    fed_back = model.seen[2][-1]
    assert isinstance(fed_back, ToolMessage) and fed_back.tool_call_id == "detect-0"
    assert fed_back.content.startswith("turn0.boxes: 3 boxes on image1")
    assert [(s.step, s.tool, s.status) for s in run.steps] == [
        ("load_image_1", "load_image", "success"), ("detect_1", "detect", "success"),
        ("segment_1", "segment", "success"), ("edit_1", "edit", "success")]
    boxes, masks, images = (run.steps[k].artifact for k in (1, 2, 3))
    assert isinstance(boxes, Boxes) and isinstance(masks, Masks) and isinstance(images, Images)
    assert run.final.artifact is images and images.settings["region"] == "turn1.masks"
    assert [s.parents for s in run.steps] == [[], ["load_image_1"], ["detect_1"], ["segment_1"]]
    assert [r.id for r in toolkit.registry.ancestry("turn2.images")] == [
        "turn2.images", "image1", "turn1.masks", "turn0.boxes"]
    # the successful calls, as a plan that names steps rather than this session's ids
    assert [(s.id, s.args) for s in run.plan.steps] == [
        ("load_image_1", {"path": "scene.png"}),
        ("detect_1", {"classes": ["red circle"], "image_id": "$load_image_1.image"}),
        ("segment_1", {"prompts": ["$detect_1.boxes"]}),
        ("edit_1", {"instruction": "make the red circles green", "region_id": "$segment_1.masks"}),
    ]


def test_the_agent_plan_replays_to_the_same_results(scripted, full_model, workdir):
    def toolkit() -> VisionToolkit:
        return VisionToolkit(Session(full_model, max_new_tokens=8), allowed_dirs=[workdir],
                             diffusion={"num_inference_steps": 2})

    run = ToolCallingAgent(scripted(responses=SCRIPT), toolkit()).run(GOAL)
    replay = PlanExecutor(toolkit()).run(type(run.plan).from_json(run.plan.to_json()))
    assert [s.step for s in replay.steps] == [s.step for s in run.steps]
    for recorded, replayed in zip(run.steps, replay.steps):
        assert replayed.artifact == recorded.artifact


def test_bad_calls_are_answered_with_errors_and_the_run_goes_on(scripted, toolkit):
    script = [
        calls(("load_image", {"path": "scene.png"})),
        calls(("detect", {"classes": []}), ("teleport", {"where": "moon"})),
        AIMessage(content="", invalid_tool_calls=[{"name": "segment", "args": "{prompts: [turn0", "id": "bad-1",
                                                   "error": "JSON decode error"}]),
        calls(("load_image", {"path": "../../etc/passwd"})),
        calls(("segment", {"prompts": ["turn0.boxes"]})),  # nothing detected yet: no such id
        calls(("detect", {"classes": ["red circle"]})),
        AIMessage(content="Found them."),
    ]
    model = scripted(responses=script)
    run = ToolCallingAgent(model, toolkit).run("find the red circles")
    assert run.answer == "Found them."
    statuses = [(s.tool, s.status) for s in run.steps]
    assert statuses == [("load_image", "success"), ("detect", "error"), ("teleport", "error"), ("segment", "error"),
                        ("load_image", "error"), ("segment", "error"), ("detect", "success")]
    errors = [m for m in run.messages if isinstance(m, ToolMessage) and m.status == "error"]
    assert len(errors) == 5
    assert "classes: List should have at least 1 item" in errors[0].content
    assert "tool: expected one of" in errors[1].content and "got 'teleport'" in errors[1].content
    assert errors[2].tool_call_id == "bad-1" and "expected arguments as a JSON object" in errors[2].content
    assert errors[3].content.startswith("PathNotAllowedError")
    assert "result id: expected one of [] (no results yet)" in errors[4].content
    assert errors[0] in model.seen[2]  # the model saw its mistakes before its next move
    assert isinstance(run.final.artifact, Boxes) and run.final.step == "detect_1"
    assert [s.id for s in run.plan.steps] == ["load_image_1", "detect_1"]  # failed calls are not part of the plan
    assert len(toolkit.session.turns) == 1


def test_the_step_budget_stops_a_looping_model(scripted, toolkit, session, scene):
    session.set_image(scene.image)
    looping = scripted(responses=[calls(("detect", {"classes": ["red circle"]}))])  # cycles forever
    with pytest.raises(BudgetExceededError, match="step budget exceeded before tool call 'detect'") as caught:
        ToolCallingAgent(looping, toolkit, Budget(max_steps=3)).run("find the red circles")
    run = caught.value.run
    assert isinstance(run, AgentRun) and len(run.steps) == 3 and run.answer == ""
    assert [s.id for s in run.plan.steps] == ["detect_1", "detect_2", "detect_3"] and len(session.turns) == 3


def test_the_time_budget_stops_a_slow_loop(scripted, toolkit, session, scene):
    session.set_image(scene.image)
    ticks = iter(range(1000))
    looping = scripted(responses=[calls(("chat", {"question": "and now?"}))])
    with pytest.raises(BudgetExceededError, match="time budget exceeded") as caught:
        ToolCallingAgent(looping, toolkit, Budget(max_seconds=4, clock=lambda: next(ticks))).run("talk")
    assert 1 <= len(caught.value.run.steps) <= 2


def test_the_agent_needs_a_tool_calling_model_and_a_goal(scripted, toolkit):
    with pytest.raises(InvalidInputError, match="bind_tools"):
        ToolCallingAgent(object(), toolkit)
    with pytest.raises(InvalidInputError, match="non-empty instruction"):
        ToolCallingAgent(scripted(responses=SCRIPT), toolkit).run("  ")
