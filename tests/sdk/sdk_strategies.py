"""Hypothesis strategies for the SDK result types (small sizes keep the suite fast)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from visionllm2.sdk import Boxes, Images, Masks, Poses, Turn

# No control characters: numpy str arrays (used by supervision's data) drop trailing NULs.
label_text = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=8)
labels_pool = st.sampled_from(["person", "dog", "cat", "red car", "the man on the left"])
any_label = st.one_of(labels_pool, label_text)
image_sizes = st.tuples(st.integers(1, 48), st.integers(1, 48))
unit_float32 = st.floats(0, 1, width=32)


@st.composite
def xyxy_arrays(draw: st.DrawFn, n: int, image_size: tuple[int, int]) -> np.ndarray:
    """Valid float32 boxes (x2 >= x1, y2 >= y1), sometimes poking out of the image."""
    width, height = image_size
    corner = st.floats(-10, 2 * max(width, height), width=32)
    extent = st.floats(0, 2 * max(width, height), width=32)
    x1y1 = draw(arrays(np.float32, (n, 2), elements=corner))
    wh = draw(arrays(np.float32, (n, 2), elements=extent))
    return np.concatenate([x1y1, x1y1 + wh], axis=1).astype(np.float32)


@st.composite
def provenance(draw: st.DrawFn, image_size: tuple[int, int]) -> dict:
    return {
        "image_size": image_size,
        "turn": draw(st.none() | st.integers(0, 20)),
        "route": draw(st.none() | st.sampled_from(["[DET]", "[SEG]", "[POSE]", "[GEN]"])),
        "asked": draw(st.lists(any_label, max_size=3)),
    }


@st.composite
def boxes_results(draw: st.DrawFn, max_n: int = 6) -> Boxes:
    image_size = draw(image_sizes)
    n = draw(st.integers(0, max_n))
    return Boxes(
        xyxy=draw(xyxy_arrays(n, image_size)),
        scores=draw(arrays(np.float32, (n,), elements=unit_float32)),
        labels=draw(st.lists(any_label, min_size=n, max_size=n)),
        ids=draw(st.none() | st.lists(label_text, min_size=n, max_size=n)),
        **draw(provenance(image_size)),
    )


@st.composite
def masks_results(draw: st.DrawFn, max_n: int = 4, with_boxes: bool | None = None) -> Masks:
    width, height = image_size = draw(st.tuples(st.integers(1, 24), st.integers(1, 24)))
    n = draw(st.integers(0, max_n))
    with_boxes = draw(st.booleans()) if with_boxes is None else with_boxes
    return Masks(
        masks=draw(arrays(bool, (n, height, width))),
        scores=draw(arrays(np.float32, (n,), elements=unit_float32)),
        labels=draw(st.lists(any_label, min_size=n, max_size=n)),
        boxes=draw(xyxy_arrays(n, image_size)) if with_boxes else None,
        **draw(provenance(image_size)),
    )


@st.composite
def poses_results(draw: st.DrawFn, max_n: int = 4) -> Poses:
    image_size = draw(image_sizes)
    n = draw(st.integers(0, max_n))
    k = draw(st.integers(1, 6))
    names = draw(st.lists(label_text, min_size=k, max_size=k, unique=True))
    coordinate = st.floats(-5, 100, width=32)
    xy = draw(arrays(np.float32, (n, k, 2), elements=coordinate))
    score = draw(arrays(np.float32, (n, k, 1), elements=unit_float32))
    index = st.integers(0, k - 1)
    return Poses(
        boxes=draw(xyxy_arrays(n, image_size)),
        keypoints=np.concatenate([xy, score], axis=-1),
        keypoint_names=names,
        skeleton=draw(st.lists(st.tuples(index, index), max_size=5)),
        scores=draw(arrays(np.float32, (n,), elements=unit_float32)),
        labels=draw(st.lists(any_label, min_size=n, max_size=n)),
        **draw(provenance(image_size)),
    )


@st.composite
def images_results(draw: st.DrawFn, max_n: int = 2) -> Images:
    width, height = draw(st.tuples(st.integers(1, 8), st.integers(1, 8)))
    n = draw(st.integers(1, max_n))
    pixels = [draw(arrays(np.uint8, (height, width, 3))) for _ in range(n)]
    return Images(
        images=[Image.fromarray(p) for p in pixels],
        captions=draw(st.lists(st.text(max_size=10), min_size=n, max_size=n)),
        seeds=draw(st.lists(st.none() | st.integers(0, 2**32), min_size=n, max_size=n)),
        settings=draw(st.fixed_dictionaries({"steps": st.integers(1, 50), "guidance": st.floats(0, 20)})),
        route="[GEN]",
    )


@st.composite
def turns(draw: st.DrawFn) -> Turn:
    results = draw(
        st.lists(
            st.one_of(boxes_results(3), masks_results(2), poses_results(2), images_results(1)), max_size=3
        )
    )
    return Turn(
        index=draw(st.integers(0, 10)),
        prompt=draw(st.text(max_size=20)),
        text=draw(st.text(max_size=30)),
        routes=[r.route or "[DET]" for r in results],
        results=results,
    )
