"""Bad input raises typed errors whose messages say what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from visionllm2.sdk import (
    COCO_KEYPOINT_NAMES,
    Boxes,
    Images,
    InvalidImageError,
    InvalidInputError,
    Masks,
    Poses,
    Turn,
)

SIZE = (64, 48)  # (width, height)


def boxes_kwargs(**override: object) -> dict:
    kwargs = {
        "xyxy": [[0, 0, 10, 10], [5, 5, 20, 30]],
        "scores": [0.9, 0.5],
        "labels": ["a", "b"],
        "image_size": SIZE,
    }
    return {**kwargs, **override}


def masks_kwargs(**override: object) -> dict:
    kwargs = {
        "masks": np.zeros((2, 48, 64), bool),
        "scores": [0.9, 0.5],
        "labels": ["a", "b"],
        "image_size": SIZE,
    }
    return {**kwargs, **override}


def poses_kwargs(**override: object) -> dict:
    kwargs = {
        "boxes": [[0, 0, 10, 10]],
        "keypoints": np.ones((1, 17, 3), np.float32),
        "keypoint_names": list(COCO_KEYPOINT_NAMES),
        "scores": [0.9],
        "labels": ["person"],
        "image_size": SIZE,
    }
    return {**kwargs, **override}


@pytest.mark.parametrize(
    ("override", "expected", "got"),
    [
        ({"xyxy": np.zeros((3, 5))}, "expected shape (N, 4)", "got ndarray of shape (3, 5)"),
        ({"xyxy": np.zeros(4)}, "expected shape (N, 4)", "got ndarray of shape (4,)"),
        ({"xyxy": [[0, 0, 10, 10]]}, "expected scores of length 1", "got ndarray of shape (2,)"),
        ({"labels": ["a"]}, "expected labels of length 2", "got list of length 1"),
        ({"ids": ["x"]}, "expected ids of length 2", "got list of length 1"),
        (
            {"xyxy": [[10, 0, 5, 10], [0, 0, 1, 1]]},
            "expected x2 >= x1 and y2 >= y1",
            "got [10.0, 0.0, 5.0, 10.0]",
        ),
        ({"xyxy": [[0, 0, 1, 1], [0, 9, 1, 2]]}, "expected x2 >= x1 and y2 >= y1", "at index 1"),
        ({"xyxy": [[0, 0, np.nan, 1], [0, 0, 1, 1]]}, "expected finite values", "got nan"),
        ({"scores": [np.inf, 0.1]}, "expected finite values", "got inf"),
        ({"scores": [[0.1, 0.2]]}, "expected shape (N,)", "got ndarray of shape (1, 2)"),
        ({"xyxy": "boxes"}, "expected an array of shape (N, 4)", "got str"),
        ({"image_size": (64,)}, "expected (width, height)", "got tuple of length 1"),
        ({"image_size": (0, 10)}, "expected (width, height)", "got tuple of length 2"),
        ({"labels": "ab"}, "expected a list of str", "got str"),
    ],
)
def test_boxes_validation(override: dict, expected: str, got: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        Boxes(**boxes_kwargs(**override))
    assert expected in str(error.value) and got in str(error.value), str(error.value)
    assert str(error.value).startswith("Boxes")


def test_missing_field_is_a_typed_error() -> None:
    with pytest.raises(InvalidInputError, match=r"Boxes\.labels: expected a value"):
        Boxes(xyxy=[[0, 0, 1, 1]], scores=[1], image_size=SIZE)


def test_errors_are_value_errors_too() -> None:
    with pytest.raises(ValueError):
        Boxes(**boxes_kwargs(xyxy=np.zeros((3, 5))))


@pytest.mark.parametrize(
    ("override", "expected", "got"),
    [
        (
            {"masks": np.zeros((2, 10, 10), bool)},
            "expected shape (N, 48, 64)",
            "got ndarray of shape (2, 10, 10)",
        ),
        ({"masks": np.zeros((48, 64), bool)}, "expected shape (N, H, W)", "got ndarray of shape (48, 64)"),
        ({"masks": np.full((2, 48, 64), 0.7)}, "convertible to bool", "got ndarray of shape (2, 48, 64)"),
        ({"masks": np.zeros((3, 48, 64), bool)}, "expected scores of length 3", "got ndarray of shape (2,)"),
        ({"boxes": np.zeros((2, 3))}, "expected shape (N, 4)", "got ndarray of shape (2, 3)"),
        ({"boxes": np.zeros((1, 4))}, "expected boxes of length 2", "got ndarray of shape (1, 4)"),
        ({"scores": [np.nan, 1]}, "expected finite values", "got nan"),
    ],
)
def test_masks_validation(override: dict, expected: str, got: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        Masks(**masks_kwargs(**override))
    assert expected in str(error.value) and got in str(error.value), str(error.value)


def test_masks_accept_integer_masks_as_nonzero() -> None:
    raw = np.zeros((2, 48, 64), np.uint8)
    raw[0, :2] = 1
    raw[1, :3] = 255  # PIL / OpenCV style
    masks = Masks(**masks_kwargs(masks=raw))
    assert masks.masks.dtype == bool and masks.area.tolist() == [128, 192]


def test_results_from_coco_pick_one_image() -> None:
    boxes = Boxes(**boxes_kwargs())
    first, second = boxes.to_coco(image_id=1), boxes[:1].to_coco(image_id=2, start_id=10)
    both = {**first, "images": [*first["images"], *second["images"]]}
    both["annotations"] = first["annotations"] + second["annotations"]
    with pytest.raises(InvalidInputError, match=r"expected data for one image or image_id=, got 2 image ids"):
        Boxes.from_coco(both)
    assert len(Boxes.from_coco(both, image_id=2)) == 1
    assert Boxes.from_coco(first["annotations"], image_size=SIZE).xyxy.tolist() == boxes.xyxy.tolist()


@pytest.mark.parametrize(
    ("override", "expected", "got"),
    [
        ({"keypoints": np.ones((1, 5, 3))}, "expected shape (N, 17, 3)", "got ndarray of shape (1, 5, 3)"),
        ({"keypoints": np.ones((1, 17, 2))}, "expected shape (N, K, 3)", "got ndarray of shape (1, 17, 2)"),
        ({"keypoints": np.full((1, 17, 3), np.nan)}, "expected finite values", "got nan"),
        ({"boxes": np.zeros((2, 4))}, "expected boxes of length 1", "got ndarray of shape (2, 4)"),
        ({"skeleton": [(0, 17)]}, "expected 0-based indices in [0, 17)", "got [(0, 17)]"),
        ({"skeleton": [(0, 1, 2)]}, "expected shape (E, 2)", "got ndarray of shape (1, 3)"),
    ],
)
def test_poses_validation(override: dict, expected: str, got: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        Poses(**poses_kwargs(**override))
    assert expected in str(error.value) and got in str(error.value), str(error.value)


def test_images_validation() -> None:
    red = Image.new("RGB", (8, 4), "red")
    with pytest.raises(InvalidImageError, match=r"expected size \(width, height\) \(8, 4\), got \(4, 4\)"):
        Images(images=[red, Image.new("RGB", (4, 4))])
    with pytest.raises(InvalidInputError, match="expected captions of length 1"):
        Images(images=[red], captions=["a", "b"])
    with pytest.raises(InvalidImageError, match="expected a PIL image"):
        Images(images=[np.zeros((4, 4), np.float64)])
    with pytest.raises(InvalidInputError, match="JSON-serialisable"):
        Images(images=[red], settings={"scheduler": object()})


def test_turn_json_errors_name_the_bad_result() -> None:
    boxes = Boxes(**boxes_kwargs())
    text = Turn(index=0, prompt="p", text="t", routes=["[DET]"], results=[boxes]).to_json()
    broken = text.replace('"shape":[2,4]', '"shape":[4,2]')
    with pytest.raises(InvalidInputError, match=r"expected shape \(N, 4\), got ndarray of shape \(4, 2\)"):
        Turn.from_json(broken)
    with pytest.raises(InvalidInputError, match="Turn.index"):
        Turn(index=-1, prompt="p", text="t")


def test_torch_tensors_are_accepted() -> None:
    torch = pytest.importorskip("torch")
    boxes = Boxes(
        xyxy=torch.tensor([[0.0, 0.0, 2.0, 3.0]]), scores=torch.tensor([0.5]), labels=["a"], image_size=SIZE
    )
    assert boxes.xyxy.dtype == np.float32 and boxes.area.tolist() == [6.0]
    half = Boxes(xyxy=torch.tensor([[0.0, 0.0, 2.0, 3.0]], dtype=torch.bfloat16),  # numpy has no bfloat16
                 scores=torch.tensor([0.5], dtype=torch.float16), labels=["a"], image_size=SIZE)
    assert half == boxes


def test_results_are_immutable() -> None:
    boxes = Boxes(**boxes_kwargs())
    with pytest.raises(Exception, match="frozen"):
        boxes.labels = ["x", "y"]  # type: ignore[misc]
