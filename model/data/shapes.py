"""ShapesWorld scenes: seeded pictures of coloured shapes with exact boxes and instance masks.

The renderer is deliberately varied so that a model trained on it generalises beyond one look:
shapes are drawn at 4× resolution and downsampled (anti-aliased edges), rotated, in several sizes,
overlapping (the later shape occludes: masks keep only what stays visible), on plain, gradient,
noisy or textured backgrounds, optionally through JPEG compression. Every object carries the words
a prompt needs: kind, colour, a size word and a place word.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star", "hexagon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "orange": (245, 140, 30), "purple": (140, 60, 190), "white": (250, 250, 250), "black": (20, 20, 20),
}
BACKGROUNDS = ("plain", "gradient", "noise", "texture")
SUPERSAMPLE = 4


@dataclass
class ShapeObject:
    """One visible shape: ``box`` xyxy pixels, ``mask`` bool ``(H, W)`` of what stays visible."""

    kind: str
    colour: str
    size: str          # "small" or "large" (relative to the image)
    place: str         # "left", "right", "top", "bottom" or "centre"
    box: np.ndarray
    mask: np.ndarray

    @property
    def name(self) -> str:
        """The class name: "red circle"; just the kind for objects without a colour word (domain packs)."""
        return f"{self.colour} {self.kind}".strip()


@dataclass
class Scene:
    image: Image.Image
    objects: list[ShapeObject]


def _polygon(kind: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    if kind == "star":
        points = [(radius if i % 2 == 0 else radius * 0.45, angle + i * math.pi / 5) for i in range(10)]
    else:
        sides = {"square": 4, "triangle": 3, "hexagon": 6}[kind]
        points = [(radius, angle + i * 2 * math.pi / sides) for i in range(sides)]
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in points]


def _background(rng: np.random.Generator, size: int, style: str) -> np.ndarray:
    base = rng.integers(120, 236, 3).astype(np.float32)
    if style == "plain":
        return np.broadcast_to(base, (size, size, 3)).copy()
    if style == "gradient":
        other = rng.integers(120, 236, 3).astype(np.float32)
        t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
        ramp = base * (1 - t) + other * t
        return np.broadcast_to(ramp if rng.random() < 0.5 else ramp.transpose(1, 0, 2), (size, size, 3)).copy()
    if style == "noise":
        return np.clip(base + rng.normal(0, 14, (size, size, 3)), 0, 255).astype(np.float32)
    # texture: smooth random blobs, as on a surface
    coarse = rng.normal(0, 30, (size // 16 + 1, size // 16 + 1, 1)).astype(np.float32)
    blobs = np.asarray(Image.fromarray(np.clip(coarse[..., 0] + 128, 0, 255).astype(np.uint8)).resize(
        (size, size), Image.BICUBIC), dtype=np.float32)[..., None] - 128
    return np.clip(base + blobs, 0, 255)


def place_word(box: np.ndarray, size: int) -> str:
    """Where a box's centre lies: left / right / top / bottom thirds, else centre."""
    cx, cy = (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size
    horizontal = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else None
    vertical = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else None
    if horizontal and vertical:
        return horizontal if abs(cx - 0.5) >= abs(cy - 0.5) else vertical
    return horizontal or vertical or "centre"


def render_scene(seed: int, size: int = 128, count: tuple[int, int] = (1, 4), jpeg: bool | None = None,
                 background: str | None = None, recolour: dict[str, str] | None = None) -> Scene:
    """A seeded scene of ``count`` shapes (min, max inclusive); the same seed gives the same scene.

    ``recolour`` (kind → colour) paints every shape of a kind in another colour and changes nothing
    else: the same seed with and without it is an editing pair ("make the circle green").
    """
    rng = np.random.default_rng(seed)
    style = background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    canvas = Image.fromarray(_background(rng, size, style).astype(np.uint8))
    big = size * SUPERSAMPLE
    drawn: list[tuple[str, str, float, np.ndarray]] = []
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        colour = (recolour or {}).get(kind, colour)
        radius = float(rng.uniform(0.08, 0.22)) * size
        cx, cy = rng.uniform(radius, size - radius, 2)
        layer = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(layer)
        s = SUPERSAMPLE
        if kind == "circle":
            draw.ellipse(((cx - radius) * s, (cy - radius) * s, (cx + radius) * s, (cy + radius) * s), fill=255)
        else:
            draw.polygon([(x * s, y * s) for x, y in _polygon(kind, cx, cy, radius, float(rng.uniform(0, 2 * math.pi)))], fill=255)
        alpha = layer.resize((size, size), Image.BOX)  # anti-aliased coverage
        canvas.paste(COLOURS[colour], mask=alpha)
        coverage = np.asarray(alpha) >= 128
        for index, (_, _, _, earlier) in enumerate(drawn):  # the new shape hides what it covers
            drawn[index] = (*drawn[index][:3], earlier & ~coverage)
        drawn.append((kind, colour, radius, coverage))
    objects = []
    for kind, colour, radius, mask in drawn:
        if mask.sum() < 4:  # hidden (almost) entirely: not an object any more
            continue
        ys, xs = np.nonzero(mask)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
        objects.append(ShapeObject(kind, colour, "large" if radius > 0.15 * size else "small",
                                   place_word(box, size), box, mask))
    return Scene(finish_picture(canvas, rng, style, jpeg), objects)


def finish_picture(image: Image.Image, rng: np.random.Generator, style: str, jpeg: bool | None) -> Image.Image:
    """The last look of a rendered picture: JPEG artefacts (``jpeg``, or 30 % of the time when
    ``None``, quality 40–84), else a slight blur of a noisy background."""
    if jpeg if jpeg is not None else rng.random() < 0.3:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(40, 85)))
        return Image.open(buffer).convert("RGB")
    if style == "noise":
        return image.filter(ImageFilter.GaussianBlur(0.3))
    return image
