"""Recipe tools: one LangChain tool per recipe, typed reports as artifacts, their results held under recipe ids."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.messages import AIMessage, ToolMessage
from PIL import Image

from visionllm2.agents import PlanExecutor, RuleBasedPlanner, ToolCallingAgent, VisionToolkit
from visionllm2.model import tokens as T
from visionllm2.recipes.detect_segment_edit import DetectSegmentEditResult
from visionllm2.recipes.in_context import InContextResult
from visionllm2.recipes.inspection import InspectionReport
from visionllm2.recipes.medical import DISCLAIMER, MedicalReport
from visionllm2.recipes.remote_sensing import RemoteSensingResult
from visionllm2.sdk import Boxes, Images, Masks

RECIPE_TOOLS = ["detect_segment_edit", "in_context_segment", "inspect_parts", "measure_structures", "map_objects"]


def call(toolkit: VisionToolkit, name: str, **args) -> ToolMessage:
    return toolkit.tool(name).invoke({"name": name, "args": args, "id": f"call-{name}", "type": "tool_call"})


def state(toolkit: VisionToolkit):
    session = toolkit.session
    return len(session.turns), sorted(session.images), session.current_image, toolkit.registry.ids()


@pytest.fixture()
def loaded(toolkit):
    """The toolkit with scene.png loaded as image1 and red circles detected (turn0.boxes, 3 of them)."""
    assert call(toolkit, "load_image", path="scene.png").status == "success"
    assert len(call(toolkit, "detect", classes=["red circle"]).artifact) == 3
    return toolkit


def test_recipe_tools_are_offered_when_the_model_has_their_decoders(toolkit, session, monkeypatch):
    tools = {t.name: t for t in toolkit.get_tools()}
    assert [name for name in tools if name in RECIPE_TOOLS] == RECIPE_TOOLS
    for name in RECIPE_TOOLS:
        tool = tools[name]
        assert tool.response_format == "content_and_artifact" and len(tool.description) > 150
        assert tool.metadata["outputs"] and "image" in tool.metadata["outputs"]
    assert "scratch, dent, crack, hole" in tools["inspect_parts"].description
    assert "never a diagnosis" in tools["measure_structures"].description
    routes = dict(session.model.decoder_of_route)
    monkeypatch.setattr(session.model, "decoder_of_route", {T.SEG: "gdino", T.POSE: "unipose"})
    assert [t.name for t in VisionToolkit(session).get_tools()] == [
        "segment", "pose", "chat", "measure_structures", "map_objects"]  # no gdino [DET]: no detect-based recipe
    monkeypatch.setattr(session.model, "decoder_of_route", {T.POSE: "unipose"})
    assert not {t.name for t in VisionToolkit(session).get_tools()} & set(RECIPE_TOOLS)
    # without an edit decoder detect_segment_edit is still offered, says so, and skips the edit
    monkeypatch.setattr(session.model, "decoder_of_route", {r: d for r, d in routes.items() if r != T.EDIT})
    plain = VisionToolkit(session)
    assert "no edit decoder" in plain.tool("detect_segment_edit").description
    session.set_image(Image.new("RGB", (64, 64), (200, 30, 30)))
    message = call(plain, "detect_segment_edit", classes=["red circle"], instruction="make it green")
    assert message.status == "success" and message.artifact.after is None and message.artifact.edit is None
    assert "No edit: this model cannot edit" in message.content and "recipe0.images" not in message.content


def test_detect_segment_edit_holds_boxes_masks_and_the_edit(loaded, session):
    message = call(loaded, "detect_segment_edit", classes="red circle", instruction="make it green", seed=2)
    result = message.artifact
    assert message.status == "success" and isinstance(result, DetectSegmentEditResult)
    assert result.classes == ["red circle"] and len(result.masks) == 3 and result.after is not None
    lines = message.content.splitlines()
    assert lines[0].startswith("recipe0.boxes: 3 boxes on image1 (128×128)")
    assert lines[1].startswith("recipe0.masks: 3 masks on image1") and "image_id='recipe0.images'" in lines[2]
    assert len(session.turns) == 1  # the recipe ran in a conversation of its own
    assert np.array_equal(loaded.result("recipe0.masks").masks, result.masks.masks)
    assert loaded.result("recipe0.boxes[1]").xyxy.tolist() == result.boxes[1].xyxy.tolist()
    edited = loaded.result("recipe0.images")
    assert isinstance(edited, Images) and np.array_equal(np.asarray(edited.images[0]), np.asarray(result.after))
    assert loaded.outputs_of(result) == {"image": "image1", "boxes": "recipe0.boxes", "masks": "recipe0.masks",
                                         "images": "recipe0.images"}
    lineage = loaded.registry.lineage("recipe0.masks")
    assert lineage.tool == "detect_segment_edit" and lineage.inputs == ["image1"]
    assert lineage.args["instruction"] == "make it green"
    # later tools use the held results: as prompts, as an edit region, as an image, as a file
    assert call(loaded, "segment", prompts=["recipe0.boxes[0]"]).content.startswith("turn1.masks: 1 mask on image1")
    region = call(loaded, "edit", instruction="make it blue", region_id="recipe0.masks")
    assert region.status == "success" and region.artifact.settings["region"] == "recipe0.masks"
    again = call(loaded, "detect", classes=["green circle"], image_id="recipe0.images")
    assert again.content.startswith("turn3.boxes: 3 boxes on image2")
    assert [r.id for r in loaded.registry.ancestry("turn3.boxes")] == [
        "turn3.boxes", "recipe0.images", "image1"]
    assert call(loaded, "save_result", result_id="recipe0.masks", path="out/masks.png").status == "success"
    assert call(loaded, "save_result", result_id="recipe0.boxes", path="out/boxes.json").status == "success"
    assert Boxes.from_json((loaded.paths.roots[0] / "out" / "boxes.json").read_text()) == loaded.result("recipe0.boxes")


def test_in_context_takes_examples_by_result_id_and_by_coordinates(loaded, session, workdir):
    message = call(loaded, "in_context_segment", examples=["turn0.boxes[0]", [10, 10, 40, 40], [64, 64]],
                   label="circle", target_paths=["scene.png"], target_ids=["image1"])
    result = message.artifact
    assert message.status == "success" and isinstance(result, InContextResult)
    assert [m.source for m in result.examples] == ["image1"] * 3 and [m.prompt for m in result.examples] == [
        "Box", "Box", "Point"]
    assert [item.source for item in result.items] == ["image1", "scene.png"]
    assert all(set(item.masks.labels) <= {"circle"} for item in result.items)
    assert message.content.startswith("in_context_segment: 'circle' from 3 example(s) in 2 image(s).")
    assert "recipe0.masks: " in message.content and "recipe1.masks: " in message.content and " on image2 " in message.content
    assert sorted(session.images) == ["image1", "image2"] and session.current_image == "image2"  # the file was loaded
    assert loaded.registry.lineage("image2").args == {"path": str(workdir / "scene.png")}
    assert loaded.registry.lineage("recipe1.masks").inputs == ["image2", "turn0.boxes[0]", "image1"]
    assert isinstance(loaded.result("recipe1.boxes"), Boxes) and loaded.outputs_of(result) == {}  # two targets
    every = call(loaded, "in_context_segment", examples=["turn0.boxes", "recipe0.masks"])  # whole results: each item
    assert every.status == "success" and len(every.artifact.examples) == 3 + len(result.items[0].masks)
    assert set(loaded.outputs_of(every.artifact)) == {"image", "masks", "boxes"}


def test_inspect_parts_measures_defects_and_gives_verdicts(loaded, session, workdir):
    scene = Image.open(workdir / "scene.png")
    scene.save(workdir / "part2.png")
    message = call(loaded, "inspect_parts", defects=["scratches", "dent"], image_ids="image1", paths=["part2.png"],
                   pixel_size=[0.05, 0.1], max_defects=5, max_area_mm2=1.0)
    report = message.artifact
    assert message.status == "success" and isinstance(report, InspectionReport)
    assert report.defects == ["scratch", "dent"] and report.pixel_size == (0.05, 0.1)
    assert [p.source for p in report.parts] == ["image1", "part2.png"] and report.failures == []
    part = report.parts[0]
    assert part.defects and part.defects[0].area_mm2 == pytest.approx(part.defects[0].area_px * 0.005)
    lines = message.content.splitlines()
    assert lines[0] == (f"inspect_parts: 2 part(s) for [scratch, dent] at 0.05×0.1 mm/px: {len(report.passed)} "
                        f"passed, {len(report.failed)} failed.")
    assert lines[1].startswith(f"image1: {'PASS' if part.passed else 'FAIL'}") and "mm²" in lines[1]
    assert "ids recipe0.boxes, recipe0.masks" in lines[1] and lines[2].startswith("part2.png: ")
    assert len(loaded.result("recipe1.masks")) == len(report.parts[1].defects)
    assert loaded.registry.image_of("recipe1.masks") == "image2" and len(session.turns) == 1
    # no pixel size: areas in pixels, said so
    plain = call(loaded, "inspect_parts")
    assert "areas in pixels (no pixel_size)" in plain.content and plain.artifact.defects == [
        "scratch", "dent", "crack", "hole"] and " px" in plain.content.splitlines()[1]


def test_measure_structures_windows_16_bit_scans_and_carries_the_disclaimer(loaded, session, workdir):
    ramp = (np.arange(96 * 80).reshape(96, 80) * 5 + 1000).astype(np.uint16)
    Image.fromarray(ramp).save(workdir / "scan.png")
    message = call(loaded, "measure_structures", structures=["lesions", "liver"], paths="scan.png", pixel_spacing=0.7)
    report = message.artifact
    assert message.status == "success" and isinstance(report, MedicalReport) and report.disclaimer == DISCLAIMER
    item = report.items[0]
    assert item.source == "scan.png" and item.window is not None and item.image_size == (80, 96)
    assert "not a diagnosis" in message.content and "at 0.7 mm/px" in message.content
    assert "id recipe0.masks (one item per finding)" in message.content and " mm²" in message.content
    if item.findings:
        finding = item.findings[0]
        assert finding.area_mm2 == pytest.approx(finding.area_px * 0.49)
    shown = np.asarray(session.images["image2"].picture)  # the windowed 8-bit picture the model saw
    assert shown.dtype == np.uint8 and shown.shape == (96, 80, 3) and shown.min() == 0 and shown.max() == 255
    assert loaded.outputs_of(report) == {"image": "image2", "masks": "recipe0.masks"}


def test_map_objects_tiles_merges_and_holds_whole_image_results(loaded, session):
    message = call(loaded, "map_objects", classes=["buildings", "road"], tile_size=64, overlap=16)
    result = message.artifact
    assert message.status == "success" and isinstance(result, RemoteSensingResult)
    assert result.classes == ["building", "road"] and len(result.tiles) == 9 and len(result.turns) == 9
    assert message.content.startswith("map_objects on image1 (128×128) in 9 tile(s) of 64 px (overlap 16): ")
    boxes, masks = loaded.result("recipe0.boxes"), loaded.result("recipe0.masks")
    assert isinstance(boxes, Boxes) and isinstance(masks, Masks) and len(boxes) == len(masks) == len(result.objects)
    assert masks.image_size == (128, 128) and len(session.turns) == 1


@pytest.mark.parametrize("name, args, expected", [
    ("inspect_parts", {"pixel_size": 0}, "pixel_size: expected millimetres per pixel > 0"),
    ("inspect_parts", {"pixel_size": [0.1, -1]}, "pixel_size: expected millimetres per pixel > 0"),
    ("inspect_parts", {"pixel_size": [0.1, 0.1, 0.1]}, "or a pair [x, y]"),
    ("measure_structures", {"pixel_spacing": -0.5}, "pixel_spacing: expected millimetres per pixel > 0"),
    ("measure_structures", {"pixel_spacing": float("nan")}, "pixel_spacing: expected millimetres per pixel > 0"),
    ("inspect_parts", {"max_area_mm2": 1.0}, "max_area_mm2 needs pixel_size"),
    ("inspect_parts", {"defects": ["rust"]}, "defects: expected classes among ['scratch', 'dent', 'crack', 'hole']"),
    ("inspect_parts", {"image_ids": ["image1"] * 9, "paths": ["scene.png"] * 9}, "expected at most 16 images"),
    ("inspect_parts", {"paths": ["../secret.png"]}, "PathNotAllowedError"),
    ("inspect_parts", {"paths": ["scene.png", "missing.png"]}, "expected an existing file"),
    ("map_objects", {"path": "notes.png"}, "not a readable image"),
    ("map_objects", {"overlap": 300}, "expected overlap < tile_size (256)"),
    ("map_objects", {"tile_size": 8}, "tile_size: Input should be greater than or equal to 16"),
    ("map_objects", {"classes": ["tree"]}, "classes: expected classes among ['building'"),
    ("detect_segment_edit", {"classes": ["dog"], "image_id": "image1", "path": "scene.png"}, "not both"),
    ("detect_segment_edit", {"classes": ["dog"], "image_id": "image9"}, "expected one of ['image1']"),
    ("detect_segment_edit", {"classes": []}, "classes: List should have at least 1 item"),
    ("detect_segment_edit", {"classes": ["dog"], "colour": "red"}, "colour: Extra inputs are not permitted"),
    ("in_context_segment", {"examples": ["turn0.boxes[7]"]}, "expected an item index in [0, 3)"),
    ("in_context_segment", {"examples": ["turn0.boxes"], "reference_id": "image1"}, "leave reference_id out"),
    ("in_context_segment", {"examples": [[1, 2, 3]]}, "expected [x, y] or [x1, y1, x2, y2]"),
    ("in_context_segment", {"examples": [[300, 300, 400, 400]]}, "InvalidPromptError"),
    ("in_context_segment", {"examples": ["recipe3.masks"]}, "which no recipe made"),
    ("in_context_segment", {"examples": ["turn0.boxes[0]"], "target_ids": ["image1", "image5"]}, "target_ids: expected one of"),
])
def test_bad_arguments_come_back_as_error_messages_and_change_nothing(loaded, workdir, tmp_path, name, args, expected):
    (tmp_path / "secret.png").write_bytes((workdir / "scene.png").read_bytes())
    (workdir / "notes.png").write_text("not a picture")
    before = state(loaded)
    message = call(loaded, name, **args)
    assert isinstance(message, ToolMessage) and message.status == "error" and message.artifact is None
    assert expected in message.content, message.content
    assert message.content.split(":")[0] in {"InvalidInputError", "InvalidPromptError", "InvalidImageError",
                                             "PathNotAllowedError"}
    assert state(loaded) == before and loaded.registry._held == {}


def test_any_class_lets_recipe_tools_take_other_words(session, scene):
    session.set_image(scene.image)
    toolkit = VisionToolkit(session, any_class=True)
    assert "or any other word" in toolkit.tool("inspect_parts").description
    message = call(toolkit, "inspect_parts", defects=["rust", "scratches"])
    assert message.status == "success" and message.artifact.defects == ["rust", "scratch"]


@pytest.mark.parametrize("goal, expected", [
    ("inspect the part for scratches and dents", [("inspect_parts", {"defects": ["scratch", "dent"]})]),
    ("examine the parts for defects at 0.05 mm per pixel", [("inspect_parts", {"pixel_size": 0.05})]),
    ("measure the lesions", [("measure_structures", {"structures": ["lesion"]})]),
    ("measure the size of the liver and kidneys on the scan, 0.7 mm/px",
     [("measure_structures", {"structures": ["liver", "kidney"], "pixel_spacing": 0.7})]),
    ("map the buildings", [("map_objects", {"classes": ["building"]})]),
    ("map the buildings and roads in the aerial image, then save them to out/map.png",
     [("map_objects", {"classes": ["building", "road"]}),
      ("save_result", {"result_id": "$map_objects_1.masks", "path": "out/map.png"})]),
    ("find the lesions and measure them",
     [("detect", {"classes": ["lesion"]}), ("measure_structures", {"structures": ["lesion"]})]),
    ("map the buildings and make them red",
     [("map_objects", {"classes": ["building"]}),
      ("edit", {"instruction": "make the buildings red", "region_id": "$map_objects_1.masks"})]),
])
def test_the_rule_planner_reads_recipe_goals(goal, expected):
    assert [(s.tool, s.args) for s in RuleBasedPlanner().plan(goal).steps] == expected


def test_the_rule_planner_plans_and_executes_a_recipe_goal(toolkit, session, scene, workdir):
    session.set_image(scene.image)
    goal = "inspect the part for scratches and dents, then save them to out/defects.png"
    plan = RuleBasedPlanner().plan(goal, image="image1")
    assert [(s.id, s.tool, s.args) for s in plan.steps] == [
        ("inspect_parts_1", "inspect_parts", {"defects": ["scratch", "dent"], "image_ids": ["image1"]}),
        ("save_result_1", "save_result", {"result_id": "$inspect_parts_1.masks", "path": "out/defects.png"})]
    run = PlanExecutor(toolkit).run(plan)
    report = run["inspect_parts_1"].artifact
    assert isinstance(report, InspectionReport) and [p.source for p in report.parts] == ["image1"]
    assert run["inspect_parts_1"].outputs == {"image": "image1", "boxes": "recipe0.boxes", "masks": "recipe0.masks"}
    assert run["save_result_1"].args["result_id"] == "recipe0.masks" and run.lineage("save_result_1") == [
        "inspect_parts_1"]
    assert (workdir / "out" / "defects.png").is_file() and session.turns == []


def test_an_agent_chains_recipe_ids_into_a_replayable_plan(toolkit, session, scene, scripted):
    session.set_image(scene.image)

    def calls(*pairs):
        return AIMessage(content="", tool_calls=[{"name": n, "args": a, "id": f"c{k}"} for k, (n, a) in enumerate(pairs)])

    model = scripted(responses=[
        calls(("detect", {"classes": ["red circle"]})),
        calls(("in_context_segment", {"examples": ["turn0.boxes[1]"], "label": "circle"})),
        calls(("edit", {"instruction": "make them blue", "region_id": "recipe0.masks"})),
        AIMessage(content="Done."),
    ])
    run = ToolCallingAgent(model, toolkit).run("find circles like the second red one and make them blue")
    assert [s.status for s in run.steps] == ["success"] * 3 and run.answer == "Done."
    assert "recipe0.masks" in run.steps[1].content and isinstance(run.steps[1].artifact, InContextResult)
    assert [(s.tool, s.args) for s in run.plan.steps][1:] == [
        ("in_context_segment", {"examples": ["$detect_1.boxes[1]"], "label": "circle"}),
        ("edit", {"instruction": "make them blue", "region_id": "$in_context_segment_1.masks"})]
    assert "'recipe0.masks'" in run.messages[0].text
