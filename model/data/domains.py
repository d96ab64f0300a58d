"""Domain packs: ShapesWorld's machinery in the looks of the three domain recipes.

* ``industrial`` (128²): brushed metal or woven fabric with 0–3 defects — scratch, dent, crack, hole;
  about one part in five is flawless.
* ``medical`` (128²): grayscale scan-like slices (an RGB image with three equal channels, or 16-bit
  ``"I;16"``) — a body outline, a spine, "liver" and "kidney" organs and 0–3 "lesion" blobs.
* ``remote_sensing`` (512², meant to be tiled): top-down ground with "water", "road" bands, 10–30
  rotated "building" roofs with shadows and small "vehicle"s on the roads.

Every scene is a :class:`~.shapes.Scene`: objects carry ``kind`` (the class), ``colour`` ``""``, the
size and place words, a tight ``box`` xyxy in pixels and a bool ``mask`` ``(H, W)`` of what stays
visible (a later object hides what it covers, as in ShapesWorld). Same seed, same scene.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
from PIL import Image, ImageFilter

from .figures import composite, coverage
from .shapes import Scene, ShapeObject, place_word

DOMAINS: dict[str, tuple[str, ...]] = {
    "industrial": ("scratch", "dent", "crack", "hole"),
    "medical": ("liver", "kidney", "lesion"),
    "remote_sensing": ("building", "vehicle", "road", "water"),
}
DEFAULT_SIZES = {"industrial": 128, "medical": 128, "remote_sensing": 512}


class _Objects:
    """Instances in drawing order; adding one takes the pixels it covers from those before it."""

    def __init__(self) -> None:
        self.items: list[tuple[str, np.ndarray]] = []

    def add(self, kind: str, mask: np.ndarray) -> None:
        self.items = [(k, m & ~mask) for k, m in self.items]
        self.items.append((kind, mask))

    def scene_objects(self, size: int) -> list[ShapeObject]:
        objects = []
        for kind, mask in self.items:
            if mask.sum() < 4:  # (almost) hidden or off the image: not an object any more
                continue
            ys, xs = np.nonzero(mask)
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
            # As in ShapesWorld, "large" means a half-extent above 15% of the image side.
            large = max(box[2] - box[0], box[3] - box[1]) / 2 > 0.15 * size
            objects.append(ShapeObject(kind, "", "large" if large else "small", place_word(box, size), box, mask))
        return objects


def _smooth_noise(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """Smooth noise ``(size, size)`` float32, about unit variance, with features about ``cell`` pixels wide."""
    n = max(2, int(size / cell) + 2)
    coarse = Image.fromarray(rng.normal(0, 1, (n, n)).astype(np.float32), mode="F")
    return np.asarray(coarse.resize((size, size), Image.BICUBIC), np.float32)


def _blob(rng: np.random.Generator, centre: np.ndarray, radii: tuple[float, float], angle: float,
          roughness: float, points: int = 48) -> list[tuple[float, float]]:
    """An irregular closed outline: an ellipse whose radius wobbles by a few low harmonics."""
    theta = np.linspace(0, 2 * math.pi, points, endpoint=False)
    wobble = np.ones(points)
    for k in range(2, 6):
        wobble += roughness / k * rng.normal() * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    x, y = radii[0] * wobble * np.cos(theta), radii[1] * wobble * np.sin(theta)
    c, s = math.cos(angle), math.sin(angle)
    return list(zip(centre[0] + c * x - s * y, centre[1] + s * x + c * y))


def _rectangle(centre: np.ndarray, length: float, width: float, angle: float) -> list[tuple[float, float]]:
    """Corners of a rectangle ``length`` along ``angle`` (radians) and ``width`` across it."""
    along = np.array([math.cos(angle), math.sin(angle)]) * length / 2
    across = np.array([-math.sin(angle), math.cos(angle)]) * width / 2
    return [tuple(centre + a * along + b * across) for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]


def _walk(rng: np.random.Generator, start: np.ndarray, angle: float, steps: int, step: float,
          jitter: float) -> list[np.ndarray]:
    """A polyline that keeps roughly to ``angle``; ``jitter`` radians of turn at each vertex."""
    points = [start]
    for _ in range(steps):
        angle += rng.uniform(-jitter, jitter)
        points.append(points[-1] + step * np.array([math.cos(angle), math.sin(angle)]))
    return points


def _count(rng: np.random.Generator, weights: tuple[float, ...]) -> int:
    return int(rng.choice(len(weights), p=np.asarray(weights) / sum(weights)))


# ---------------------------------------------------------------------------------- industrial
def _surface(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brushed metal (grey, streaks along one direction, a soft highlight) or a plain-weave fabric."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    if rng.random() < 0.6:
        grey = rng.uniform(110, 200)
        tint = grey + rng.uniform(-8, 8, 3)
        # Streaks: 1-D noise across the brushing direction, read at every pixel's cross coordinate.
        streaks = rng.normal(0, 1, 4 * size)
        across = np.interp(v + 2 * size, np.arange(4 * size), streaks).astype(np.float32)
        highlight = np.exp(-(((u - rng.uniform(0, size)) / (0.3 * size)) ** 2))
        shade = 9 * across + rng.uniform(10, 35) * highlight + rng.normal(0, 3, (size, size))
        return np.clip(tint + shade[..., None], 0, 255).astype(np.float32)
    colour = rng.uniform(60, 220, 3)
    period = rng.uniform(3, 6)
    warp, weft = 0.5 + 0.5 * np.cos(2 * math.pi * u / period), 0.5 + 0.5 * np.cos(2 * math.pi * v / period)
    over = (np.floor(u / period) + np.floor(v / period)) % 2 == 0  # which thread lies on top
    pattern = np.where(over, warp, weft)
    shade = 0.75 + 0.35 * pattern + 0.04 * _smooth_noise(rng, size, size / 4) + rng.normal(0, 0.02, (size, size))
    return np.clip(colour * shade[..., None], 0, 255).astype(np.float32)


def _industrial(rng: np.random.Generator, size: int) -> tuple[np.ndarray, _Objects]:
    canvas = _surface(rng, size)
    level = float(canvas.mean())
    objects = _Objects()
    boxes: list[np.ndarray] = []
    for _ in range(_count(rng, (0.2, 0.35, 0.3, 0.15))):
        kind = DOMAINS["industrial"][int(rng.integers(4))]
        for _attempt in range(20):  # defects may touch but not pile up on each other
            centre = rng.uniform(0.15 * size, 0.85 * size, 2)
            reach = 0.4 * size if kind in ("scratch", "crack") else 0.12 * size
            box = np.concatenate([centre - reach, centre + reach])
            if all(_box_share(box, other) < 0.5 for other in boxes):
                break
        boxes.append(box)
        if kind == "scratch":
            length = rng.uniform(0.3, 0.8) * size
            steps = int(rng.integers(3, 6))
            line = _walk(rng, centre, rng.uniform(0, 2 * math.pi), steps, length / steps, 0.12)
            alpha = coverage(size, [("line", line, rng.uniform(1.0, 1.6) * size / 128)])
            composite(canvas, alpha * rng.uniform(0.6, 0.9), np.full(3, np.clip(level + rng.choice([-70, 70]), 10, 250)))
            mask = alpha >= 0.25  # thin strokes: a quarter-covered pixel still belongs to them
        elif kind == "crack":
            steps = int(rng.integers(8, 16))
            trunk = _walk(rng, centre, rng.uniform(0, 2 * math.pi), steps, rng.uniform(3, 5) * size / 128, 0.7)
            width = rng.uniform(1.0, 1.8) * size / 128
            strokes = [("line", trunk, width)]
            for _branch in range(int(rng.integers(1, 4))):
                root = trunk[int(rng.integers(1, len(trunk) - 1))]
                branch = _walk(rng, root, rng.uniform(0, 2 * math.pi), int(rng.integers(3, 7)), 3 * size / 128, 0.7)
                strokes.append(("line", branch, width * 0.7))
            alpha = coverage(size, strokes)
            composite(canvas, alpha * 0.85, np.full(3, level * 0.25))
            mask = alpha >= 0.25
        elif kind == "hole":
            radius = rng.uniform(3, 10) * size / 128
            rim = rng.uniform(1, 2.2) * size / 128
            outer = coverage(size, [("disc", centre, radius + rim)])
            composite(canvas, outer, np.full(3, min(level + 50, 245)))
            composite(canvas, coverage(size, [("disc", centre, radius)]), np.full(3, rng.uniform(10, 40)))
            mask = outer >= 0.5
        else:
            mask = _dent(rng, canvas, centre, size)
        objects.add(kind, mask)
    return canvas, objects


def _dent(rng: np.random.Generator, canvas: np.ndarray, centre: np.ndarray, size: int) -> np.ndarray:
    """A soft elliptic depression lit from one side: shading is the slope of the dent along the light."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rx, ry = rng.uniform(4, 13, 2) * size / 128
    angle = rng.uniform(0, math.pi)
    dx, dy = xx - centre[0], yy - centre[1]
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / rx
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / ry
    depth = np.exp(-(u ** 2 + v ** 2) * 1.5)
    gy, gx = np.gradient(depth)
    light = rng.uniform(0, 2 * math.pi)
    slope = (gx * math.cos(light) + gy * math.sin(light)) * min(rx, ry)
    canvas += (rng.uniform(60, 110) * slope - 12 * depth)[..., None]
    np.clip(canvas, 0, 255, out=canvas)
    return u ** 2 + v ** 2 <= 1.0


