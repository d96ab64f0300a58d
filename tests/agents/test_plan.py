"""Plans: the rule-based planner, validation against the tools' schemas, execution with lineage, replay."""

from __future__ import annotations

import pytest

from visionllm2.agents import (
    Budget,
    BudgetExceededError,
    GoalNotUnderstoodError,
    Plan,
    PlanError,
    PlanExecutor,
    PlanStep,
    RuleBasedPlanner,
    StepFailedError,
    VisionToolkit,
)
from visionllm2.agents.rules import classes_of, singular
from visionllm2.sdk import Boxes, Images, Masks, Session

GOAL = "find the red circles, segment them and make them green"


def steps(plan: Plan) -> list[tuple[str, str, dict]]:
    return [(s.id, s.tool, s.args) for s in plan.steps]


def test_the_rule_based_planner_turns_the_goal_into_a_dag():
    plan = RuleBasedPlanner().plan(GOAL, image="image1")
    assert steps(plan) == [
        ("detect_1", "detect", {"classes": ["red circle"], "image_id": "image1"}),
        ("segment_1", "segment", {"prompts": ["$detect_1.boxes"]}),
        ("edit_1", "edit", {"instruction": "make the red circles green", "image_id": "image1",
                            "region_id": "$segment_1.masks"}),
    ]
    assert plan.goal == GOAL and Plan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize("goal, expected", [
    ("Please detect the cats and dogs and then segment them; save it to out/masks.png",
     [("detect", {"classes": ["cat", "dog"]}), ("segment", {"prompts": ["$detect_1.boxes"]}),
      ("save_result", {"result_id": "$segment_1.masks", "path": "out/masks.png"})]),
    ("find the red circles, blue squares and count the stars",
     [("detect", {"classes": ["red circle", "blue square"]}), ("detect", {"classes": ["star"]})]),
    ("how many purple stars are there in the image?", [("detect", {"classes": ["purple star"]})]),
    ("estimate the pose of the people", [("pose", {"classes": ["person"]})]),
    ("draw a picture of a red circle, then find the circles in it",
     [("generate", {"caption": "a red circle"}), ("detect", {"classes": ["circle"], "image_id": "$generate_1.images"})]),
    ("ground the red circle on the left and make it blue",
     [("ground", {"expression": "red circle on the left"}),
      ("edit", {"instruction": "make the red circle on the left blue", "region_id": "$ground_1.boxes"})]),
    ("load scene.png, segment the hexagons and remove them, then describe the picture",
     [("load_image", {"path": "scene.png"}), ("segment", {"classes": ["hexagon"], "image_id": "$load_image_1.image"}),
      ("edit", {"instruction": "remove the hexagons", "image_id": "$load_image_1.image", "region_id": "$segment_1.masks"}),
      ("chat", {"question": "describe the picture", "image_id": "$edit_1.images"})]),
    ("make the sky blue", [("edit", {"instruction": "make the sky blue"})]),  # nothing found before: no region
])
def test_the_planner_reads_common_goals(goal, expected):
    plan = RuleBasedPlanner().plan(goal)
    assert [(s.tool, s.args) for s in plan.steps] == expected


def test_the_planner_says_what_it_cannot_read():
    with pytest.raises(GoalNotUnderstoodError, match="verb the rule-based planner knows.*'hello there'"):
        RuleBasedPlanner().plan("hello there")
    with pytest.raises(GoalNotUnderstoodError, match="refers to objects found earlier"):
        RuleBasedPlanner().plan("segment them")
    with pytest.raises(GoalNotUnderstoodError, match="file name to save to"):
        RuleBasedPlanner().plan("find the dogs and save them")
    plan = RuleBasedPlanner().plan("find the stars", image="data/scene.png")  # a path: loaded first
    assert steps(plan)[0] == ("load_image_1", "load_image", {"path": "data/scene.png"})


def test_singular_class_names():
    assert [singular(w) for w in ["circles", "boxes", "people", "glass", "bus", "berries", "sheep", "cats"]] == [
        "circle", "box", "person", "glass", "bus", "berry", "sheep", "cat"]
    assert classes_of("all the red circles, blue squares & the yellow stars in the image") == [
        "red circle", "blue square", "yellow star"]


def test_executing_the_plan_returns_typed_results_with_lineage(toolkit, session, scene):
    session.set_image(scene.image)
    run = PlanExecutor(toolkit).run(RuleBasedPlanner().plan(GOAL, image="image1"))
    assert [s.step for s in run.steps] == ["detect_1", "segment_1", "edit_1"]
    assert all(s.status == "success" for s in run.steps)
    boxes, masks, images = (run[s].artifact for s in ("detect_1", "segment_1", "edit_1"))
    assert isinstance(boxes, Boxes) and isinstance(masks, Masks) and isinstance(images, Images)
    assert run["segment_1"].args == {"prompts": ["turn0.boxes"]}  # references resolved to ids
    assert run["edit_1"].args["region_id"] == "turn1.masks" and run["edit_1"].parents == ["segment_1"]
    assert run.lineage("edit_1") == ["segment_1", "detect_1"] and run.lineage("detect_1") == []
    assert run["detect_1"].outputs == {"boxes": "turn0.boxes"} and run.final is run["edit_1"]
    assert len(masks) == len(boxes) == 3 and images.settings["region"] == "turn1.masks"
    assert "turn2.images" in run["edit_1"].content
    record = run.model_dump(mode="json")
    assert record["steps"][2]["parents"] == ["segment_1"] and "artifact" not in record["steps"][2]


