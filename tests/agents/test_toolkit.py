"""VisionToolkit: one LangChain tool per capability, ids instead of pixels, typed errors as tool messages."""

from __future__ import annotations

import os

import numpy as np
import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import StructuredTool
from pydantic import BaseModel

from visionllm2.agents import LoadedImage, PathNotAllowedError, PathPolicy, SavedFile, VisionToolkit
from visionllm2.sdk import Boxes, Images, InvalidInputError, Masks, Poses, Session, Turn

RECIPE_TOOLS = ["detect_segment_edit", "in_context_segment", "inspect_parts", "measure_structures", "map_objects"]


def call(toolkit: VisionToolkit, name: str, **args) -> ToolMessage:
    return toolkit.tool(name).invoke({"name": name, "args": args, "id": f"call-{name}", "type": "tool_call"})


def state(session: Session):
    return len(session.turns), sorted(session.images), session.current_image


def test_tools_are_offered_by_capability_with_schemas_and_artifacts(toolkit, full_model):
    tools = toolkit.get_tools()
    assert [t.name for t in tools] == ["detect", "ground", "segment", "pose", "generate", "edit", "chat",
                                       "load_image", "save_result", *RECIPE_TOOLS]
    for tool in tools:
        assert tool.response_format == "content_and_artifact" and len(tool.description) > 40
        assert issubclass(tool.args_schema, BaseModel) and tool.metadata["outputs"]
    assert "classes" in toolkit.tool("detect").args  # what an LLM is shown
    # the tiny preset has no diffusion decoders, and no directory is allowed: no generate/edit/file tools
    plain = VisionToolkit(Session.from_pretrained("tiny", max_new_tokens=8))
    assert [t.name for t in plain.get_tools()] == ["detect", "ground", "segment", "pose", "chat", *RECIPE_TOOLS]
    assert [t.name for t in VisionToolkit(plain.session, recipes=False).get_tools()][-1] == "chat"


def test_detect_segment_edit_hand_on_ids_and_keep_lineage(toolkit, session):
    loaded = call(toolkit, "load_image", path="scene.png")
    assert loaded.status == "success" and isinstance(loaded.artifact, LoadedImage)
    assert loaded.artifact.image_id == "image1" and "image1" in loaded.content
    found = call(toolkit, "detect", classes="red circles")  # a lone string is a one-class list
    assert found.status == "success" and isinstance(found.artifact, Boxes) and len(found.artifact) == 3
    assert found.content.startswith("turn0.boxes: 3 boxes on image1 (128×128)") and "'turn0.boxes[2]'" in found.content
    masks = call(toolkit, "segment", prompts=["turn0.boxes"])
    assert isinstance(masks.artifact, Masks) and len(masks.artifact) == 3 and masks.content.startswith("turn1.masks")
    assert toolkit.outputs_of(masks.artifact) == {"masks": "turn1.masks", "boxes": "turn1.boxes"}
    edited = call(toolkit, "edit", instruction="make the red circles green", region_id="turn1.masks")
    assert edited.status == "success" and isinstance(edited.artifact, Images)
    picture = np.asarray(edited.artifact.images[0])
    source = np.asarray(session.images["image1"].picture)
    outside = ~masks.artifact.masks.any(axis=0)
    assert picture.shape == source.shape and np.array_equal(picture[outside], source[outside])  # only the region changed
    assert edited.artifact.settings["region"] == "turn1.masks" and toolkit.result("turn2.images") is edited.artifact
    chain = toolkit.registry.ancestry("turn2.images")
    assert [(r.id, r.tool) for r in chain] == [("turn2.images", "edit"), ("image1", "load_image"),
                                               ("turn1.masks", "segment"), ("turn0.boxes", "detect")]
    assert chain[0].inputs == ["image1", "turn1.masks"] and chain[2].inputs == ["image1", "turn0.boxes"]
    # the edited image is an image id too; looking at it twice encodes it once
    again = call(toolkit, "detect", classes=["green circle"], image_id="turn2.images")
    assert again.status == "success" and again.artifact.asked == ["green circle"]
    assert call(toolkit, "detect", classes=["star"], image_id="turn2.images").content.startswith("turn4.boxes: 3 boxes on image2")
    assert sorted(session.images) == ["image1", "image2"]
    assert [r.id for r in toolkit.registry.ancestry("turn4.boxes")][:2] == ["turn4.boxes", "turn2.images"]
    assert toolkit.registry.lineage("image2").inputs == ["turn2.images"]


def test_every_capability_answers_typed(toolkit, session, workdir):
    call(toolkit, "load_image", path=str(workdir / "scene.png"))
    assert isinstance(call(toolkit, "ground", expression="the red circle").artifact, Boxes)
    assert isinstance(call(toolkit, "segment", classes=["star"]).artifact, Masks)
    assert isinstance(call(toolkit, "segment", prompts=[[20, 30], [10, 10, 60, 50]]).artifact, Masks)
    assert isinstance(call(toolkit, "pose").artifact, Poses)
    generated = call(toolkit, "generate", caption="a red circle", seed=3)
    assert isinstance(generated.artifact, Images) and generated.artifact.seeds == [3]
    chat = call(toolkit, "chat", question="what is in the picture?")
    assert isinstance(chat.artifact, Turn) and chat.content.startswith(chat.artifact.text.strip()[:10])
    saved = call(toolkit, "save_result", result_id="turn2.masks", path="out/masks.png")
    assert isinstance(saved.artifact, SavedFile) and (workdir / "out" / "masks.png").is_file()
    call(toolkit, "save_result", result_id="turn0.boxes", path="out/boxes.json")
    assert Boxes.from_json((workdir / "out" / "boxes.json").read_text()) == toolkit.result("turn0.boxes")
    call(toolkit, "save_result", result_id="turn4.images", path="generated.png")
    assert (workdir / "generated.png").is_file()