def _box_share(a: np.ndarray, b: np.ndarray) -> float:
    """How much of the smaller of two xyxy boxes they share (0 to 1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return float(w * h / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])))


# ---------------------------------------------------------------------------------- medical
def _medical(rng: np.random.Generator, size: int) -> tuple[np.ndarray, _Objects, float]:
    """A float slice ``(size, size)`` in [0, 1], its objects and a 16-bit full-scale value."""
    s = size / 128
    image = np.full((size, size), 0.03, np.float32)
    objects = _Objects()
    centre = np.array([0.5, rng.uniform(0.48, 0.55)]) * size
    body_r = (rng.uniform(0.36, 0.46) * size, rng.uniform(0.28, 0.38) * size)
    body = coverage(size, [("polygon", _blob(rng, centre, body_r, rng.uniform(-0.1, 0.1), 0.08))])
    inner_r = (body_r[0] - rng.uniform(3, 6) * s, body_r[1] - rng.uniform(3, 6) * s)
    inner = coverage(size, [("polygon", _blob(rng, centre, inner_r, 0, 0.05))])
    tissue = 0.45 + 0.04 * _smooth_noise(rng, size, 12 * s)
    image = image * (1 - body) + 0.62 * body  # skin line
    image = image * (1 - inner) + tissue * inner  # fat layer left between skin and tissue
    spine = centre + np.array([0, 0.6 * inner_r[1]])
    for radius, level in ((7 * s, 0.92), (3.5 * s, 0.3)):  # a vertebra, bright bone round its dark canal
        disc = coverage(size, [("disc", spine, radius)])
        image = image * (1 - disc) + level * disc
    organs: list[tuple[str, np.ndarray]] = []
    if rng.random() < 0.85:
        # Liver: the patient's right, which is the image's left on a scan viewed from the feet.
        where = centre + np.array([-0.4 * inner_r[0], -0.15 * inner_r[1]]) + rng.normal(0, 2 * s, 2)
        radii = (rng.uniform(0.16, 0.22) * size, rng.uniform(0.13, 0.19) * size)
        organs.append(("liver", coverage(size, [("polygon", _blob(rng, where, radii, rng.uniform(-0.5, 0.5), 0.15))])))
    for side in (-1, 1):
        if rng.random() < 0.75:
            where = spine + np.array([side * rng.uniform(0.28, 0.36) * inner_r[0], -rng.uniform(6, 12) * s])
            radii = (rng.uniform(5, 7.5) * s, rng.uniform(8, 11) * s)
            outline = _blob(rng, where, radii, side * rng.uniform(0.1, 0.4), 0.05)
            organs.append(("kidney", coverage(size, [("polygon", outline)])))
    for kind, alpha in organs:
        level = rng.uniform(0.55, 0.62) if kind == "liver" else rng.uniform(0.66, 0.74)
        texture = level + 0.03 * _smooth_noise(rng, size, 5 * s)
        image = image * (1 - alpha) + texture * alpha
        # A rim a little brighter than the inside, as an organ's capsule shows on a scan.
        edge = np.clip(alpha - np.asarray(Image.fromarray(alpha, mode="F").filter(ImageFilter.MinFilter(3))), 0, 1)
        image = image + 0.05 * edge
        objects.add(kind, alpha >= 0.5)
    for _ in range(_count(rng, (0.3, 0.35, 0.2, 0.15))):
        host = organs[int(rng.integers(len(organs)))][1] if organs and rng.random() < 0.7 else inner
        ys, xs = np.nonzero(host >= 0.9)
        if len(xs) == 0:
            continue
        pick = int(rng.integers(len(xs)))
        radius = rng.uniform(2, 12) * s
        where = np.array([xs[pick], ys[pick]], np.float32) + 0.5
        # Soft edge: full contrast inside, fading over about a pixel and a half at the border.
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        distance = np.hypot(xx + 0.5 - where[0], yy + 0.5 - where[1])
        alpha = np.clip((radius - distance) / (1.5 * s) + 0.5, 0, 1)
        contrast = rng.uniform(0.18, 0.35) * (1 if rng.random() < 0.5 else -1)
        image = image + contrast * alpha * (1 + 0.15 * _smooth_noise(rng, size, 3 * s))
        objects.add("lesion", alpha >= 0.5)
    image = image + rng.normal(0, rng.uniform(0.01, 0.035), image.shape)
    # Windowing differs between scanners: a random gain, offset and gamma.
    image = np.clip(image * rng.uniform(0.85, 1.1) + rng.uniform(-0.05, 0.05), 0, 1) ** rng.uniform(0.8, 1.25)
    return image.astype(np.float32), objects, float(rng.uniform(4095, 65535))


# ---------------------------------------------------------------------------------- remote sensing
def _remote_sensing(rng: np.random.Generator, size: int) -> tuple[np.ndarray, _Objects]:
    s = size / 512
    grass, soil = rng.uniform([60, 90, 40], [110, 140, 80]), rng.uniform([120, 100, 70], [170, 150, 110])
    mix = np.clip(0.5 + 0.35 * _smooth_noise(rng, size, 90 * s), 0, 1)[..., None]
    canvas = grass * (1 - mix) + soil * mix + 10 * _smooth_noise(rng, size, 6 * s)[..., None]
    canvas = canvas.astype(np.float32)
    for _ in range(int(rng.integers(0, 5))):  # fields: patches of crops, not objects
        field = _rectangle(rng.uniform(0, size, 2), rng.uniform(60, 200) * s, rng.uniform(40, 150) * s, rng.uniform(0, math.pi))
        composite(canvas, coverage(size, [("polygon", field)]) * 0.7, rng.uniform([70, 90, 40], [190, 170, 100]))
    objects = _Objects()
    taken = np.zeros((size, size), bool)  # where no building may stand
    for _ in range(_count(rng, (0.4, 0.45, 0.15))):
        colour = rng.uniform([20, 50, 70], [50, 90, 120])
        if rng.random() < 0.35:  # a river across the tile
            start = rng.uniform(0, size, 2) * np.array([0, 1])
            river = _walk(rng, start, rng.uniform(-0.5, 0.5), 8, size / 6, 0.35)
            alpha = coverage(size, [("line", river, rng.uniform(15, 40) * s)])
        else:
            radii = tuple(rng.uniform(30, 110, 2) * s)
            alpha = coverage(size, [("polygon", _blob(rng, rng.uniform(0, size, 2), radii, rng.uniform(0, math.pi), 0.5))])
        composite(canvas, alpha, colour + 6 * _smooth_noise(rng, size, 20 * s)[..., None])
        objects.add("water", alpha >= 0.5)
        taken |= alpha > 0
    roads = []
    for _ in range(_count(rng, (0.1, 0.35, 0.35, 0.2))):
        # From one edge across the tile, with a bend somewhere.
        angle = rng.uniform(0, math.pi)
        direction = np.array([math.cos(angle), math.sin(angle)])
        middle = rng.uniform(0.2, 0.8, 2) * size
        bend = rng.uniform(-0.3, 0.3)
        after = np.array([math.cos(angle + bend), math.sin(angle + bend)])
        line = [middle - direction * 1.5 * size, middle, middle + after * 1.5 * size]
        width = rng.uniform(10, 22) * s
        alpha = coverage(size, [("line", line, width)])
        composite(canvas, alpha, np.full(3, rng.uniform(70, 115)) + 4 * _smooth_noise(rng, size, 4 * s)[..., None])
        if rng.random() < 0.5:  # painted centre line, dashed
            dashes = [("line", [a, a + (b - a) * 0.5], 1.2 * s) for a, b in _dash_points(line, 14 * s)]
            composite(canvas, coverage(size, dashes) * 0.8, np.full(3, 235.0))
        objects.add("road", alpha >= 0.5)
        roads.append((line, width))
        taken |= coverage(size, [("line", line, width + 6 * s)]) > 0
    _buildings(rng, canvas, objects, taken, size)
    for line, width in roads:
        for a, b in _dash_points(line, rng.uniform(25, 60) * s):
            if rng.random() < 0.45:
                continue
            heading = math.atan2(b[1] - a[1], b[0] - a[0]) + (math.pi if rng.random() < 0.5 else 0)
            normal = np.array([-math.sin(heading), math.cos(heading)])
            centre = a + normal * rng.uniform(0.1, 0.3) * width * rng.choice([-1, 1])
            body = _rectangle(centre, rng.uniform(8, 11) * s, rng.uniform(4, 5.5) * s, heading)
            alpha = coverage(size, [("polygon", body)])
            composite(canvas, alpha, rng.choice([[200, 30, 30], [240, 240, 240], [30, 30, 35], [40, 70, 170],
                                                 [150, 150, 155], [220, 190, 40]]).astype(np.float32))
            objects.add("vehicle", alpha >= 0.5)
    return np.clip(canvas, 0, 255), objects


def _dash_points(line: list[np.ndarray], spacing: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive points ``spacing`` apart along a polyline, as (point, next point) pairs."""
    pairs = []
    for a, b in pairwise(line):
        length = float(np.linalg.norm(b - a))
        steps = max(1, int(length / spacing))
        points = [a + (b - a) * t for t in np.linspace(0, 1, steps + 1)]
        pairs += list(pairwise(points))
    return pairs


