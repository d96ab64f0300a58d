"""Synthetic stick-figure scenes with named keypoints, for the pose decoder tests."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

KEYPOINTS = ("head", "neck", "left hand", "right hand", "hip", "left foot", "right foot")
SKELETON = ((0, 1), (1, 2), (1, 3), (1, 4), (4, 5), (4, 6))
#: Joint positions of a unit figure (x, y in [0, 1] of its box), before jitter.
_TEMPLATE = np.array([[0.5, 0.1], [0.5, 0.3], [0.1, 0.5], [0.9, 0.45], [0.5, 0.6], [0.2, 0.95], [0.8, 0.95]])


def stick_scene(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image ``(size, size, 3)`` with 1–2 stick figures side by side: boxes ``(N, 4)`` xyxy and
    keypoints ``(N, 7, 3)`` (x, y, visibility 2) in pixels, in :data:`KEYPOINTS` order."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (235, 235, 225))
    draw = ImageDraw.Draw(image)
    count = int(rng.integers(1, 3))
    boxes, keypoints = [], []
    for index in range(count):
        width = int(rng.integers(size // 5, size // 3))
        height = int(rng.integers(size // 2, size - 16))
        slot = size // count
        x = index * slot + int(rng.integers(4, max(5, slot - width - 4)))
        y = int(rng.integers(4, size - height - 4))
        joints = _TEMPLATE + rng.uniform(-0.06, 0.06, _TEMPLATE.shape)
        points = np.stack([x + joints[:, 0] * width, y + joints[:, 1] * height], -1)
        for a, b in SKELETON:
            draw.line([tuple(points[a]), tuple(points[b])], fill=(30, 30, 30), width=3)
        hx, hy = points[0]
        draw.ellipse([hx - 5, hy - 5, hx + 5, hy + 5], fill=(200, 40, 40))
        for px, py in points[2:4]:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(40, 160, 40))
        for px, py in points[5:]:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(40, 40, 200))
        low, high = points.min(0) - 5, points.max(0) + 5
        boxes.append([*np.clip(low, 0, size), *np.clip(high, 0, size)])
        keypoints.append(np.concatenate([points, np.full((len(points), 1), 2.0)], 1))
    return np.asarray(image), np.asarray(boxes, dtype=np.float32), np.asarray(keypoints, dtype=np.float32)
