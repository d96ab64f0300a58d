"""Visual prompts: a point, box, scribble or mask that says *which* region a question is about.

Each prompt rasterises to a bool ``(H, W)`` region mask with :meth:`to_mask`, which is what the
region encoder consumes. Coordinates are pixels of the original image (``(0, 0)`` is the top-left
corner; pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)``). Prompts outside the image or
with zero area raise :class:`InvalidPromptError` rather than silently asking about nothing.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar, Self

import numpy as np
from PIL import Image, ImageDraw
from pydantic import field_validator, model_validator

from visionllm2.model.errors import InvalidPromptError, describe

from .results._base import Array, Model, as_array, check_finite
from .results.boxes import Boxes
from .results.masks import Masks
from .results.poses import Poses

# Default point radius / scribble width as a fraction of the image's shorter side: big enough to
# survive the encoder's downsampling, small enough to stay on one object.
_DEFAULT_EXTENT = 0.01


def _default_extent(image_size: tuple[int, int]) -> float:
    return max(1.0, _DEFAULT_EXTENT * min(image_size))


def _image_size(image_size: object, where: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in image_size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        width = height = 0
    if width <= 0 or height <= 0:
        raise InvalidPromptError(
            f"{where}: expected image_size (width, height) of positive ints, got {describe(image_size)}"
        )
    return width, height


class VisualPrompt(Model):
    """Base of the visual prompts. Fields may also be given positionally, in declaration order.

    ``label`` (keyword only) names what the prompt marks: ``Session.segment(prompts=...)`` gives the
    region's mask that label instead of ``regionN``. A prompt made from an earlier result
    (:func:`as_visual_prompt` on ``turn.boxes[2]``) carries that result's label.
    """

    _error: ClassVar[type[InvalidPromptError]] = InvalidPromptError
    _positional: ClassVar[tuple[str, ...]] = ()
    label: str | None = None

    def __init__(self, *args: Any, **data: Any) -> None:
        if len(args) > len(self._positional):
            raise InvalidPromptError(
                f"{type(self).__name__}: expected at most {len(self._positional)} positional arguments "
                f"{self._positional}, got {len(args)}"
            )
        super().__init__(**dict(zip(self._positional, args)), **data)

    @field_validator("label")
    @classmethod
    def _check_label(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise InvalidPromptError(f"{cls.__name__}.label: expected a non-empty name or None, got {value!r}")
        return value

    @abstractmethod
    def _draw(self, image_size: tuple[int, int]) -> np.ndarray: ...

    def to_mask(self, image_size: tuple[int, int]) -> np.ndarray:
        """bool ``(H, W)`` region for an image of ``image_size`` = ``(width, height)``."""
        size = _image_size(image_size, f"{type(self).__name__}.to_mask")
        mask = self._draw(size)
        if not mask.any():
            raise InvalidPromptError(
                f"{type(self).__name__}.to_mask: expected a region of at least 1 pixel, got 0 pixels "
                f"for {self!r} on an image of size {size}"
            )
        return mask

    def _outside(self, what: str, image_size: tuple[int, int]) -> InvalidPromptError:
        width, height = image_size
        return InvalidPromptError(
            f"{type(self).__name__}: expected {what} the image (0 <= x <= {width}, 0 <= y <= {height}; "
            f"pixels, not normalised), got {self!r}"
        )


class Point(VisualPrompt):
    """A click at ``(x, y)``, drawn as a disc of ``radius`` pixels (default: 1% of the shorter
    image side, at least 1). The pixel under the point is always included."""

    _positional: ClassVar[tuple[str, ...]] = ("x", "y", "radius")
    x: float
    y: float
    radius: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not (math.isfinite(self.x) and math.isfinite(self.y)):
            raise InvalidPromptError(f"Point: expected finite x and y, got x={self.x}, y={self.y}")
        if self.radius is not None and not (math.isfinite(self.radius) and self.radius > 0):
            raise InvalidPromptError(f"Point.radius: expected a positive number of pixels, got {self.radius}")
        return self

    def _draw(self, image_size: tuple[int, int]) -> np.ndarray:
        width, height = image_size
        if not (0 <= self.x <= width and 0 <= self.y <= height):
            raise self._outside("the point inside", image_size)
        radius = self.radius if self.radius is not None else _default_extent(image_size)
        rows, cols = np.ogrid[:height, :width]
        mask = (cols + 0.5 - self.x) ** 2 + (rows + 0.5 - self.y) ** 2 <= radius**2
        mask[min(int(self.y), height - 1), min(int(self.x), width - 1)] = True
        return mask


class Box(VisualPrompt):
    """A rectangle ``(x1, y1, x2, y2)`` in pixel corners; every pixel it touches is in the region.
    A box partly outside the image is clipped; one wholly outside raises."""

    _positional: ClassVar[tuple[str, ...]] = ("x1", "y1", "x2", "y2")
    x1: float
    y1: float
    x2: float
    y2: float

    @model_validator(mode="after")
    def _check(self) -> Self:
        corners = (self.x1, self.y1, self.x2, self.y2)
        if not all(math.isfinite(v) for v in corners):
            raise InvalidPromptError(f"Box: expected finite corners, got {corners}")
        if not (self.x2 > self.x1 and self.y2 > self.y1):
            raise InvalidPromptError(f"Box: expected x2 > x1 and y2 > y1 (xyxy pixel corners), got {corners}")
        return self

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2

    def _draw(self, image_size: tuple[int, int]) -> np.ndarray:
        width, height = image_size
        c0, c1 = max(0, math.floor(self.x1)), min(width, math.ceil(self.x2))
        r0, r1 = max(0, math.floor(self.y1)), min(height, math.ceil(self.y2))
        if c1 <= c0 or r1 <= r0:
            raise self._outside("the box to overlap", image_size)
        mask = np.zeros((height, width), dtype=bool)
        mask[r0:r1, c0:c1] = True
        return mask


class Scribble(VisualPrompt):
    """A free-hand stroke through ``points`` ``[(x, y), ...]`` (at least 2), drawn ``width``
    pixels thick with round joints and ends (default width: 1% of the shorter image side)."""

    _positional: ClassVar[tuple[str, ...]] = ("points", "width")
    points: list[tuple[float, float]]
    width: float | None = None

    @field_validator("points", mode="before")
    @classmethod
    def _coerce_points(cls, value: object) -> list[tuple[float, float]]:
        points = as_array(value, np.float64, "Scribble.points", "(M, 2)")
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
            raise InvalidPromptError(
                f"Scribble.points: expected shape (M >= 2, 2) of (x, y) pixels (use Point for one), "
                f"got {describe(points)}"
            )
        check_finite(points, "Scribble.points")
        return [(float(x), float(y)) for x, y in points]

    @field_validator("width")
    @classmethod
    def _check_width(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InvalidPromptError(f"Scribble.width: expected a positive number of pixels, got {value}")
        return value

    def _draw(self, image_size: tuple[int, int]) -> np.ndarray:
        width, height = image_size
        points = np.asarray(self.points)
        if not ((points >= 0).all() and (points[:, 0] <= width).all() and (points[:, 1] <= height).all()):
            raise self._outside("every point inside", image_size)
        stroke = max(1, round(self.width if self.width is not None else _default_extent(image_size)))
        canvas = Image.new("L", image_size, 0)
        draw = ImageDraw.Draw(canvas)
        # PIL puts integer coordinates at pixel centres; ours put them at pixel corners.
        shifted = [(x - 0.5, y - 0.5) for x, y in self.points]
        draw.line(shifted, fill=1, width=stroke, joint="curve")
        if stroke > 2:  # PIL lines have flat ends; round them off where that is visible
            half = stroke / 2
            for x, y in (shifted[0], shifted[-1]):
                draw.ellipse((x - half, y - half, x + half, y + half), fill=1)
        return np.asarray(canvas, dtype=bool)


class Mask(VisualPrompt):
    """A bool ``(H, W)`` region given directly; it must match the image's size."""

    _positional: ClassVar[tuple[str, ...]] = ("mask",)
    mask: Array

    @field_validator("mask", mode="before")
    @classmethod
    def _coerce_mask(cls, value: object) -> np.ndarray:
        mask = as_array(value, bool, "Mask.mask", "(H, W)")
        if mask.ndim != 2 or mask.size == 0:
            raise InvalidPromptError(
                f"Mask.mask: expected a bool array of shape (H, W), got {describe(mask)}"
            )
        return mask

    def __repr__(self) -> str:
        named = "" if self.label is None else f", label={self.label!r}"
        return f"Mask(shape={self.mask.shape}, pixels={int(self.mask.sum())}{named})"

    def _draw(self, image_size: tuple[int, int]) -> np.ndarray:
        width, height = image_size
        if self.mask.shape != (height, width):
            raise InvalidPromptError(
                f"Mask.mask: expected shape {(height, width)} = (height, width) of the image, "
                f"got {describe(self.mask)}"
            )
        return self.mask.copy()


