"""Stick-figure scenes with named keypoints: people seen from behind and dogs seen from the side.

The pose decoder's synthetic data, drawn in ShapesWorld's style (same backgrounds, 4× supersampled
anti-aliased strokes, optional JPEG) so one model can be trained on both. Every figure has its box,
its visible mask and keypoints in :data:`FIGURE_KEYPOINTS` order, named with words of the shipped
tokenizer's vocabulary so that pose prompts can ask for them.

Left and right follow COCO (the figure's own left). People are seen from behind, so a person's left
arm is on the image's left; a dog is seen from the side, facing either way, and its near legs are the
side it shows (a dog facing right shows its left legs; its far legs are drawn darker, behind it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .shapes import BACKGROUNDS, SUPERSAMPLE, _background, finish_picture

FIGURE_KEYPOINTS: dict[str, tuple[str, ...]] = {
    "person": ("head", "neck", "left shoulder", "right shoulder", "left elbow", "right elbow", "left hand",
               "right hand", "hip", "left knee", "right knee", "left foot", "right foot"),
    # The vocabulary has no "hind": the fore legs end in paws, the hind legs in feet.
    "dog": ("nose", "head", "ear", "shoulder", "hip", "tail", "front left paw", "front right paw", "left foot",
            "right foot"),
}
#: Bones as (keypoint index, keypoint index) pairs, 0-based; what is drawn between them.
FIGURE_SKELETONS: dict[str, tuple[tuple[int, int], ...]] = {
    "person": ((0, 1), (1, 2), (1, 3), (2, 4), (4, 6), (3, 5), (5, 7), (1, 8), (8, 9), (9, 11), (8, 10), (10, 12)),
    "dog": ((0, 1), (1, 2), (1, 3), (3, 4), (4, 5), (3, 6), (3, 7), (4, 8), (4, 9)),
}
FIGURE_KINDS = tuple(FIGURE_KEYPOINTS)

#: Limb colours; skin tones for heads, coat colours for dogs.
_PALETTE = ((220, 40, 40), (40, 170, 60), (40, 80, 220), (240, 210, 40), (245, 140, 30), (140, 60, 190),
            (250, 250, 250), (20, 20, 20), (120, 120, 120), (0, 170, 190), (230, 110, 170), (110, 70, 40))
_SKIN = ((250, 215, 180), (225, 170, 120), (170, 110, 70), (100, 65, 40))
_COATS = ((120, 75, 35), (40, 30, 25), (235, 225, 205), (200, 150, 70), (140, 140, 140), (180, 100, 40))

#: A drawing primitive in pixel coordinates: ("line", [(x, y), …], width) with round ends and joints,
#: ("disc", (x, y), radius) or ("polygon", [(x, y), …]).
Primitive = tuple


@dataclass
class Figure:
    """One figure. box ``(4,)`` float32 xyxy pixels (its whole drawing, clipped to the image); mask bool
    ``(H, W)`` of what stays visible; keypoints ``(J, 3)`` float32 ``x, y, visibility`` in pixels, in
    ``FIGURE_KEYPOINTS[kind]`` order: 2 visible, 1 hidden by another figure or its own near side, 0
    outside the image (then x = y = 0, as in COCO)."""

    kind: str
    box: np.ndarray
    mask: np.ndarray
    keypoints: np.ndarray

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        return FIGURE_KEYPOINTS[self.kind]


@dataclass
class FigureScene:
    """An RGB picture and its figures, all of one ``kind``."""

    image: Image.Image
    kind: str
    figures: list[Figure]


def coverage(size: int | tuple[int, int], primitives: Sequence[Primitive]) -> np.ndarray:
    """Anti-aliased coverage ``(H, W)`` float32 in [0, 1] of the primitives' union.

    ``size`` is the image side or ``(W, H)``. Only the primitives' bounding window is drawn, at
    :data:`SUPERSAMPLE` × resolution and box-filtered down, so many small objects on a large image stay
    cheap.
    """
    width, height = (size, size) if isinstance(size, int) else size
    out = np.zeros((height, width), np.float32)
    points, pad = [], 2.0
    for primitive in primitives:
        if primitive[0] == "disc":
            (x, y), r = primitive[1], primitive[2]
            points += [(x - r, y - r), (x + r, y + r)]
        else:
            points += list(primitive[1])
            if primitive[0] == "line":
                pad = max(pad, primitive[2] / 2 + 2)
    if not points:
        return out
    xy = np.asarray(points, np.float64)
    x0, y0 = np.maximum(np.floor(xy.min(0) - pad), 0).astype(int)
    x1, y1 = np.ceil(xy.max(0) + pad).astype(int)
    x1, y1 = min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return out
    s = SUPERSAMPLE
    layer = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw = ImageDraw.Draw(layer)

    def local(p: Sequence[float]) -> tuple[float, float]:
        return (p[0] - x0) * s, (p[1] - y0) * s

    def disc(p: Sequence[float], r: float) -> None:
        cx, cy = local(p)
        draw.ellipse((cx - r * s, cy - r * s, cx + r * s, cy + r * s), fill=255)

    for primitive in primitives:
        kind = primitive[0]
        if kind == "disc":
            disc(primitive[1], primitive[2])
        elif kind == "polygon":
            draw.polygon([local(p) for p in primitive[1]], fill=255)
        elif kind == "line":
            line, w = primitive[1], primitive[2]
            draw.line([local(p) for p in line], fill=255, width=max(1, round(w * s)))
            for p in line:  # PIL's wide lines have square ends; round them off
                disc(p, w / 2)
        else:
            raise ValueError(f"primitive: expected 'line', 'disc' or 'polygon', got {kind!r}")
    small = np.asarray(layer.resize((x1 - x0, y1 - y0), Image.BOX), np.float32) / 255
    out[y0:y1, x0:x1] = small
    return out


def composite(canvas: np.ndarray, alpha: np.ndarray, colour: Sequence[float] | np.ndarray) -> None:
    """Paint ``colour`` (RGB, or an ``(H, W, 3)`` texture) over the float canvas ``(H, W, 3)`` in place."""
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    if not len(rows):
        return
    # Only the window the paint touches: most objects are small on a large picture.
    window = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    paint = np.asarray(colour, np.float32)
    a = alpha[window][..., None]
    canvas[window] *= 1 - a
    canvas[window] += a * (paint[window] if paint.ndim == 3 else paint)


def _direction(angle: float, mirror: float) -> np.ndarray:
    """Unit vector ``angle`` radians from straight down, turned outward (mirror −1: to the image left)."""
    return np.array([mirror * math.sin(angle), math.cos(angle)])


def _person_pose(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Joints ``(13, 2)`` of a person in units of about its height (y down, hip at the origin)."""
    lean = rng.uniform(-0.25, 0.25)
    up = np.array([math.sin(lean), -math.cos(lean)])
    across = np.array([math.cos(lean), math.sin(lean)])  # towards the image right
    hip = np.zeros(2)
    neck = hip + rng.uniform(0.28, 0.34) * up
    head = neck + 0.11 * np.array([math.sin(lean + rng.uniform(-0.3, 0.3)), -math.cos(lean)])
    half = rng.uniform(0.08, 0.11)
    joints = {"head": head, "neck": neck, "hip": hip, "left shoulder": neck - half * across,
              "right shoulder": neck + half * across}
    upper, fore = rng.uniform(0.13, 0.17), rng.uniform(0.12, 0.16)
    thigh, shin = rng.uniform(0.2, 0.25), rng.uniform(0.19, 0.24)
    for side, mirror in (("left", -1.0), ("right", 1.0)):
        raise_arm = rng.uniform(-0.3, 2.8)  # from hanging down to stretched overhead
        bend = rng.uniform(-1.4, 1.4)
        elbow = joints[f"{side} shoulder"] + upper * _direction(raise_arm - mirror * lean, mirror)
        joints[f"{side} elbow"] = elbow
        joints[f"{side} hand"] = elbow + fore * _direction(raise_arm + bend - mirror * lean, mirror)
        spread, knee_bend = rng.uniform(-0.1, 0.7), rng.uniform(-0.8, 0.8)
        knee = hip + thigh * _direction(spread, mirror)
        joints[f"{side} knee"] = knee
        joints[f"{side} foot"] = knee + shin * _direction(spread + knee_bend, mirror)
    points = np.stack([joints[name] for name in FIGURE_KEYPOINTS["person"]])
    return points, {"head": 0.075, "limb": rng.uniform(0.035, 0.06)}