def _buildings(rng: np.random.Generator, canvas: np.ndarray, objects: _Objects, taken: np.ndarray, size: int) -> None:
    """10–30 rotated roofs off roads and water, each with its shadow cast along one sun direction."""
    s = size / 512
    sun = rng.uniform(0, 2 * math.pi)
    cast = np.array([math.cos(sun), math.sin(sun)]) * rng.uniform(3, 8) * s
    street = rng.uniform(0, math.pi)  # most buildings line up with the neighbourhood's grid
    wanted, placed = int(rng.integers(10, 31)), 0
    for _attempt in range(400):
        if placed == wanted:
            break
        length, width = rng.uniform(14, 42) * s, rng.uniform(12, 30) * s
        angle = street + (rng.integers(0, 2) * math.pi / 2 if rng.random() < 0.8 else rng.uniform(0, math.pi))
        centre = rng.uniform(-0.3 * length, size + 0.3 * length, 2)  # some straddle the tile's edge
        roof = _rectangle(centre, length, width, angle)
        alpha = coverage(size, [("polygon", roof)])
        footprint = alpha > 0
        if not footprint.any() or (footprint & taken).any():
            continue
        shadow = coverage(size, [("polygon", [(x + cast[0], y + cast[1]) for x, y in roof])])
        composite(canvas, shadow * 0.55, np.zeros(3))
        colour = np.asarray([[150, 150, 150], [185, 80, 60], [120, 90, 70], [225, 225, 220], [80, 85, 95],
                             [110, 130, 150]][int(rng.integers(6))], np.float32) + rng.uniform(-12, 12, 3)
        composite(canvas, alpha, colour)
        if rng.random() < 0.5:  # a gable roof: the half away from the sun is darker
            half = _rectangle(centre - np.array([-math.sin(angle), math.cos(angle)]) * width / 4, length, width / 2, angle)
            composite(canvas, coverage(size, [("polygon", half)]) * alpha * 0.25, np.zeros(3))
        objects.add("building", alpha >= 0.5)
        # Keep a little yard round every building, so neighbours never touch.
        taken |= coverage(size, [("polygon", _rectangle(centre, length + 6 * s, width + 6 * s, angle))]) > 0
        placed += 1


