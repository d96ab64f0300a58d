"""Indexing, iteration, filtering and empty results (one shared implementation for all types)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sdk_strategies import boxes_results, masks_results, poses_results

from visionllm2.sdk import COCO_KEYPOINT_NAMES, COCO_SKELETON, Boxes, Images, InvalidInputError, Masks, Poses

SIZE = (64, 48)


@pytest.fixture
def boxes() -> Boxes:
    return Boxes(
        xyxy=[[0, 0, 10, 10], [5, 5, 20, 30], [1, 2, 3, 4], [30, 30, 40, 40]],
        scores=[0.9, 0.5, 0.2, 0.7],
        labels=["cat", "dog", "cat", "person"],
        ids=["a", "b", "c", "d"],
        image_size=SIZE,
        route="[DET]",
        asked=["cat", "dog", "person"],
        turn=3,
    )


def test_int_index_gives_single_item_result(boxes: Boxes) -> None:
    one = boxes[1]
    assert isinstance(one, Boxes) and len(one) == 1
    assert one.labels == ["dog"] and one.ids == ["b"]
    assert one.xyxy.tolist() == [[5, 5, 20, 30]]
    assert (one.route, one.asked, one.turn, one.image_size) == ("[DET]", boxes.asked, 3, SIZE)
    assert boxes[-1].labels == ["person"]


def test_slice_bool_and_array_indexing(boxes: Boxes) -> None:
    assert boxes[1:3].labels == ["dog", "cat"]
    assert boxes[::-1].ids == ["d", "c", "b", "a"]
    assert boxes[boxes.scores > 0.6].labels == ["cat", "person"]
    assert boxes[[True, False, False, True]].ids == ["a", "d"]
    assert boxes[np.array([3, 0])].labels == ["person", "cat"]
    assert boxes[[2, 2]].ids == ["c", "c"]
    assert len(boxes[[]]) == 0 and boxes[[]].asked == boxes.asked


def test_bad_indices(boxes: Boxes) -> None:
    with pytest.raises(IndexError):
        boxes[4]
    with pytest.raises(IndexError):
        boxes[[0, 9]]
    with pytest.raises(
        InvalidInputError, match=r"expected a bool mask of shape \(4,\), got ndarray of shape \(2,\)"
    ):
        boxes[np.array([True, False])]
    with pytest.raises(InvalidInputError, match="expected int, slice, bool mask"):
        boxes[np.array([0.5])]


def test_iteration_yields_single_item_results(boxes: Boxes) -> None:
    items = list(boxes)
    assert [len(b) for b in items] == [1, 1, 1, 1]
    assert [b.labels[0] for b in items] == boxes.labels
    assert np.array_equal(np.concatenate([b.xyxy for b in items]), boxes.xyxy)


def test_filter_by_score_and_label(boxes: Boxes) -> None:
    assert boxes.filter(min_score=0.5).labels == ["cat", "dog", "person"]
    assert boxes.filter(labels="cat").ids == ["a", "c"]
    assert boxes.filter(labels=["cat", "person"], min_score=0.5).ids == ["a", "d"]
    nothing = boxes.filter(min_score=0.99)
    assert len(nothing) == 0 and nothing.asked == boxes.asked and nothing.xyxy.shape == (0, 4)


def test_empty_results_keep_what_was_asked() -> None:
    boxes = Boxes.empty(SIZE, asked=["unicorn"])
    assert len(boxes) == 0 and boxes.asked == ["unicorn"] and boxes.xyxy.shape == (0, 4)
    masks = Masks.empty(SIZE, asked=["unicorn"])
    assert masks.masks.shape == (0, 48, 64) and masks.boxes.shape == (0, 4) and masks.asked == ["unicorn"]
    poses = Poses.empty(SIZE, asked=["person"])
    assert poses.keypoints.shape == (0, 17, 3) and poses.keypoint_names == list(COCO_KEYPOINT_NAMES)
    assert poses.skeleton == list(COCO_SKELETON)
    assert Boxes.from_json(boxes.to_json()).asked == ["unicorn"]
    assert Boxes.from_coco(boxes.to_coco()).asked == ["unicorn"]
    assert list(boxes) == [] and boxes.filter(min_score=0.1).asked == ["unicorn"]


def test_empty_lists_are_accepted() -> None:
    assert len(Boxes(xyxy=[], scores=[], labels=[], image_size=SIZE)) == 0
    assert Masks(masks=[], scores=[], labels=[], image_size=SIZE).masks.shape == (0, 48, 64)
    poses = Poses(boxes=[], keypoints=[], keypoint_names=["a", "b"], scores=[], labels=[], image_size=SIZE)
    assert poses.keypoints.shape == (0, 2, 3)


def test_masks_and_poses_index_all_per_item_fields() -> None:
    masks = np.zeros((3, 48, 64), bool)
    masks[0, :5, :5] = masks[1, 10:20, 10:30] = masks[2, 40:, 60:] = True
    result = Masks(masks=masks, scores=[0.1, 0.8, 0.5], labels=["a", "b", "c"], image_size=SIZE)
    picked = result[np.array([2, 1])]
    assert picked.labels == ["c", "b"] and picked.masks[1, 15, 15]
    assert picked.boxes.tolist() == [[60, 40, 64, 48], [10, 10, 30, 20]]
    assert picked.area.tolist() == [32, 200]
    assert result.filter(min_score=0.4).labels == ["b", "c"]

    keypoints = np.random.default_rng(0).random((3, 17, 3)).astype(np.float32)
    poses = Poses(
        boxes=np.tile([0, 0, 5, 5], (3, 1)), keypoints=keypoints, keypoint_names=list(COCO_KEYPOINT_NAMES),
        skeleton=list(COCO_SKELETON), scores=[0.3, 0.9, 0.6], labels=["person"] * 3, image_size=SIZE,
    )  # fmt: skip
    assert np.array_equal(poses[1:].keypoints, keypoints[1:])
    assert poses.visible(0.5).shape == (3, 17)
    assert np.array_equal(poses.visible(0.5), keypoints[..., 2] >= 0.5)
    assert poses.filter(min_score=0.5)[0].scores.tolist() == [np.float32(0.9)]


def test_images_index_and_save(tmp_path) -> None:
    from PIL import Image

    images = Images(
        images=[Image.new("RGB", (8, 4), c) for c in ("red", "green", "blue")],
        captions=["r", "g", "b"],
        seeds=[1, None, 3],
        settings={"scheduler": "ddim", "steps": 30, "guidance": 7.5},
    )
    assert images.image_size == (8, 4)
    assert images[1:].captions == ["g", "b"] and images[-1].seeds == [3]
    paths = images[::2].save(tmp_path / "out")
    assert [p.name for p in paths] == ["image_0.png", "image_1.png"]
    reread = Image.open(paths[1])
    assert reread.size == (8, 4) and reread.text["caption"] == "b" and reread.text["seed"] == "3"
    assert np.asarray(reread)[0, 0].tolist() == [0, 0, 255]


@settings(max_examples=25, deadline=None)
@given(st.one_of(boxes_results(), masks_results(), poses_results()), st.data())
def test_any_index_equals_positions(result: Boxes | Masks | Poses, data: st.DataObject) -> None:
    """A bool mask and the int array of its True positions select the same items."""
    keep = data.draw(st.lists(st.booleans(), min_size=len(result), max_size=len(result)))
    by_mask = result[np.array(keep, dtype=bool)]
    by_positions = result[np.flatnonzero(keep)]
    assert by_mask == by_positions
    assert len(by_mask) == sum(keep)
    assert by_mask.asked == result.asked and by_mask.image_size == result.image_size
