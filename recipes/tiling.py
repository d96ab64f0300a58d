"""Sliced inference geometry: tile grids, shifting tile results back, merging across seams, rotated
boxes and GeoJSON.

Coordinates are pixels of the whole image with ``(0, 0)`` its top-left *corner*: pixel ``(row i,
column j)`` is the square ``[j, j+1) × [i, i+1)``, as the SDK's polygons trace it (a polygon's area
equals its mask's pixel count). A GDAL geotransform ``(x0, dx, rx, y0, ry, dy)`` maps such a pixel
corner ``(x, y)`` to map coordinates ``(x0 + x·dx + y·rx, y0 + x·ry + y·dy)``.

Merging: an object cut by a tile's edge is seen in part by that tile and (with overlap) in full or
in part by its neighbour. Two instances of the same class from different tiles are one object when,
inside the window both tiles saw, their shapes agree (IoU ≥ ``merge_iou``), or — for tiles that
only touch — when they share a stretch of the seam. Linked instances are unioned into one shapely
geometry; a final non-maximum merging on the shapes (intersection over the smaller) joins what
still overlaps, such as a scrap one tile saw of an object another saw whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import box as shapely_box
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from visionllm2.model.errors import describe
from visionllm2.sdk.errors import InvalidInputError
from visionllm2.sdk.results import Masks

Geotransform = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class Tile:
    """One window of the grid: ``(x0, y0, x1, y1)`` pixel corners of the whole image (``x1``, ``y1``
    exclusive), ``index`` its row-major position."""

    index: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x1, self.y1

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return self.x1 - self.x0, self.y1 - self.y0

    def window(self) -> BaseGeometry:
        return shapely_box(self.x0, self.y0, self.x1, self.y1)


def check_tiling(tile_size: object, overlap: object) -> tuple[int, int]:
    """``(tile_size, overlap)`` as ints with ``tile_size >= 16`` and ``0 <= overlap < tile_size``."""
    if not isinstance(tile_size, int) or isinstance(tile_size, bool) or tile_size < 16:
        raise InvalidInputError(f"tile_size: expected an int of at least 16 pixels, got {describe(tile_size)}")
    if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap < tile_size:
        raise InvalidInputError(f"overlap: expected an int of pixels with 0 <= overlap < tile_size ({tile_size}), "
                                f"got {describe(overlap)}; a quarter of the tile (e.g. {tile_size // 4}) is typical")
    return tile_size, overlap


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]  # the last tile ends at the edge; it overlaps its neighbour more


def tile_grid(image_size: tuple[int, int], tile_size: int, overlap: int) -> list[Tile]:
    """Row-major tiles of ``tile_size``² covering an image of ``(width, height)``, neighbours sharing
    at least ``overlap`` pixels. Tiles never leave the image: the last one in a row or column is
    moved back to end at the edge, and an image smaller than a tile is one (smaller) tile."""
    tile_size, overlap = check_tiling(tile_size, overlap)
    width, height = image_size
    stride = tile_size - overlap
    tiles = []
    for y0 in _starts(height, tile_size, stride):
        for x0 in _starts(width, tile_size, stride):
            tiles.append(Tile(len(tiles), x0, y0, min(width, x0 + tile_size), min(height, y0 + tile_size)))
    return tiles


@dataclass
class Instance:
    """One object found in one tile, shifted to whole-image pixels."""

    label: str
    score: float
    geometry: BaseGeometry
    tile: int


def drop_specks(geometry: BaseGeometry, min_area: float) -> BaseGeometry:
    """``geometry`` without its separate parts smaller than ``min_area`` pixels (stray specks a
    mask head leaves round an object; they would stretch its box and its rotated box)."""
    parts = [p for p in getattr(geometry, "geoms", [geometry]) if p.area >= min_area]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def tile_instances(masks: Masks, tile: Tile, min_area: float = 1.0) -> list[Instance]:
    """A tile's masks (``image_size`` = the tile's size) → polygons in whole-image pixels; separate
    parts of a mask smaller than ``min_area`` pixels are dropped, and so are masks left empty."""
    if masks.image_size != tile.size:
        raise InvalidInputError(f"tile_instances: expected masks of the tile's size {tile.size}, got {masks.image_size}")
    found = []
    for polygon, label, score in zip(masks.to_polygons(), masks.labels, masks.scores.tolist()):
        polygon = drop_specks(polygon, min_area)
        if polygon.is_empty:
            continue
        found.append(Instance(label, float(score), affinity.translate(polygon, tile.x0, tile.y0), tile.index))
    return found


@dataclass
class Merged:
    """One object after merging: the union of its instances' shapes and the best score."""

    label: str
    score: float
    geometry: BaseGeometry
    tiles: list[int] = field(default_factory=list)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = self.geometry.bounds
        return float(x0), float(y0), float(x1), float(y1)


