"""Polygons, COCO evaluation with pycocotools, and drawing."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import shapely
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visionllm2.sdk import COCO_KEYPOINT_NAMES, COCO_SKELETON, Boxes, Masks, Poses

SIZE = (120, 90)  # (width, height)


def disc(cx: float, cy: float, r: float, size: tuple[int, int] = SIZE) -> np.ndarray:
    rows, cols = np.ogrid[: size[1], : size[0]]
    return (cols + 0.5 - cx) ** 2 + (rows + 0.5 - cy) ** 2 <= r**2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# ---------------------------------------------------------------- polygons


def test_disc_mask_polygon_mask_round_trip() -> None:
    masks = Masks(masks=[disc(50, 40, 25)], scores=[0.9], labels=["disc"], image_size=SIZE)
    (polygon,) = masks.to_polygons()
    assert isinstance(polygon, shapely.Polygon) and polygon.is_valid
    assert polygon.area == masks.area[0]  # traced on pixel edges, so exact
    back = Masks.from_polygons([polygon], SIZE, labels=["disc"], scores=[0.9])
    assert iou(back.masks[0], masks.masks[0]) > 0.95
    simplified = masks.to_polygons(simplify=1.0)[0]
    assert len(simplified.exterior.coords) < len(polygon.exterior.coords)
    assert iou(Masks.from_polygons([simplified], SIZE, ["disc"]).masks[0], masks.masks[0]) > 0.95


def test_polygons_keep_holes_and_parts() -> None:
    ring = disc(40, 40, 30) & ~disc(40, 40, 10)
    two = np.zeros((90, 120), bool)
    two[5:15, 5:15] = two[50:60, 90:110] = True
    masks = Masks(
        masks=[ring, two, np.zeros((90, 120), bool)],
        scores=[1, 1, 1],
        labels=["r", "t", "e"],
        image_size=SIZE,
    )
    polygons = masks.to_polygons()
    assert len(polygons[0].interiors) == 1
    assert isinstance(polygons[1], shapely.MultiPolygon) and len(polygons[1].geoms) == 2
    assert polygons[2].is_empty
    back = Masks.from_polygons(polygons, SIZE, labels=masks.labels)
    assert np.array_equal(back.masks, masks.masks)


def test_from_polygons_accepts_vertex_arrays() -> None:
    square = np.array([[10, 10], [30, 10], [30, 20], [10, 20]], dtype=float)
    masks = Masks.from_polygons([square], SIZE, labels=["sq"])
    assert masks.area.tolist() == [200] and masks.boxes.tolist() == [[10, 10, 30, 20]]
    with pytest.raises(ValueError, match=r"expected a shapely Polygon.*got ndarray of shape \(2, 2\)"):
        Masks.from_polygons([square[:2]], SIZE, labels=["x"])


# ---------------------------------------------------------------- COCO evaluation


def evaluate(ground_truth: dict, predictions: list[dict], iou_type: str) -> float:
    """AP@[.5:.95] of ``predictions`` against ``ground_truth`` (pycocotools prints; keep it quiet)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = ground_truth
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(predictions), iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


CATEGORIES = {"cat": 1, "dog": 2}


@pytest.fixture
def detections() -> Boxes:
    return Boxes(
        xyxy=[[10, 10, 50, 40], [60, 20, 110, 80], [5, 50, 40, 85]],
        scores=[0.9, 0.8, 0.7],
        labels=["cat", "dog", "cat"],
        image_size=SIZE,
        asked=["cat", "dog"],
    )


def test_bbox_ap_is_one_against_itself_and_drops_when_shifted(detections: Boxes) -> None:
    ground_truth = detections.to_coco(image_id=3, category_ids=CATEGORIES)
    assert {c["name"] for c in ground_truth["categories"]} == {"cat", "dog"}
    assert (
        evaluate(ground_truth, detections.to_coco(image_id=3, category_ids=CATEGORIES)["annotations"], "bbox")
        == 1.0
    )
    shifted = Boxes(**{**detections.model_dump(), "xyxy": detections.xyxy + np.float32([12, 8, 12, 8])})
    ap = evaluate(ground_truth, shifted.to_coco(image_id=3, category_ids=CATEGORIES)["annotations"], "bbox")
    assert 0.0 <= ap < 1.0