def as_visual_prompt(obj: object, index: int | None = None) -> VisualPrompt:
    """A visual prompt from a prompt, a result, or plain coordinates.

    Accepts a :class:`Point` / :class:`Box` / :class:`Scribble` / :class:`Mask` (returned as is);
    a single-item :class:`Boxes` or :class:`Poses` (its box → :class:`Box`) or :class:`Masks`
    (→ :class:`Mask`), e.g. ``turn.boxes[2]``, or a bigger one with ``index=``, labelled with the
    item's label; an ``(x, y)`` pair (→ Point); an ``(x1, y1, x2, y2)`` quadruple (→ Box); a bool
    ``(H, W)`` array (→ Mask).
    """
    if isinstance(obj, VisualPrompt):
        return obj
    if isinstance(obj, (Boxes, Masks, Poses)):
        chosen = obj if index is None else obj[index]
        if len(chosen) != 1:
            raise InvalidPromptError(
                f"as_visual_prompt: expected a single-item {type(obj).__name__} (e.g. turn.boxes[2]) or index=, "
                f"got {len(chosen)} items"
            )
        label = chosen.labels[0]  # every result type carries one label an item
        if isinstance(chosen, Masks):
            return Mask(chosen.masks[0], label=label)
        return Box(*(chosen.xyxy if isinstance(chosen, Boxes) else chosen.boxes)[0].tolist(), label=label)
    if isinstance(obj, np.ndarray) and obj.dtype == bool:
        return Mask(obj)
    if isinstance(obj, (tuple, list, np.ndarray)) and len(obj) in (2, 4):
        try:
            values = [float(v) for v in obj]
        except (TypeError, ValueError):
            values = None
        if values is not None:
            return Point(*values) if len(values) == 2 else Box(*values)
    raise InvalidPromptError(
        "as_visual_prompt: expected Point, Box, Scribble, Mask, a single-item Boxes/Masks/Poses, (x, y), "
        f"(x1, y1, x2, y2) or a bool (H, W) array, got {describe(obj)}"
    )
