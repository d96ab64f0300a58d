"""Visual prompts rasterise to the right pixels, and bad prompts fail loudly."""

from __future__ import annotations

import numpy as np
import pytest

from visionllm2.sdk import (
    Box,
    Boxes,
    InvalidPromptError,
    Mask,
    Masks,
    Point,
    Poses,
    Scribble,
    as_visual_prompt,
)

SIZE = (100, 50)  # (width, height): masks are (50, 100)


def test_point_is_a_small_disc_around_the_point() -> None:
    mask = Point(40.5, 20.5, radius=3).to_mask(SIZE)
    assert mask.shape == (50, 100) and mask.dtype == bool
    rows, cols = np.nonzero(mask)
    assert mask[20, 40]  # the pixel under the point
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (17, 23, 37, 43)
    assert mask.sum() == 29  # pixel centres within 3 px of a pixel centre
    assert np.allclose([rows.mean(), cols.mean()], [20, 40])


def test_point_default_radius_scales_with_image_and_is_at_least_one_pixel() -> None:
    small = Point(5, 5).to_mask((10, 10))
    assert small.sum() >= 1 and small[5, 5]
    big = Point(500, 500).to_mask((1000, 1000))  # default radius 10 px
    assert 250 < big.sum() < 380
    tiny = Point(3.2, 4.7, radius=0.01).to_mask((10, 10))
    assert tiny.sum() == 1 and tiny[4, 3]
    assert Point(100, 50).to_mask(SIZE)[49, 99]  # the far corner is still inside


def test_box_fills_its_rectangle() -> None:
    mask = Box(10, 20, 30, 40).to_mask(SIZE)
    assert mask.sum() == 20 * 20
    assert mask[20:40, 10:30].all()
    assert not mask[19].any() and not mask[:, 30].any()
    inside_one_pixel = Box(10.2, 20.2, 10.8, 20.9).to_mask(SIZE)  # never rounds away to nothing
    assert inside_one_pixel.sum() == 1 and inside_one_pixel[20, 10]
    assert Box(10.5, 20.5, 11.2, 20.9).to_mask(SIZE).sum() == 2  # every pixel it touches
    clipped = Box(90, 40, 130, 70).to_mask(SIZE)  # partly outside: clipped
    assert clipped.sum() == 10 * 10


def test_scribble_draws_a_thick_stroke_through_its_points() -> None:
    mask = Scribble([(10.5, 10.5), (60.5, 10.5), (60.5, 40.5)], width=3).to_mask(SIZE)
    assert mask[10, 10:61].all() and mask[10:41, 60].all()  # along both segments
    rows, cols = np.nonzero(mask)
    assert rows.min() >= 8 and rows.max() <= 42 and cols.min() >= 8 and cols.max() <= 62
    assert not mask[30, 20]  # not filled in
    thin = Scribble([(10.5, 10.5), (60.5, 10.5)], width=1).to_mask(SIZE)
    assert thin[10, 10:61].all() and thin.sum() == 51
    assert Scribble([(10.5, 10.5), (60.5, 10.5)], width=7).to_mask(SIZE).sum() > 5 * thin.sum()