def test_segm_ap_is_one_against_itself_and_drops_when_shifted() -> None:
    masks = np.stack([disc(30, 30, 15), disc(80, 50, 20), disc(25, 70, 12)])
    truth = Masks(masks=masks, scores=[0.9, 0.8, 0.7], labels=["cat", "dog", "cat"], image_size=SIZE)
    ground_truth = truth.to_coco(image_id=1, category_ids=CATEGORIES)
    assert (
        evaluate(ground_truth, truth.to_coco(image_id=1, category_ids=CATEGORIES)["annotations"], "segm")
        == 1.0
    )
    moved = Masks(
        masks=np.roll(masks, (6, 6), axis=(1, 2)), scores=truth.scores, labels=truth.labels, image_size=SIZE
    )
    ap = evaluate(ground_truth, moved.to_coco(image_id=1, category_ids=CATEGORIES)["annotations"], "segm")
    assert 0.0 <= ap < 1.0


def test_keypoint_export_loads_in_pycocotools() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform([20, 10], [100, 80], size=(2, 17, 2))
    keypoints = np.concatenate([xy, np.ones((2, 17, 1))], -1).astype(np.float32)
    poses = Poses(
        boxes=[[15, 5, 105, 85], [18, 8, 102, 82]], keypoints=keypoints, keypoint_names=list(COCO_KEYPOINT_NAMES),
        skeleton=list(COCO_SKELETON), scores=[0.9, 0.8], labels=["person", "person"], image_size=SIZE,
    )  # fmt: skip
    ground_truth = poses.to_coco(category_ids={"person": 1})
    assert (
        evaluate(ground_truth, poses.to_coco(category_ids={"person": 1})["annotations"], "keypoints") == 1.0
    )


# ---------------------------------------------------------------- drawing


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(skimage_data.astronaut())  # 512 x 512 RGB


def assert_drawn(before: Image.Image, after: Image.Image) -> None:
    assert isinstance(after, Image.Image) and after.size == before.size and after.mode == "RGB"
    assert not np.array_equal(np.asarray(after), np.asarray(before))


def test_annotate_draws_on_a_copy(astronaut: Image.Image) -> None:
    original = np.asarray(astronaut).copy()
    boxes = Boxes(xyxy=[[150, 30, 350, 250], [0, 0, 500, 500]], scores=[0.9, 0.4], labels=["face", "astronaut"],
                  image_size=astronaut.size)  # fmt: skip
    assert_drawn(astronaut, boxes.annotate(astronaut))
    assert_drawn(astronaut, boxes.annotate(np.asarray(astronaut), labels=False))
    assert np.array_equal(np.asarray(astronaut), original)  # the input is untouched
    assert np.array_equal(np.asarray(Boxes.empty(astronaut.size).annotate(astronaut)), original)


def test_annotate_masks_and_poses(astronaut: Image.Image) -> None:
    size = astronaut.size
    masks = Masks(masks=[disc(250, 150, 80, size)], scores=[0.8], labels=["head"], image_size=size)
    assert_drawn(astronaut, masks.annotate(astronaut))
    rng = np.random.default_rng(1)
    keypoints = np.concatenate([rng.uniform(100, 400, (1, 17, 2)), np.ones((1, 17, 1))], -1)
    poses = Poses(boxes=[[100, 100, 400, 400]], keypoints=keypoints, keypoint_names=list(COCO_KEYPOINT_NAMES),
                  skeleton=list(COCO_SKELETON), scores=[0.9], labels=["person"], image_size=size)  # fmt: skip
    assert_drawn(astronaut, poses.annotate(astronaut, boxes=True))


def label_height(side: int) -> int:
    """Rows a label takes above its box on a plain ``side``² picture (the box itself is drawn below them)."""
    picture = Image.new("RGB", (side, side), (200, 200, 200))
    top = side // 2
    boxes = Boxes(xyxy=[[side // 8, top, side // 2, side - 4]], scores=[0.62], labels=["green hexagon"],
                  image_size=(side, side))  # fmt: skip
    changed = (np.asarray(boxes.annotate(picture)) != np.asarray(picture)).any(-1)[:top]  # (top, side)
    return int(changed.any(1).sum())


def test_labels_are_sized_to_the_picture() -> None:
    # supervision's default scale writes "green hexagon 0.62" 35 px tall at any size: a quarter of a 128² scene.
    small, large = label_height(128), label_height(1024)
    assert 4 <= small <= 14, small  # legible (the floor scale) and small
    assert large >= 2 * small, (small, large)  # and it grows with the picture


def test_annotate_rejects_an_image_of_another_size(astronaut: Image.Image) -> None:
    boxes = Boxes(xyxy=[[0, 0, 5, 5]], scores=[1], labels=["a"], image_size=(640, 480))
    with pytest.raises(
        ValueError, match=r"expected an image of size \(width, height\) \(640, 480\).*got \(512, 512\)"
    ):
        boxes.annotate(astronaut)