def test_plan_json_replays_to_the_same_results(full_model, workdir, scene):
    plan = RuleBasedPlanner().plan(GOAL + " and save it to out/edited.png", image="scene.png")

    def execute(session: Session, plan: Plan):
        toolkit = VisionToolkit(session, allowed_dirs=[workdir], diffusion={"num_inference_steps": 2})
        return PlanExecutor(toolkit).run(plan)

    first = execute(Session(full_model, max_new_tokens=8), plan)
    replay = execute(Session(full_model, max_new_tokens=8), Plan.from_json(plan.to_json()))
    assert [s.step for s in replay.steps] == ["load_image_1", "detect_1", "segment_1", "edit_1", "save_result_1"]
    for step in ("detect_1", "segment_1", "edit_1"):
        assert replay[step].artifact == first[step].artifact  # arrays and pixels compared by value (seeded edit)
        assert replay[step].outputs == first[step].outputs
    assert (workdir / "out" / "edited.png").is_file()
    # in a session with history the ids move on, and the references follow them
    busy = Session(full_model, max_new_tokens=8)
    busy.detect(["warm-up"], image=scene.image)
    later = execute(busy, plan)
    assert later["detect_1"].outputs == {"boxes": "turn1.boxes"} and later["edit_1"].args["region_id"] == "turn2.masks"
    assert isinstance(later["edit_1"].artifact, Images)


def test_plans_are_checked_against_the_tools_before_anything_runs(toolkit, session, scene):
    session.set_image(scene.image)
    bad = Plan(goal="bad", steps=[
        PlanStep(id="seg", tool="segment", args={"prompts": ["$det.boxes"]}),              # a later step
        PlanStep(id="det", tool="detect", args={"classes": []}),                           # schema
        PlanStep(id="det", tool="fly", args={}),                                           # unknown tool, id twice
        PlanStep(id="edit_1", tool="edit", args={"instruction": "x", "region_id": "$seg.images"}),  # not an output
        PlanStep(id="edit_2", tool="edit", args={"instruction": "x", "region_id": "$det.text"}),
        PlanStep(id="chat_1", tool="chat", args={"question": "x", "image_id": "$seg.boxes"}),  # wrong kind
        PlanStep(id="chat_2", tool="chat", args={"question": "$seg"}),
    ])
    with pytest.raises(PlanError) as caught:
        PlanExecutor(toolkit).run(bad)
    message = str(caught.value)
    for expected in ["step 'seg'.prompts: expected a reference to an earlier step (none), got $det",
                     "detect got invalid arguments: classes: List should have at least 1 item",
                     "step 'det': expected a unique step id", "expected a tool among", "got 'fly'",
                     "step 'edit_1'.region_id: expected an output of seg (segment gives ['masks', 'boxes']), got 'images'",
                     "step 'chat_1'.image_id: expected a reference to ['image', 'images'], got $seg.boxes",
                     "expected a reference '$<step>.<output>'"]:
        assert expected in message, expected
    assert session.turns == []
    with pytest.raises(PlanError, match="steps"):
        Plan.from_json('{"goal": "x", "steps": []}')
    with pytest.raises(PlanError, match="plan: expected a Plan"):
        PlanExecutor(toolkit).run({"steps": []})


def test_a_failing_step_stops_the_plan_with_the_steps_so_far(toolkit, session, scene):
    session.set_image(scene.image)
    plan = Plan(steps=[PlanStep(id="detect_1", tool="detect", args={"classes": ["star"]}),
                       PlanStep(id="ground_1", tool="ground", args={"expression": "the star", "image_id": "image7"})])
    with pytest.raises(StepFailedError, match=r"step 'ground_1' \(ground\) failed: InvalidInputError: image_id") as caught:
        PlanExecutor(toolkit).run(plan)
    run = caught.value.run
    assert [(s.step, s.status) for s in run.steps] == [("detect_1", "success"), ("ground_1", "error")]
    assert caught.value.step == "ground_1" and len(session.turns) == 1


def test_budgets_stop_plans(toolkit, session, scene):
    session.set_image(scene.image)
    plan = Plan(steps=[PlanStep(id=f"detect_{k}", tool="detect", args={"classes": ["star"]}) for k in range(1, 4)])
    with pytest.raises(BudgetExceededError, match="expected at most 2 steps"):
        PlanExecutor(toolkit, Budget(max_steps=2)).run(plan)
    assert session.turns == []
    ticks = iter(range(100))  # a clock that advances one second per reading
    with pytest.raises(BudgetExceededError, match="time budget exceeded before step 'detect_2'") as caught:
        PlanExecutor(toolkit, Budget(max_seconds=1.5, clock=lambda: next(ticks))).run(plan)
    assert [s.step for s in caught.value.run.steps] == ["detect_1"]


def test_budget_arguments_are_checked():
    with pytest.raises(Exception, match="max_steps: expected an int >= 1"):
        Budget(max_steps=0)
    with pytest.raises(Exception, match="max_seconds: expected a positive number"):
        Budget(max_seconds=float("nan"))