def test_mask_prompt_must_match_the_image() -> None:
    region = np.zeros((50, 100), bool)
    region[5:10, 5:10] = True
    assert np.array_equal(Mask(region).to_mask(SIZE), region)
    with pytest.raises(
        InvalidPromptError, match=r"expected shape \(50, 100\).*got ndarray of shape \(50, 50\)"
    ):
        Mask(np.ones((50, 50), bool)).to_mask(SIZE)
    with pytest.raises(InvalidPromptError, match=r"expected a bool array of shape \(H, W\)"):
        Mask(np.ones((2, 50, 100), bool))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Point(120, 10).to_mask(SIZE), r"expected the point inside the image \(0 <= x <= 100"),
        (lambda: Point(-1, 10).to_mask(SIZE), "got Point"),
        (lambda: Point(0.5, 0.5).to_mask((0, 5)), "expected image_size"),
        (lambda: Point(1, 1, radius=0), "expected a positive number of pixels, got 0"),
        (lambda: Point(float("nan"), 1), "expected finite x and y, got x=nan"),
        (lambda: Box(10, 10, 10, 20), r"expected x2 > x1 and y2 > y1.*got \(10.0, 10.0, 10.0, 20.0\)"),
        (lambda: Box(30, 10, 20, 20), "expected x2 > x1"),
        (lambda: Box(200, 10, 300, 20).to_mask(SIZE), "expected the box to overlap the image"),
        (lambda: Scribble([(1, 1)]), r"expected shape \(M >= 2, 2\).*got ndarray of shape \(1, 2\)"),
        (lambda: Scribble([(1, 1), (500, 1)]).to_mask(SIZE), "expected every point inside the image"),
        (lambda: Scribble([(1, 1), (2, 2)], width=-1), "expected a positive number of pixels"),
        (
            lambda: Mask(np.zeros((50, 100), bool)).to_mask(SIZE),
            "expected a region of at least 1 pixel, got 0",
        ),
        (lambda: Point("left", 1), "Point.x"),
        (lambda: Box(1, 2, 3), r"Box\.y2: expected a value"),
    ],
)
def test_bad_prompts_raise_invalid_prompt_error(make, message: str) -> None:
    with pytest.raises(InvalidPromptError, match=message):
        make()


def test_as_visual_prompt_from_results() -> None:
    boxes = Boxes(
        xyxy=[[0, 0, 10, 10], [5, 5, 20, 30]], scores=[0.9, 0.5], labels=["a", "b"], image_size=SIZE
    )
    prompt = as_visual_prompt(boxes[1])
    assert isinstance(prompt, Box) and prompt.xyxy == (5, 5, 20, 30) and prompt.label == "b"
    assert prompt == Box(5, 5, 20, 30, label="b") and prompt != Box(5, 5, 20, 30)
    assert prompt.to_mask(SIZE).sum() == 15 * 25
    assert as_visual_prompt(boxes, index=0).xyxy == (0, 0, 10, 10)
    with pytest.raises(InvalidPromptError, match="expected a single-item Boxes.*got 2 items"):
        as_visual_prompt(boxes)

    region = np.zeros((1, 50, 100), bool)
    region[0, 3:6, 3:6] = True
    masks = Masks(masks=region, scores=[1], labels=["a"], image_size=SIZE)
    from_masks = as_visual_prompt(masks[0])
    assert isinstance(from_masks, Mask) and from_masks.to_mask(SIZE).sum() == 9 and from_masks.label == "a"
    assert "label='a'" in repr(from_masks)

    poses = Poses.empty(SIZE)
    with pytest.raises(InvalidPromptError, match="got 0 items"):
        as_visual_prompt(poses)


def test_a_prompt_label_is_a_name_or_none() -> None:
    assert Point(1, 2, label="bolt").label == "bolt" and Scribble([(0, 0), (5, 5)]).label is None
    assert Box.from_json(Box(1, 2, 3, 4, label="nut").to_json()) == Box(1, 2, 3, 4, label="nut")
    with pytest.raises(InvalidPromptError, match="Box.label: expected a non-empty name or None, got '  '"):
        Box(1, 2, 3, 4, label="  ")
    with pytest.raises(InvalidPromptError, match="label"):
        Point(1, 2, label=3)


def test_as_visual_prompt_from_plain_values() -> None:
    point = Point(1, 2)
    assert as_visual_prompt(point) is point
    assert as_visual_prompt((3, 4)) == Point(3, 4)
    assert as_visual_prompt([1, 2, 3, 4]) == Box(1, 2, 3, 4)
    assert isinstance(as_visual_prompt(np.ones((5, 5), bool)), Mask)
    with pytest.raises(InvalidPromptError, match="got str"):
        as_visual_prompt("the dog")


def test_prompts_round_trip_through_json() -> None:
    for prompt in (
        Point(1, 2, radius=3),
        Box(1, 2, 3, 4),
        Scribble([(0, 0), (5, 5)], width=2),
        Mask(np.eye(4, dtype=bool)),
    ):
        assert type(prompt).from_json(prompt.to_json()) == prompt