def _same_object(a: Instance, b: Instance, tiles: Sequence[Tile], merge_iou: float) -> bool:
    shared = tiles[a.tile].window().intersection(tiles[b.tile].window())
    if shared.is_empty:
        return False
    if shared.area == 0:  # tiles that only touch: one object if the shapes meet along the seam
        return a.geometry.intersection(b.geometry).intersection(shared).length >= 1.0
    part_a, part_b = a.geometry.intersection(shared), b.geometry.intersection(shared)
    if part_a.area == 0 or part_b.area == 0:
        return False
    return part_a.intersection(part_b).area / part_a.union(part_b).area >= merge_iou


def merge_instances(instances: Sequence[Instance], tiles: Sequence[Tile], merge_iou: float = 0.5,
                    dedupe: float = 0.5) -> list[Merged]:
    """Instances from overlapping tiles → one :class:`Merged` per object (see the module docstring);
    ``dedupe`` is :func:`merge_duplicates`' threshold.

    Returns objects sorted by label then falling score.
    """
    parent = list(range(len(instances)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    if instances:
        tree = shapely.STRtree([i.geometry for i in instances])
        left, right = tree.query([i.geometry for i in instances], predicate="intersects")
        for i, j in zip(left.tolist(), right.tolist()):
            a, b = instances[i], instances[j]
            if i < j and a.label == b.label and a.tile != b.tile and _same_object(a, b, tiles, merge_iou):
                parent[root(i)] = root(j)
    groups: dict[int, list[Instance]] = {}
    for k, instance in enumerate(instances):
        groups.setdefault(root(k), []).append(instance)
    merged = []
    for members in groups.values():
        merged.append(Merged(members[0].label, max(m.score for m in members), _joined([m.geometry for m in members]),
                             sorted({m.tile for m in members})))
    return merge_duplicates(merged, dedupe)


def merge_duplicates(objects: Sequence[Merged], ios: float) -> list[Merged]:
    """Greedy non-maximum merging on the shapes themselves, per class: visiting objects by falling
    score, one that shares more than ``ios`` of the smaller one's area with an object already kept
    is unioned into it (its tiles too) instead of standing alone. Intersection over the smaller is
    how sliced-inference tools match tile results: a scrap one tile saw of an object its neighbour
    saw whole has IoU near 0 but IoS 1, and the union keeps the whole even when the scrap scored
    higher. Exact polygon areas: no raster of a large image. Returns objects by label then falling
    score."""
    order = sorted(range(len(objects)), key=lambda k: -objects[k].score)
    tree = shapely.STRtree([o.geometry for o in objects])
    kept: dict[int, Merged] = {}
    for k in order:
        shape, label = objects[k].geometry, objects[k].label
        near = [j for j in tree.query(shape, predicate="intersects").tolist() if j in kept and objects[j].label == label]
        host = next((j for j in near if _ios(shape, kept[j].geometry) > ios), None)
        if host is None:
            kept[k] = Merged(label, objects[k].score, shape, list(objects[k].tiles))
            continue
        ours = kept[host]
        ours.geometry = _joined([ours.geometry, shape])
        ours.tiles = sorted({*ours.tiles, *objects[k].tiles})
    return sorted(kept.values(), key=lambda o: (o.label, -o.score))


def _joined(geometries: Sequence[BaseGeometry]) -> BaseGeometry:
    """The union, without the vertices left along seams, made valid."""
    return shapely.make_valid(shapely.simplify(shapely.union_all(geometries), 0))


def _ios(a: BaseGeometry, b: BaseGeometry) -> float:
    smaller = min(a.area, b.area)
    return a.intersection(b).area / smaller if smaller > 0 else 0.0


# ------------------------------------------------------------------------------- rotated boxes
@dataclass(frozen=True)
class RotatedBox:
    """The minimum-area rectangle round a shape: ``corners`` 4 × (x, y) pixels in order round the
    rectangle, ``length`` ≥ ``width`` its sides in pixels, ``angle`` of the long side in degrees in
    [0, 180), measured from the +x axis towards +y (clockwise on screen)."""

    corners: tuple[tuple[float, float], ...]
    length: float
    width: float
    angle: float


def rotated_box(geometry: BaseGeometry) -> RotatedBox:
    """The minimum rotated rectangle (shapely's) of a geometry with an area."""
    if geometry.is_empty or geometry.area == 0:
        raise InvalidInputError(f"rotated_box: expected a geometry with an area, got {geometry.geom_type} "
                                f"of area {geometry.area}")
    corners = np.asarray(shapely.minimum_rotated_rectangle(geometry).exterior.coords)[:4]  # (4, 2), ring unclosed
    first, second = corners[1] - corners[0], corners[2] - corners[1]
    lengths = float(np.hypot(*first)), float(np.hypot(*second))
    long_side = first if lengths[0] >= lengths[1] else second
    angle = math.degrees(math.atan2(long_side[1], long_side[0])) % 180.0
    return RotatedBox(tuple((float(x), float(y)) for x, y in corners), max(lengths), min(lengths),
                      0.0 if math.isclose(angle, 180.0) else angle)


# ------------------------------------------------------------------------------- GeoJSON
def check_geotransform(geotransform: object) -> Geotransform | None:
    """``None`` or 6 finite numbers ``(x0, dx, rx, y0, ry, dy)`` (GDAL's order) that map pixels to a
    plane without collapsing it (``dx·dy − rx·ry ≠ 0``)."""
    if geotransform is None:
        return None
    try:
        values = tuple(float(v) for v in geotransform)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = ()
    if len(values) != 6 or not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"geotransform: expected 6 finite numbers (x0, dx, rx, y0, ry, dy) as GDAL's "
                                f"GetGeoTransform() gives, got {geotransform!r}")
    if values[1] * values[5] - values[2] * values[4] == 0:
        raise InvalidInputError(f"geotransform: expected dx·dy − rx·ry ≠ 0 (a pixel with an area on the map), "
                                f"got {values}")
    return values  # type: ignore[return-value]


def pixel_to_map(geotransform: Geotransform) -> Callable[[np.ndarray], np.ndarray]:
    """``(N, 2)`` pixel corners → ``(N, 2)`` map coordinates."""
    x0, dx, rx, y0, ry, dy = geotransform
    matrix = np.array([[dx, ry], [rx, dy]], np.float64)
    return lambda xy: xy @ matrix + np.array([x0, y0])


def to_geojson(objects: Sequence[Merged], geotransform: object = None,
               rotated: dict[int, RotatedBox] | None = None) -> dict:
    """A GeoJSON ``FeatureCollection``: one Feature per object, its (Multi)Polygon in pixel
    coordinates (y down), or in map coordinates through a GDAL ``geotransform``.

    Properties: ``label``, ``score``, ``area_px``, ``bbox_px`` (xyxy), ``tiles`` and, for objects
    with an entry in ``rotated`` (object index → box), ``rotated_box`` as a closed ring in the
    output's coordinates, ``length_px``, ``width_px``, ``angle_deg``. The collection's foreign member
    ``"coordinates"`` says ``"pixel"`` or ``"map"``.
    """
    transform = check_geotransform(geotransform)
    move = pixel_to_map(transform) if transform is not None else None
    features = []
    for k, obj in enumerate(objects):
        geometry = shapely.transform(obj.geometry, move) if move is not None else obj.geometry
        properties = {"label": obj.label, "score": obj.score, "area_px": float(obj.geometry.area),
                      "bbox_px": list(obj.xyxy), "tiles": list(obj.tiles)}
        box = (rotated or {}).get(k)
        if box is not None:
            ring = np.asarray([*box.corners, box.corners[0]], np.float64)
            ring = move(ring) if move is not None else ring
            properties |= {"rotated_box": ring.tolist(), "length_px": box.length, "width_px": box.width,
                           "angle_deg": box.angle}
        features.append({"type": "Feature", "id": k, "geometry": mapping(geometry), "properties": properties})
    return {"type": "FeatureCollection", "coordinates": "map" if move is not None else "pixel",
            **({"geotransform": list(transform)} if transform is not None else {}), "features": features}
