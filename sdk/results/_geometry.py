"""Masks ↔ polygons, and masks ↔ COCO RLE.

Polygons are traced on pixel *boundaries* (pixel ``(i, j)`` is the square
``[j, j+1) x [i, i+1)``), not through pixel centres as OpenCV contours are. That makes the outline
exact: its area equals the pixel count and rasterising it again (pixel centres inside) gives the
same mask back, which contour tracing cannot promise for thin parts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely
from pycocotools import mask as coco_mask
from shapely.geometry.base import BaseGeometry

from visionllm2.model.errors import InvalidInputError, describe


def mask_to_geometry(mask: np.ndarray, simplify: float = 0.0) -> BaseGeometry:
    """The exact outline of a bool ``(H, W)`` mask: a ``Polygon`` (holes kept), a
    ``MultiPolygon`` for several parts, or an empty ``Polygon`` for an empty mask.

    ``simplify`` > 0 drops staircase vertices up to that many pixels off (topology kept).
    """
    height, width = mask.shape
    padded = np.zeros((height + 2, width + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    # Unit pixel edges with mask on one side only. Unit segments meet only at their ends, which
    # is the noding polygonize needs; unioning per-row rectangles instead is ~50x slower on
    # fragmented masks.
    rows, cols = np.nonzero(
        padded[1:-1, 1:] != padded[1:-1, :-1]
    )  # vertical edge x=cols, y in [rows, rows+1]
    vertical = np.stack([np.stack([cols, rows], 1), np.stack([cols, rows + 1], 1)], 1)
    rows, cols = np.nonzero(
        padded[1:, 1:-1] != padded[:-1, 1:-1]
    )  # horizontal edge y=rows, x in [cols, cols+1]
    horizontal = np.stack([np.stack([cols, rows], 1), np.stack([cols + 1, rows], 1)], 1)
    segments = np.concatenate([vertical, horizontal]).astype(np.float64)
    if len(segments) == 0:
        return shapely.Polygon()
    faces = np.asarray(shapely.get_parts(shapely.polygonize(shapely.linestrings(segments))))
    # Every face is wholly inside or outside the mask; an interior point tells which. The pixel
    # holding it (floor) belongs to the face even when the point sits on a grid line.
    inside = shapely.get_coordinates(shapely.point_on_surface(faces))
    keep = mask[np.floor(inside[:, 1]).astype(int), np.floor(inside[:, 0]).astype(int)]
    # Per face: simplifying the whole MultiPolygon with topology checks is quadratic in parts.
    # Tolerance 0 only drops the collinear vertices between unit edges, so no check is needed.
    parts = shapely.simplify(faces[keep], simplify, preserve_topology=simplify > 0)
    # Kept faces touch at most at corners, so together they are a valid MultiPolygon as they are.
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(list(parts))


def as_geometry(polygon: object, where: str) -> BaseGeometry:
    """A shapely geometry from a shapely (Multi)Polygon or an ``(M, 2)`` array of (x, y) vertices."""
    if isinstance(polygon, BaseGeometry):
        return polygon
    try:
        vertices = np.asarray(polygon, dtype=np.float64)
    except (TypeError, ValueError):
        vertices = None
    if vertices is None or vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 3:
        raise InvalidInputError(
            f"{where}: expected a shapely Polygon/MultiPolygon or vertices of shape (M >= 3, 2), "
            f"got {describe(polygon if vertices is None else vertices)}"
        )
    return shapely.make_valid(shapely.Polygon(vertices))


def geometry_to_mask(geometry: BaseGeometry, image_size: tuple[int, int]) -> np.ndarray:
    """Rasterise: bool ``(H, W)``, True where the pixel centre lies in or on the geometry."""
    width, height = image_size
    mask = np.zeros((height, width), dtype=bool)
    if geometry.is_empty:
        return mask
    x0, y0, x1, y1 = geometry.bounds
    # Only pixel centres inside the bounds can be inside; test just those.
    c0, c1 = max(0, math.floor(x0 - 0.5)), min(width, math.ceil(x1 + 0.5))
    r0, r1 = max(0, math.floor(y0 - 0.5)), min(height, math.ceil(y1 + 0.5))
    if c1 <= c0 or r1 <= r0:
        return mask
    xs, ys = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
    shapely.prepare(geometry)
    mask[r0:r1, c0:c1] = shapely.intersects_xy(geometry, xs, ys)
    return mask


# --------------------------------------------------------------------------------------------
# RLE
# --------------------------------------------------------------------------------------------


def encode_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO compressed RLE per mask, ``counts`` as str so it is plain JSON."""
    if len(masks) == 0:
        return []
    # pycocotools wants (H, W, N) uint8 in Fortran order.
    stacked = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
    encoded = coco_mask.encode(stacked)
    return [
        {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}
        for r in encoded
    ]


def decode_rle(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """bool ``(H, W)`` from a COCO segmentation: compressed / uncompressed RLE or polygons."""
    if isinstance(segmentation, list):  # polygons: [[x1, y1, x2, y2, ...], ...]
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)  # uncompressed RLE
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        counts = segmentation["counts"]
        rle = {
            "size": list(segmentation["size"]),
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
        }
    else:
        raise InvalidInputError(
            f"{where}: expected an RLE dict or a polygon list, got {describe(segmentation)}"
        )
    mask = coco_mask.decode(rle).astype(bool)
    if mask.shape != (height, width):
        raise InvalidInputError(
            f"{where}: expected a segmentation of size (height, width) {(height, width)}, got {mask.shape}"
        )
    return mask
