"""A handful of synthetic coloured-shape scenes with boxes and masks (the full generator is ShapesWorld)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("red circle", "blue square")
COLOURS = {"red circle": (220, 30, 30), "blue square": (30, 60, 220)}


def scene(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """One image ``(size, size, 3)`` with 1–2 non-overlapping shapes: boxes xyxy, labels, masks."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (235, 235, 225))
    boxes, labels, masks = [], [], []
    for index, name in enumerate(rng.permutation(CLASSES)[: rng.integers(1, 3)]):
        side = int(rng.integers(size // 4, size // 2))
        x = int(rng.integers(0, size // 2 - side // 2)) + index * size // 2
        y = int(rng.integers(0, size - side))
        layer = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(layer)
        box = (min(x, size - side - 1), y, min(x, size - side - 1) + side, y + side)
        (draw.ellipse if name == "red circle" else draw.rectangle)(box, fill=255)
        image.paste(COLOURS[name], mask=layer)
        mask = np.asarray(layer) > 127
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(str(name))
        masks.append(mask)
    return np.asarray(image), np.asarray(boxes, dtype=np.float32), labels, np.stack(masks)