# ---------------------------------------------------------------------------------- entry point
def render_domain(domain: str, seed: int, size: int | None = None, *, bit_depth: int = 8) -> Scene:
    """A seeded scene of ``domain`` (a key of :data:`DOMAINS`) at ``size``² pixels (the domain's default
    when None). Images are RGB, except ``medical`` with ``bit_depth=16``: a ``"I;16"`` grayscale
    image whose full scale (4095–65535) varies with the seed, as scanners' ranges do; its geometry is
    the same as the 8-bit scene of the same seed."""
    if domain not in DOMAINS:
        raise ValueError(f"domain: expected one of {tuple(DOMAINS)}, got {domain!r}")
    if bit_depth not in (8, 16) or (bit_depth == 16 and domain != "medical"):
        raise ValueError(f"bit_depth: expected 8, or 16 for 'medical', got {bit_depth!r} for {domain!r}")
    size = size or DEFAULT_SIZES[domain]
    rng = np.random.default_rng(seed)
    if domain == "medical":
        gray, objects, full_scale = _medical(rng, size)
        if bit_depth == 16:
            image = Image.fromarray(np.round(gray * full_scale).astype(np.uint16))
        else:
            image = Image.fromarray(np.round(gray * 255).astype(np.uint8)).convert("RGB")
        return Scene(image, objects.scene_objects(size))
    canvas, objects = _industrial(rng, size) if domain == "industrial" else _remote_sensing(rng, size)
    return Scene(Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)), objects.scene_objects(size))
