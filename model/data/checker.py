"""A classical checker of a generated or edited picture: is the asked colour, shape and place there?

No learned model is involved, so it can judge ours. The background is the median of the border
pixels; the object is the largest connected region that differs from it. Its colour is the nearest
ShapesWorld colour to its median pixel; its place is :func:`place_word` of its box; its shape
comes from two rotation-invariant measures: solidity (area / convex-hull area, low only for the
star) and fill (area / the circle through its farthest pixel: circle 1, hexagon .83, square .64,
triangle .41).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from .shapes import COLOURS, place_word

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)


def foreground(picture: np.ndarray, threshold: float = 60.0) -> np.ndarray:
    """The largest connected region whose colour differs from the border's median, bool ``(H, W)``."""
    border = np.concatenate([picture[0], picture[-1], picture[:, 0], picture[:, -1]]).astype(np.float32)
    distance = np.linalg.norm(picture.astype(np.float32) - np.median(border, 0), axis=-1)
    labels, count = ndimage.label(distance > threshold)
    if count == 0:
        return np.zeros(picture.shape[:2], bool)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=range(1, count + 1))
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


def check_picture(image: Image.Image, colour: str, kind: str, place: str) -> dict[str, bool]:
    """Which of the asked colour / shape / place the picture shows, and ``"all"`` of them."""
    picture = np.asarray(image.convert("RGB"))
    mask = foreground(picture)
    if mask.sum() < 4:
        return {"colour": False, "kind": False, "place": False, "all": False}
    median = np.median(picture[mask].astype(np.float32), 0)
    found_colour = list(COLOURS)[int(np.argmin(np.linalg.norm(_PALETTE - median, axis=1)))]
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    checks = {"colour": found_colour == colour, "kind": shape_of(mask) == kind,
              "place": place_word(box, picture.shape[1]) == place}
    checks["all"] = all(checks.values())
    return checks