def _dog_pose(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Joints ``(10, 2)`` of a dog facing right, in units of its shoulder–hip length (y down)."""
    slope = rng.uniform(-0.15, 0.15)
    shoulder = np.zeros(2)
    hip = np.array([-math.cos(slope), math.sin(slope)])
    neck_angle = rng.uniform(0.5, 1.3)  # from level to raised
    head = shoulder + rng.uniform(0.35, 0.5) * np.array([math.cos(neck_angle), -math.sin(neck_angle)])
    head_r = rng.uniform(0.14, 0.2)
    snout = rng.uniform(-0.3, 0.6)
    nose = head + rng.uniform(0.24, 0.34) * np.array([math.cos(snout), math.sin(snout)])
    ear_angle = rng.uniform(-0.5, 0.5)
    ear = head + head_r * 1.5 * np.array([-math.sin(0.4 + ear_angle), -math.cos(0.4 + ear_angle)])
    wag = rng.uniform(-0.4, 1.2)  # tail from hanging to raised
    tail = hip + rng.uniform(0.35, 0.55) * np.array([-math.cos(wag), -math.sin(wag)])
    leg = rng.uniform(0.5, 0.7)
    body = rng.uniform(0.28, 0.4)
    paws = [base + np.array([0.0, body * 0.25]) + leg * _direction(rng.uniform(-0.5, 0.5), 1.0)
            for base in (shoulder, shoulder, hip, hip)]  # near fore, far fore, near hind, far hind
    points = np.stack([nose, head, ear, shoulder, hip, tail, *paws])
    return points, {"head": head_r, "body": body, "limb": rng.uniform(0.08, 0.11), "ear_width": head_r * 0.7}


def _pick_colour(rng: np.random.Generator, options: Sequence[tuple[int, int, int]], under: np.ndarray) -> np.ndarray:
    """A colour from ``options`` that stands out from the background colour ``under`` (RGB)."""
    for _ in range(20):
        colour = np.asarray(options[int(rng.integers(len(options)))], np.float32)
        if np.abs(colour - under).sum() > 120:
            return colour
    # No option stands out: black or white, whichever is further from the background.
    return np.zeros(3, np.float32) if under.sum() > 3 * 128 else np.full(3, 250, np.float32)


def _person_parts(p: np.ndarray, sizes: dict[str, float], colours: list[np.ndarray]) -> list[tuple[np.ndarray, list]]:
    """(colour, primitives) layers in drawing order, from pixel joints ``(13, 2)`` and pixel sizes."""
    w = sizes["limb"]
    legs = [("line", [p[8], p[9], p[11]], w), ("line", [p[8], p[10], p[12]], w)]
    torso = [("line", [p[8], p[1]], w * 1.3), ("line", [p[2], p[3]], w)]
    arms = [("line", [p[2], p[4], p[6]], w), ("line", [p[3], p[5], p[7]], w)]
    head = [("disc", p[0], sizes["head"]), ("line", [p[0], p[1]], w)]
    leg_colour, torso_colour, arm_colour, head_colour = colours
    return [(leg_colour, legs), (torso_colour, torso), (arm_colour, arms), (head_colour, head)]


def _dog_parts(p: np.ndarray, sizes: dict[str, float], colours: list[np.ndarray],
               far: tuple[int, int]) -> list[tuple[np.ndarray, list]]:
    """Far legs (darker) first, then the body with the near legs; ``far``: the far paws' indices."""
    w, body = sizes["limb"], sizes["body"]
    near = tuple(j for j in (6, 7, 8, 9) if j not in far)
    coat, shade = colours[0], colours[0] * 0.6  # the far side is in shade
    ear_base = (p[1] - p[2]) / (np.linalg.norm(p[1] - p[2]) + 1e-6)
    side = np.array([-ear_base[1], ear_base[0]]) * sizes["ear_width"]
    root = p[2] + ear_base * sizes["head"] * 1.2
    return [
        (shade, [("line", [p[3], p[far[0]]], w), ("line", [p[4], p[far[1]]], w)]),
        (coat, [("line", [p[4], p[5]], w * 0.7), ("line", [p[3], p[4]], body), ("line", [p[3], p[1]], w * 1.6),
                ("line", [p[3], p[near[0]]], w), ("line", [p[4], p[near[1]]], w), ("disc", p[1], sizes["head"]),
                ("line", [p[1], p[0]], sizes["head"] * 0.9), ("polygon", [p[2], root + side, root - side])]),
    ]


def _figure(rng: np.random.Generator, kind: str, size: int
            ) -> tuple[np.ndarray, dict[str, float], np.ndarray, tuple[int, ...]]:
    """A posed figure: joints ``(J, 2)`` and stroke sizes in pixels with its drawing's top-left at the
    origin, its extent ``(2,)`` (w, h) and the indices of the keypoints on its far side."""
    points, sizes = _person_pose(rng) if kind == "person" else _dog_pose(rng)
    far: tuple[int, ...] = (7, 9) if kind == "dog" else ()  # a dog facing right shows its left legs
    if kind == "dog" and rng.random() < 0.5:
        # Facing left it shows its right legs: the near legs' joints now carry the right-hand names.
        points = points * np.array([-1.0, 1.0])
        points[[6, 7, 8, 9]] = points[[7, 6, 9, 8]]
        far = (6, 8)
    reach = max(sizes["head"], sizes.get("body", 0) / 2, sizes["limb"] / 2)
    low, high = points.min(0) - reach, points.max(0) + reach
    extent = high - low
    height = rng.uniform(0.35, 0.85) * size if kind == "person" else rng.uniform(0.25, 0.55) * size
    scale = min(height / extent[1], 0.9 * size / extent[0])
    scaled = {k: v * scale for k, v in sizes.items()}
    scaled["limb"] = max(scaled["limb"], size / 64)  # strokes stay at least 2 pixels wide at 128²
    margin = max(0.0, scaled["limb"] / 2 - reach * scale)  # a widened stroke may reach a bit further
    return (points - low) * scale + margin, scaled, extent * scale + 2 * margin, far


def _overlap(box: np.ndarray, others: list[np.ndarray]) -> float:
    """The largest share of the smaller box that ``box`` shares with any of ``others``."""
    worst = 0.0
    for other in others:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        if w > 0 and h > 0:
            smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
            worst = max(worst, w * h / smaller)
    return worst


def render_figures(seed: int, size: int = 128, kind: str | None = None, count: tuple[int, int] = (1, 2),
                   background: str | None = None, jpeg: bool | None = None) -> FigureScene:
    """A seeded scene of ``count`` (min, max inclusive) figures of one ``kind`` ("person" or "dog",
    random when None); the same seed gives the same scene.

    Poses, sizes, limb colours and places vary; figures overlap at most a little (a later one hides
    what it covers, and the covered keypoints become visibility 1) and now and then one reaches past
    the image edge (those keypoints become visibility 0).
    """
    if kind is not None and kind not in FIGURE_KEYPOINTS:
        raise ValueError(f"figure kind: expected one of {FIGURE_KINDS}, got {kind!r}")
    if background is not None and background not in BACKGROUNDS:
        raise ValueError(f"background: expected one of {BACKGROUNDS}, got {background!r}")
    rng = np.random.default_rng(seed)
    kind = kind or FIGURE_KINDS[int(rng.integers(len(FIGURE_KINDS)))]
    style = background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    canvas = _background(rng, size, style).astype(np.float32)
    wanted = int(rng.integers(count[0], count[1] + 1))
    # joints, own drawing, what stays visible of it, its near side, its far keypoints
    placed: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]] = []
    boxes: list[np.ndarray] = []
    for _ in range(wanted):
        joints, sizes, extent, far = _figure(rng, kind, size)
        for _attempt in range(30):
            # Mostly inside the picture; one figure in seven may reach up to a quarter past an edge.
            slack = extent * (0.25 if rng.random() < 0.15 else 0.0)
            offset = rng.uniform(-slack, size - extent + slack)
            box = np.concatenate([offset, offset + extent])
            if _overlap(box, boxes) < 0.2:
                break
        else:
            continue  # no room left for this figure
        boxes.append(box)
        p = joints + offset
        under = canvas[int(np.clip((box[1] + box[3]) / 2, 0, size - 1)), int(np.clip((box[0] + box[2]) / 2, 0, size - 1))]
        if kind == "person":
            colours = [_pick_colour(rng, _PALETTE, under) for _ in range(3)] + [_pick_colour(rng, _SKIN, under)]
            if rng.random() < 0.5:
                colours[0] = colours[2] = colours[1]  # one colour for the whole body
            parts = _person_parts(p, sizes, colours)
        else:
            parts = _dog_parts(p, sizes, [_pick_colour(rng, _COATS, under)], far)
        layers = [coverage(size, primitives) for _, primitives in parts]
        for (colour, _), alpha in zip(parts, layers):
            composite(canvas, alpha, colour)
        union = np.maximum.reduce(layers) >= 0.5
        # The dog's near side hides its far legs; a person seen from behind hides nothing of itself.
        near = layers[-1] >= 0.5 if kind == "dog" else np.zeros_like(union)
        for index, (joints_, own, earlier, near_, far_) in enumerate(placed):  # the new one hides what it covers
            placed[index] = (joints_, own, earlier & ~union, near_, far_)
        placed.append((p, union, union, near, far))
    figures = []
    for p, own, mask, near, far in placed:
        if mask.any():  # the box is the figure's own drawing, occluded keypoints included
            figures.append(Figure(kind, _tight_box(own), mask, _keypoints(p, mask, near, far, size)))
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    return FigureScene(finish_picture(image, rng, style, jpeg), kind, figures)


def _tight_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def _keypoints(points: np.ndarray, visible: np.ndarray, near: np.ndarray, far: tuple[int, ...],
               size: int) -> np.ndarray:
    """``(J, 3)`` x, y, visibility: 0 outside the image, 1 where a later figure (or, for a dog's far
    paws, its own near side) covers the point, 2 otherwise."""
    out = np.zeros((len(points), 3), np.float32)
    for j, (x, y) in enumerate(points):
        if not (0 <= x < size and 0 <= y < size):
            continue
        col, row = int(x), int(y)
        hidden = not _near_pixel(visible, row, col) or (j in far and near[row, col])
        out[j] = (x, y, 1 if hidden else 2)
    return out


def _near_pixel(mask: np.ndarray, row: int, col: int) -> bool:
    """Whether the mask is set at or right next to a pixel (thin strokes may miss its centre)."""
    return bool(mask[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2].any())