@pytest.mark.parametrize("name, args, expected", [
    ("detect", {"classes": []}, "classes: List should have at least 1 item"),
    ("detect", {"classez": ["dog"]}, "classes: required, got nothing; classez: Extra inputs are not permitted"),
    ("segment", {"classes": ["dog"], "prompts": ["turn0.boxes"]}, "exactly one of 'classes' or 'prompts'"),
    ("segment", {"prompts": [[1, 2, 3]]}, "expected [x, y] or [x1, y1, x2, y2]"),
    ("segment", {"prompts": ["turn7.boxes"]}, "result id: expected one of ['turn0.boxes'] (add [k]"),
    ("segment", {"prompts": ["turn0.boxes[5]"]}, "expected an item index in [0, 3)"),
    ("detect", {"classes": ["dog"], "image_id": "turn0.boxes"}, "holds Boxes; to look at the image those came from pass 'image1'"),
    ("detect", {"classes": ["dog"], "image_id": "image9"}, "expected one of ['image1'] or an images result id"),
    ("edit", {"instruction": "make it blue", "region_id": "turn0.masks"}, "expected a kind turn 0 has (['boxes'])"),
    ("generate", {"caption": "x", "steps": 0}, "steps: Input should be greater than or equal to 1"),
])
def test_bad_arguments_come_back_as_error_messages_and_change_nothing(toolkit, session, scene, name, args, expected):
    session.set_image(scene.image)
    call(toolkit, "detect", classes=["red circle"])
    before = state(session)
    message = call(toolkit, name, **args)
    assert isinstance(message, ToolMessage) and message.status == "error" and message.artifact is None
    assert expected in message.content, message.content
    assert message.content.split(":")[0] in {"InvalidInputError", "InvalidPromptError"}
    assert state(session) == before


def test_validation_errors_list_what_the_tool_expects(toolkit):
    message = call(toolkit, "detect", classes=5)
    assert message.status == "error"
    assert "Expected (classes: list[str], image_id?: str | null)" in message.content


def test_no_image_yet_is_an_error_not_a_crash(toolkit):
    message = call(toolkit, "detect", classes=["dog"])
    assert message.status == "error" and "load one with load_image first" in message.content


def test_file_tools_are_confined_to_allowed_directories(toolkit, workdir, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes((workdir / "scene.png").read_bytes())
    (workdir / "link.png").symlink_to(outside)
    for path in ["../secret.png", str(outside), "link.png", "sub/../../secret.png"]:
        message = call(toolkit, "load_image", path=path)
        assert message.status == "error" and message.content.startswith("PathNotAllowedError"), path
        assert "expected a file inside" in message.content
    assert call(toolkit, "load_image", path="sub/../scene.png").status == "success"  # '..' that stays inside
    assert "expected an existing file" in call(toolkit, "load_image", path="missing.png").content
    call(toolkit, "detect", classes=["star"])
    for path in ["../out.png", "/tmp/out.png", "link.png"]:
        assert call(toolkit, "save_result", result_id="turn0.boxes", path=path).content.startswith("PathNotAllowedError")
    assert "expected a file ending in one of" in call(toolkit, "save_result", result_id="turn0.boxes", path="x.exe").content
    assert not (tmp_path / "out.png").exists() and outside.read_bytes() == (workdir / "scene.png").read_bytes()


def test_path_policy(tmp_path):
    with pytest.raises(PathNotAllowedError, match="no directory is allowed"):
        PathPolicy().resolve("a.png")
    policy = PathPolicy([tmp_path / "a", tmp_path / "b"])
    assert policy.writable("x/y.png") == (tmp_path / "a" / "x" / "y.png").resolve() and (tmp_path / "a" / "x").is_dir()
    assert policy.resolve(tmp_path / "b" / "z.json") == (tmp_path / "b" / "z.json").resolve()
    os.symlink(tmp_path, tmp_path / "a" / "up")
    with pytest.raises(PathNotAllowedError):
        policy.resolve("up/c/z.png")  # a symlinked folder leading out
    with pytest.raises(InvalidInputError, match="usable file path"):
        policy.resolve("bad\0name.png")
    (tmp_path / "file.png").touch()
    with pytest.raises(InvalidInputError, match="expected directories"):
        PathPolicy([tmp_path / "file.png"])


def test_extra_tools_join_the_toolkit(session):
    def count(text: str) -> tuple[str, int]:
        """Count the words of a text."""
        return f"{len(text.split())} words", len(text.split())

    extra = StructuredTool.from_function(count, response_format="content_and_artifact", metadata={"outputs": ["count"]})
    toolkit = VisionToolkit(session, extra_tools=[extra])
    assert toolkit.get_tools()[-1] is extra and toolkit.tool("count") is extra
    with pytest.raises(InvalidInputError, match="got 'detect' twice"):
        VisionToolkit(session, extra_tools=[StructuredTool.from_function(count, name="detect")])
    with pytest.raises(InvalidInputError, match="expected options among"):
        VisionToolkit(session, diffusion={"steps": 2})


def test_empty_results_say_what_was_asked(toolkit, session, scene):
    from visionllm2.agents.summary import summarise

    empty = Boxes.empty((128, 128), asked=["dog"])
    assert summarise("turn0.boxes", empty, "image1") == (
        "turn0.boxes: nothing found for [dog] on image1 (128×128). Try other names or another image.")
    session.set_image(scene.image)
    session.detect(["red circle"])  # a turn made without the toolkit is addressable too
    toolkit.registry._made.clear()
    assert isinstance(toolkit.result("turn0.boxes[1]"), Boxes) and len(toolkit.result("turn0.boxes[1]")) == 1
