"""A classical checker of a generated or edited picture: is the asked colour, shape and place there?

No learned model is involved, so it can judge ours. The background is the median of the border
pixels; the object is the largest connected one-colour region that differs from it (for an edit,
the one with most pixels inside the named object's true box). Its colour is the nearest
ShapesWorld colour to its median pixel; its place is :func:`place_word` of its box; its shape
comes from two rotation-invariant measures: solidity (area / convex-hull area, low only for the
star) and fill (area / the circle through its farthest pixel: circle 1, hexagon .83, square .64,
triangle .41). Below 96 pixels a side those measures blur, so small pictures are judged by
matching: each kind is drawn anti-aliased at the object's centroid and area, over a range of
rotations, and the kind whose drawing differs least from the object's soft coverage wins.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from .shapes import COLOURS, SHAPES, SUPERSAMPLE, _polygon, place_word

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)


def background_colour(picture: np.ndarray) -> np.ndarray:
    """The median RGB of the border pixels, float32 ``(3,)``."""
    border = np.concatenate([picture[0], picture[-1], picture[:, 0], picture[:, -1]]).astype(np.float32)
    return np.median(border, 0)


def foreground(picture: np.ndarray, threshold: float = 60.0, near: np.ndarray | None = None) -> np.ndarray:
    """The largest connected one-colour region that differs from the border's median, bool ``(H, W)``.

    near: a box xyxy in fractions of the picture's width and height; then the region with the most
    pixels inside it wins (an edit is judged on the object it names, not on a larger neighbour).
    """
    pixels = picture.astype(np.float32)
    differs = np.linalg.norm(pixels - background_colour(picture), axis=-1) > threshold  # (H, W)
    # Regions are split by nearest ShapesWorld colour, so touching shapes of two colours stay two.
    nearest = np.linalg.norm(pixels[..., None, :] - _PALETTE, axis=-1).argmin(-1)  # (H, W)
    labels, count = np.zeros(picture.shape[:2], np.int32), 0
    for colour in np.unique(nearest[differs]):
        part, found = ndimage.label(differs & (nearest == colour))
        labels[part > 0] = part[part > 0] + count
        count += found
    if count == 0:
        return np.zeros(picture.shape[:2], bool)
    if near is None:
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]  # each region's pixels
    else:
        height, width = picture.shape[:2]
        x0, y0, x1, y1 = np.asarray(near, dtype=np.float64) * [width, height, width, height]
        inside = labels[int(y0):max(int(np.ceil(y1)), int(y0) + 1), int(x0):max(int(np.ceil(x1)), int(x0) + 1)]
        sizes = np.bincount(inside.ravel(), minlength=count + 1)[1:]  # each region's pixels in the box
        if not sizes.any():
            return np.zeros(picture.shape[:2], bool)
    return labels == 1 + int(np.argmax(sizes))


def shape_of(mask: np.ndarray) -> str:
    """circle / hexagon / square / triangle / star, from solidity and fill (see the module docstring)."""
    ys, xs = np.nonzero(mask)
    points = np.stack([xs, ys], 1).astype(np.float64)
    corners = (points[:, None, :] + np.array([[0, 0], [1, 0], [0, 1], [1, 1]])[None]).reshape(-1, 2)
    try:
        hull = ConvexHull(corners).volume  # in 2-D, "volume" is the area
    except QhullError:
        return "unknown"
    area = float(len(points))
    centre = points.mean(0) + 0.5
    radius = float(np.sqrt(((corners - centre) ** 2).sum(1)).max())
    solidity, fill = area / hull, area / (np.pi * radius ** 2)
    if solidity < 0.8:
        return "star"
    return "circle" if fill > 0.9 else "hexagon" if fill > 0.73 else "square" if fill > 0.52 else "triangle"


#: Area of each kind drawn with radius 1 (the circle through its outer corners).
_UNIT_AREA = {"circle": np.pi, "square": 2.0, "triangle": 3 * np.sqrt(3) / 4, "hexagon": 3 * np.sqrt(3) / 2,
              "star": 10 * 0.5 * 0.45 * np.sin(np.pi / 5)}
_SYMMETRY = {"circle": 1, "square": 4, "triangle": 3, "hexagon": 6, "star": 5}


def _coverage(kind: str, cx: float, cy: float, radius: float, angle: float, size: tuple[int, int]) -> np.ndarray:
    from PIL import ImageDraw

    s = SUPERSAMPLE
    layer = Image.new("L", (size[0] * s, size[1] * s), 0)
    draw = ImageDraw.Draw(layer)
    if kind == "circle":
        draw.ellipse(((cx - radius) * s, (cy - radius) * s, (cx + radius) * s, (cy + radius) * s), fill=255)
    else:
        draw.polygon([(x * s, y * s) for x, y in _polygon(kind, cx, cy, radius, angle)], fill=255)
    return np.asarray(layer.resize(size, Image.BOX), dtype=np.float32) / 255


def shape_by_matching(alpha: np.ndarray) -> str:
    """The kind whose anti-aliased drawing best matches a soft coverage map ``(H, W)`` in [0, 1]."""
    height, width = alpha.shape
    area = float(alpha.sum())
    ys, xs = np.mgrid[0:height, 0:width]
    cx, cy = float((alpha * (xs + 0.5)).sum() / area), float((alpha * (ys + 0.5)).sum() / area)
    best, best_error = "unknown", np.inf
    for kind in SHAPES:
        radius = float(np.sqrt(area / _UNIT_AREA[kind]))
        for angle in np.linspace(0, 2 * np.pi / _SYMMETRY[kind], 12 if kind != "circle" else 1, endpoint=False):
            error = float(np.abs(_coverage(kind, cx, cy, radius, float(angle), (width, height)) - alpha).sum())
            if error < best_error:
                best, best_error = kind, error
    return best


def check_picture(image: Image.Image, colour: str, kind: str, place: str,
                  near: np.ndarray | None = None) -> dict[str, bool]:
    """Which of the asked colour / shape / place the picture shows, and ``"all"`` of them.

    near: where the object should be, xyxy in fractions of the picture (see :func:`foreground`);
    by default the largest object is judged.
    """
    picture = np.asarray(image.convert("RGB"))
    mask = foreground(picture, near=near)
    if mask.sum() < 4:
        return {"colour": False, "kind": False, "place": False, "all": False}
    median = np.median(picture[mask].astype(np.float32), 0)
    found_colour = list(COLOURS)[int(np.argmin(np.linalg.norm(_PALETTE - median, axis=1)))]
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    if picture.shape[1] < 96:  # soft coverage of the object: 1 at its colour, 0 at the background's
        span = max(float(np.linalg.norm(median - background_colour(picture))), 1.0)
        alpha = np.clip(1 - np.linalg.norm(picture.astype(np.float32) - median, axis=-1) / span, 0, 1)
        alpha = alpha * ndimage.binary_dilation(mask, iterations=2)
        found_kind = shape_by_matching(alpha)
    else:
        found_kind = shape_of(mask)
    checks = {"colour": found_colour == colour, "kind": found_kind == kind,
              "place": place_word(box, picture.shape[1]) == place}
    checks["all"] = all(checks.values())
    return checks
