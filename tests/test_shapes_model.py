"""The shipped ``shapes`` model: fits its size budget, loads offline, and keeps its behaviour.

Regression tests on held-out scenes (odd seeds: training renders only even ones). The model card
(``model/weights/shapes/MODEL_CARD.md``) has the full held-out figures from ``visionllm2 eval``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rich.console import Console

from visionllm2.model.checkpoint import shipped_model_dir
from visionllm2.model.data.checker import check_picture
from visionllm2.model.data.shapes import render_scene
from visionllm2.model.errors import CheckpointError
from visionllm2.recipes.evaluate import box_iou, mask_iou
from visionllm2.sdk import Session
from visionllm2.sdk.prompts import Point


def _missing() -> str | None:
    try:
        shipped_model_dir("shapes")
    except CheckpointError as error:
        return str(error)
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=f"the shapes model is not shipped: {_missing()}")
RED_CIRCLE_SCENE = 59  # a held-out scene: a red circle beside a white circle


@pytest.fixture(scope="module")
def session() -> Session:
    return Session.from_pretrained("shapes", device="cpu", max_new_tokens=16)


def test_shipped_weights_fit_the_budget_and_carry_every_decoder(session):
    folder = shipped_model_dir("shapes")
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert size <= 40 * 2**20, f"{size / 2**20:.1f} MiB"
    assert (folder / "MODEL_CARD.md").is_file()
    assert set(session.model.decoders()) == {"gdino", "unipose", "sd", "ip2p"}


def test_a_known_scenes_red_circle_is_found_and_segmented(session):
    scene = render_scene(RED_CIRCLE_SCENE)
    truth = next(o for o in scene.objects if o.name == "red circle")
    grounded = session.ground("the red circle", image=scene.image).boxes  # 0.92 when shipped
    assert len(grounded) == 1 and box_iou(grounded.xyxy[0], truth.box) >= 0.8
    session.reset()
    masks = session.segment(prompts=[grounded[0]], image=scene.image).masks  # the found box as a prompt
    assert len(masks) == 1 and mask_iou(masks.masks[0], truth.mask) >= 0.7  # 0.95
    # The same object by detection, then segmented by name, then by its box, in the next turns.
    session.reset()
    found = session.detect(["red circle"], image=scene.image).boxes
    best = int(np.argmax(found.scores))
    assert found.labels[best] == "red circle" and box_iou(found.xyxy[best], truth.box) >= 0.8
    masks = session.segment(["red circle"]).masks  # the same picture, the next turn
    assert len(masks) == 1 and masks.labels[0] == "red circle" and mask_iou(masks.masks[0], truth.mask) >= 0.7
    session.reset()
    found = session.detect(["red circle"], image=scene.image).boxes
    masks = session.segment(prompts=[found[int(np.argmax(found.scores))]]).masks  # detect → segment(prompts=boxes)
    assert len(masks) == 1 and mask_iou(masks.masks[0], truth.mask) >= 0.7  # 0.95


def test_in_bfloat16_the_dtype_cuda_loads_it_finds_segments_and_poses_the_same(session):
    # bfloat16 is what Session.from_pretrained picks on CUDA. Before the deformable layers sampled in
    # float32, torch's CPU grid_sample turned them to NaN and every detection came back empty.
    from visionllm2.model.data.figures import FIGURE_KEYPOINTS, render_figures

    half = Session.from_pretrained("shapes", device="cpu", dtype="bfloat16", max_new_tokens=16)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    scene = render_scene(RED_CIRCLE_SCENE)
    truth = next(o for o in scene.objects if o.name == "red circle")
    found = half.detect(["red circle"], image=scene.image).boxes
    best = int(np.argmax(found.scores))
    assert found.labels[best] == "red circle" and box_iou(found.xyxy[best], truth.box) >= 0.8
    masks = half.segment(prompts=[found[best]]).masks
    assert len(masks) == 1 and mask_iou(masks.masks[0], truth.mask) >= 0.7
    grounded = half.ground("the red circle").boxes
    assert len(grounded) == 1 and box_iou(grounded.xyxy[0], truth.box) >= 0.8
    figures = render_figures(101, kind="person")
    names = list(FIGURE_KEYPOINTS["person"])
    half.reset()
    poses = half.pose(["person"], keypoints=names, image=figures.image).poses
    session.reset()
    reference = session.pose(["person"], keypoints=names, image=figures.image).poses
    assert len(poses) and np.isfinite(poses.keypoints).all()
    shift = np.abs(poses.keypoints[0, :, :2] - reference.keypoints[0, :, :2])  # pixels of 128
    assert shift.mean() <= 1 and shift.max() <= 3, shift  # 0.25 and 0.84: bfloat16's rounding


def test_a_grounded_box_segments_its_object_in_the_next_turn(session):
    # 2l + 3l picked the white circle here (a mark after another turn: mIoU 0.42); 2n trained on
    # interactive samples that follow a detection turn.
    scene = render_scene(RED_CIRCLE_SCENE)
    truth = next(o for o in scene.objects if o.name == "red circle")
    session.reset()
    grounded = session.ground("the red circle", image=scene.image).boxes
    masks = session.segment(prompts=[grounded[0]]).masks  # the same picture, the next turn
    assert len(masks) == 1 and mask_iou(masks.masks[0], truth.mask) >= 0.7  # 0.95


def test_a_click_on_each_of_four_objects_segments_each_object(session):
    # The model alone answers all four clicks with the blue hexagon (IoU 0, 0, 0, 0.98): its region
    # embeddings of marks on one picture are alike. Ranking queries by score × the share of the
    # click they cover (`mark_agreement`) returns each clicked object.
    scene = render_scene(9)  # held out: black hexagon, yellow star, white square, blue hexagon
    clicks = []
    for obj in scene.objects:
        ys, xs = np.nonzero(obj.mask)
        clicks.append(Point(float(xs[len(xs) // 2]), float(ys[len(ys) // 2])))
    session.reset()
    masks = session.segment(prompts=clicks, image=scene.image).masks
    assert masks.labels == ["region1", "region2", "region3", "region4"]
    ious = [mask_iou(masks.masks[k], obj.mask) for k, obj in enumerate(scene.objects)]
    assert min(ious) >= 0.8, ious  # 0.97, 0.86, 0.97, 0.98


def test_eval_scores_interactive_segmentation_per_kind_of_prompt(session):
    from visionllm2.recipes.evaluate import evaluate

    metrics = evaluate(session, ["interactive"], count=12).metrics["interactive"]
    per_prompt = {k: v for k, v in metrics.items() if k.endswith("_mIoU")}
    assert set(per_prompt) <= {"point_mIoU", "box_mIoU", "scribble_mIoU", "mask_mIoU"} and len(per_prompt) >= 2
    assert min(per_prompt.values()) <= metrics["mIoU"] <= max(per_prompt.values())
    assert metrics["mIoU"] >= 0.75, metrics  # 0.874 over 300 (0.631 choosing by score alone)


def test_eval_figures_do_not_depend_on_the_batch_size(session):
    from visionllm2.recipes.evaluate import evaluate

    tasks = ["detect", "ground", "interactive", "pose", "chat"]
    before = list(session.turns)
    one_at_a_time = evaluate(session, tasks, count=10, batch_size=1).metrics
    assert evaluate(session, tasks, count=10, batch_size=4).metrics == one_at_a_time
    assert session.turns == before  # eval runs its own conversations: the caller's is untouched


@pytest.mark.parametrize("kind", ["person", "dog"])
def test_held_out_figures_keypoints_reach_oks_ap50(session, kind):
    from visionllm2.model.data.figures import FIGURE_KEYPOINTS, render_figures
    from visionllm2.model.decoders.pose_eval import PoseEvaluator

    names = list(FIGURE_KEYPOINTS[kind])
    evaluator = PoseEvaluator(names)
    # Odd seeds: held out. Twelve scenes: with six, one missed figure swung AP50 by 0.15.
    for seed in range(101, 125, 2) if kind == "person" else range(201, 225, 2):
        scene = render_figures(seed, kind=kind)
        session.reset()
        poses = session.pose([kind], keypoints=names, image=scene.image).poses
        evaluator.add(scene.image.size, [f.box for f in scene.figures], [f.keypoints for f in scene.figures],
                      [kind] * len(scene.figures), poses.boxes, poses.keypoints, poses.scores, [kind] * len(poses))
    assert evaluator.compute()["keypoints_AP50"] >= 0.8  # 0.95 / 0.87 when shipped


def test_generation_is_seeded_and_well_formed(session):
    # What every picture holds, whatever the checker says of it: a 32² RGB picture per request at the
    # shipped guidance (2, picked on held-out captions: the card), identical for a seed, different across seeds.
    def picture(seed: int):
        session.reset()  # the same conversation each time: the answer depends on the history too
        return session.generate("blue square in the centre", seed=seed).images

    first, again, other = picture(3), picture(3), picture(4)
    assert first.images[0].size == (32, 32) and first.seeds == [3] and first.settings["guidance_scale"] == 2.0
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))
    assert not np.array_equal(np.asarray(first.images[0]), np.asarray(other.images[0]))
    verdict = check_picture(first.images[0], "blue", "square", "centre")
    assert set(verdict) == {"colour", "kind", "place", "all"}


def test_a_picture_asked_after_a_detect_turn_has_the_asked_colour(session):
    # A session asks for pictures after other turns (make demo does). A link trained on first turns
    # only drew a dark blob there (colour right 0.55, everything 0.00 over 20 captions); trained on
    # requests after a detect or segment turn too (generate_history_rate), colour 1.00 (place 0.15).
    scene = render_scene(RED_CIRCLE_SCENE)
    right = []
    for seed, colour in enumerate(("blue", "red", "green", "yellow")):
        session.reset()
        session.detect(["red circle"], image=scene.image)
        picture = session.generate(f"{colour} circle in the centre", seed=seed).images.images[0]
        right.append(check_picture(picture, colour, "circle", "centre")["colour"])
    assert sum(right) >= 3, right


# 0 of 4 before the [GEN] link was fitted by regression (3_generation_fit; first-turn checker 0.40 →
# 0.67 over 60), and 0 of 4 whenever generate showed the session's current picture after reset().
def test_a_generated_blue_square_passes_the_checker(session):
    passed = []
    for seed in range(4):
        session.reset()
        picture = session.generate("blue square in the centre", seed=seed).images.images[0]
        passed.append(check_picture(picture, "blue", "square", "centre")["all"])
    assert sum(passed) >= 3, passed


def test_held_out_edits_recolour_the_named_object_and_keep_the_picture(session):
    # The editor predicts v and was retrained with the changed pixels weighed up (the card): over 200
    # held-out edits the asked colour lands 0.99 of the time and the whole check passes 0.80 (0.63 before).
    from visionllm2.model.data.tasks import ShapesWorld

    world = ShapesWorld(session.processor, "heldout")
    samples = [world.sample(index, "edit") for index in range(12)]
    colours, passed, background_kept = [], [], []
    for seed, sample in enumerate(samples):
        session.reset()
        edited = session.edit(sample.meta["caption"], image=sample.images[0], seed=seed).images.images[0]
        verdict = check_picture(edited, sample.meta["colour"], sample.meta["kind"], sample.meta["place"],
                                near=sample.meta["box"])
        colours.append(verdict["colour"])
        passed.append(verdict["all"])
        source = np.asarray(sample.images[0].convert("RGB").resize(edited.size), dtype=np.float32)
        corner = np.abs(np.asarray(edited, dtype=np.float32)[:3, :3] - source[:3, :3]).mean()
        background_kept.append(corner < 24)  # an ε-predicting editor drifted the background's colour
    assert sum(colours) >= 11, colours
    assert sum(passed) >= 8, passed
    assert sum(background_kept) >= 10, background_kept


def test_the_demo_transcript_keeps_its_shape(tmp_path):
    from visionllm2.recipes.demo import run_demo

    run_demo(tmp_path, Console(quiet=True))
    transcript = json.loads((tmp_path / "transcript.json").read_text())
    assert transcript["model"] == "shapes" and transcript["skipped"] == {}
    verbs = [t for t in transcript["turns"] if not t["prompt"].startswith("How many")]  # the free ask routes as it likes
    assert [t["routes"][0] for t in verbs] == ["[DET]", "[DET]", "[POSE]", "[GEN]", "[EDIT]"]
    assert len(transcript["turns"]) == 6
    assert len(transcript["turns"][0]["results"][0]["labels"]) >= 1  # the scene's shapes are found
    assert transcript["turns"][-1]["prompt"].endswith("make the triangle blue.")  # the scene's triangle is green


def test_the_demo_asks_for_an_edit_that_changes_the_picture():
    from visionllm2.recipes.demo import edit_instruction

    assert edit_instruction("green triangle") == "make the triangle blue"
    assert edit_instruction("blue circle") == "make the circle red"
    assert edit_instruction("square") == "make the square blue"
