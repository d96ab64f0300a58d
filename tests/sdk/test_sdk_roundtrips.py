"""Property tests: JSON, COCO and supervision round trips of every result type."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from sdk_strategies import boxes_results, images_results, masks_results, poses_results, turns

from visionllm2.sdk import Boxes, Images, Masks, Poses, Turn

FAST = settings(max_examples=25, deadline=None)


def assert_same_arrays(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    assert np.array_equal(a, b)


# ---------------------------------------------------------------- JSON: exact


@FAST
@given(boxes_results())
def test_boxes_json_round_trip_is_exact(boxes: Boxes) -> None:
    back = Boxes.from_json(boxes.to_json())
    assert back == boxes
    assert_same_arrays(back.xyxy, boxes.xyxy)
    assert_same_arrays(back.scores, boxes.scores)
    assert (back.labels, back.ids, back.asked, back.image_size) == (
        boxes.labels,
        boxes.ids,
        boxes.asked,
        boxes.image_size,
    )


@FAST
@given(masks_results())
def test_masks_json_round_trip_is_exact(masks: Masks) -> None:
    text = masks.to_json()
    back = Masks.from_json(text)
    assert back == masks
    assert_same_arrays(back.masks, masks.masks)
    assert_same_arrays(back.boxes, masks.boxes)
    assert "__rle__" in json.loads(text)["masks"]  # masks travel as RLE, not raw bits


@FAST
@given(poses_results())
def test_poses_json_round_trip_is_exact(poses: Poses) -> None:
    back = Poses.from_json(poses.to_json())
    assert back == poses
    assert_same_arrays(back.keypoints, poses.keypoints)
    assert back.skeleton == poses.skeleton


@FAST
@given(images_results())
def test_images_json_round_trip_is_pixel_exact(images: Images) -> None:
    back = Images.from_json(images.to_json())
    assert back == images
    assert [np.asarray(i).tolist() for i in back.images] == [np.asarray(i).tolist() for i in images.images]


@FAST
@given(turns())
def test_turn_json_round_trip_keeps_result_types(turn: Turn) -> None:
    back = Turn.from_json(turn.to_json())
    assert back == turn
    assert [type(r) for r in back.results] == [type(r) for r in turn.results]
    assert back.boxes == turn.boxes and back.masks == turn.masks and back.poses == turn.poses


def test_turn_convenience_properties_pick_first_of_each_kind() -> None:
    first = Boxes(xyxy=[[0, 0, 1, 1]], scores=[1], labels=["a"], image_size=(4, 4))
    second = Boxes(xyxy=[[1, 1, 2, 2]], scores=[1], labels=["b"], image_size=(4, 4))
    turn = Turn(
        index=0, prompt="find a", text="[DET][DET]", routes=["[DET]", "[DET]"], results=[first, second]
    )
    assert turn.boxes is first
    assert turn.masks is None and turn.poses is None and turn.images is None
    assert repr(turn).startswith("Turn(0,") and "Boxes(n=1" in repr(turn)


# ---------------------------------------------------------------- COCO: equal up to float tolerance


@FAST
@given(boxes_results())
def test_boxes_coco_round_trip(boxes: Boxes) -> None:
    coco = json.loads(json.dumps(boxes.to_coco(image_id=7)))  # must be plain JSON
    back = Boxes.from_coco(coco)
    np.testing.assert_allclose(back.xyxy, boxes.xyxy, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(back.scores, boxes.scores, rtol=1e-6)
    assert (back.labels, back.asked, back.image_size) == (boxes.labels, boxes.asked, boxes.image_size)
    # With no annotations COCO cannot tell "no ids" from "an empty list of ids".
    assert back.ids == (boxes.ids or None)


@FAST
@given(masks_results())
def test_masks_coco_round_trip(masks: Masks) -> None:
    coco = json.loads(json.dumps(masks.to_coco()))
    back = Masks.from_coco(coco)
    assert_same_arrays(back.masks, masks.masks)
    np.testing.assert_allclose(back.boxes, masks.boxes, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(back.scores, masks.scores, rtol=1e-6)
    assert back.labels == masks.labels
    assert [a["area"] for a in coco["annotations"]] == masks.area.tolist()


@FAST
@given(poses_results())
def test_poses_coco_round_trip(poses: Poses) -> None:
    coco = json.loads(json.dumps(poses.to_coco(visibility_threshold=0.5)))
    back = Poses.from_coco(coco)
    np.testing.assert_allclose(back.keypoints, poses.keypoints, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(back.boxes, poses.boxes, rtol=1e-6, atol=1e-4)
    assert (back.keypoint_names, back.skeleton, back.labels) == (
        poses.keypoint_names,
        poses.skeleton,
        poses.labels,
    )
    for annotation, visible in zip(coco["annotations"], poses.visible(0.5)):
        flags = annotation["keypoints"][2::3]
        assert flags == [2.0 if v else 0.0 for v in visible]
        assert annotation["num_keypoints"] == int(visible.sum())


def test_poses_coco_skeleton_is_one_based() -> None:
    poses = Poses.empty((10, 10), asked=["person"])
    category = poses.to_coco(category_ids={"person": 1})["categories"][0]
    assert len(category["keypoints"]) == 17
    assert min(min(edge) for edge in category["skeleton"]) == 1
    assert [a + 1 for a in poses.skeleton[0]] == category["skeleton"][0]


def test_to_coco_rejects_labels_missing_from_category_ids() -> None:
    boxes = Boxes(xyxy=[[0, 0, 1, 1]], scores=[1], labels=["cat"], image_size=(4, 4))
    with pytest.raises(ValueError, match="category_ids"):
        boxes.to_coco(category_ids={"dog": 1})


# ---------------------------------------------------------------- supervision


@FAST
@given(boxes_results())
def test_boxes_supervision_round_trip(boxes: Boxes) -> None:
    detections = boxes.to_supervision()
    assert len(detections) == len(boxes)
    back = Boxes.from_supervision(
        detections, boxes.image_size, asked=boxes.asked, turn=boxes.turn, route=boxes.route
    )
    assert back == boxes


@FAST
@given(masks_results())
def test_masks_supervision_round_trip(masks: Masks) -> None:
    detections = masks.to_supervision()
    back = Masks.from_supervision(
        detections, masks.image_size, asked=masks.asked, turn=masks.turn, route=masks.route
    )
    assert_same_arrays(back.masks, masks.masks)
    assert_same_arrays(back.boxes, masks.boxes)
    assert (back.labels, back.scores.tolist()) == (masks.labels, masks.scores.tolist())


@FAST
@given(poses_results())
def test_poses_supervision_round_trip(poses: Poses) -> None:
    key_points = poses.to_supervision()
    back = Poses.from_supervision(
        key_points,
        poses.image_size,
        keypoint_names=poses.keypoint_names,
        skeleton=poses.skeleton,
        asked=poses.asked,
        turn=poses.turn,
        route=poses.route,
    )
    assert back == poses


def test_supervision_class_ids_follow_sorted_labels() -> None:
    boxes = Boxes(xyxy=np.zeros((3, 4)), scores=[1, 1, 1], labels=["dog", "cat", "dog"], image_size=(4, 4))
    detections = boxes.to_supervision()
    assert detections.class_id.tolist() == [1, 0, 1]
    assert detections.data["class_name"].tolist() == ["dog", "cat", "dog"]
