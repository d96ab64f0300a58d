"""Physical measurements and display windows shared by the domain recipes.

* pixel size / pixel spacing: millimetres per pixel, one number (square pixels) or a pair. Only the
  pixel's area (the product of the pair) enters areas and equivalent diameters, so the order of the
  pair does not matter for them (industrial cameras say ``(x, y)``, DICOM's PixelSpacing says
  ``(row, column)``).
* areas: pixel counts → mm² (``pixels × dx × dy``); equivalent diameter: the diameter of the circle
  of the same area, ``2·sqrt(area / π)``, in pixels or mm.
* 16-bit (or float) scans → 8-bit display by a percentile window: values at the ``low`` percentile
  map to 0, at the ``high`` percentile to 255, linearly in between, clipped outside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from visionllm2.model.errors import describe
from visionllm2.sdk.errors import InvalidImageError, InvalidInputError

PixelSize = float | tuple[float, float]


def as_pixel_size(value: object, what: str = "pixel_size") -> tuple[float, float]:
    """``(a, b)`` millimetres per pixel from a positive number or a pair of positive numbers.

    Zero, negative, infinite or NaN sizes raise :class:`InvalidInputError`: an area computed from
    them would be silently meaningless.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        pair: Sequence[object] = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        pair = value
    else:
        raise InvalidInputError(f"{what}: expected millimetres per pixel as a positive number or a pair of them, "
                                f"got {describe(value)}")
    try:
        sizes = tuple(float(v) for v in pair)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        sizes = (float("nan"), float("nan"))
    if not all(math.isfinite(s) and s > 0 for s in sizes):
        raise InvalidInputError(f"{what}: expected millimetres per pixel > 0 (e.g. 0.05), got {value!r}; "
                                "measure it from a ruler or the camera's calibration")
    return sizes[0], sizes[1]


def area_mm2(area_px: float | np.ndarray, pixel_size: PixelSize) -> float | np.ndarray:
    """Square millimetres covered by ``area_px`` pixels of ``pixel_size`` (mm per pixel)."""
    a, b = as_pixel_size(pixel_size)
    return area_px * a * b


def equivalent_diameter(area: float | np.ndarray) -> float | np.ndarray:
    """The diameter of a disc of the same ``area`` (in the area's unit, squared → linear)."""
    diameter = 2.0 * np.sqrt(np.asarray(area, np.float64) / math.pi)
    return float(diameter) if diameter.ndim == 0 else diameter


def check_window(window: object) -> tuple[float, float]:
    """``(low, high)`` percentiles with ``0 <= low < high <= 100``."""
    try:
        low, high = (float(v) for v in window)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        low = high = float("nan")
    if not (0.0 <= low < high <= 100.0):
        raise InvalidInputError(f"window: expected percentiles (low, high) with 0 <= low < high <= 100, "
                                f"e.g. (0.5, 99.5), got {window!r}")
    return low, high


def is_high_depth(image: Image.Image) -> bool:
    """True for 16-bit, 32-bit integer and float images (what an 8-bit display cannot show as is)."""
    return image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def window_to_8bit(image: Image.Image | np.ndarray, window: tuple[float, float] = (0.5, 99.5)
                   ) -> tuple[Image.Image, tuple[float, float] | None]:
    """An RGB 8-bit picture of ``image`` and the ``(low, high)`` values the window used.

    High-depth input (16-bit ``"I;16"``, ``"I"``, ``"F"`` images, or integer / float arrays
    ``(H, W)``) is windowed between the ``window`` percentiles of its own values; a constant image
    gives black. 8-bit input (``"L"``, ``"RGB"`` …, uint8 arrays) is only converted to RGB and the
    window is ``None``: it is already what the model reads.
    """
    low_pct, high_pct = check_window(window)
    if isinstance(image, np.ndarray):
        values = image
    elif isinstance(image, Image.Image):
        if not is_high_depth(image):
            return image.convert("RGB"), None
        values = np.asarray(image)
    else:
        raise InvalidImageError(f"image: expected a PIL image or an (H, W) array, got {describe(image)}")
    if values.dtype == np.uint8:
        return Image.fromarray(values).convert("RGB"), None
    if values.ndim == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 2 or values.size == 0 or not (np.issubdtype(values.dtype, np.integer)
                                                    or np.issubdtype(values.dtype, np.floating)):
        raise InvalidImageError(f"image: expected a grayscale (H, W) integer or float array, got {describe(values)}")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise InvalidImageError("image: the scan holds NaN or infinite values")
    low, high = (float(v) for v in np.percentile(values, [low_pct, high_pct]))
    if high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    pixels = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB"), (low, high)
