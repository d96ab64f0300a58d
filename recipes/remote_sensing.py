"""Remote sensing: map buildings, vehicles, roads and water on images larger than the model reads.

    result = map_objects(session, "city.png", ["building", "vehicle"], tile_size=256, overlap=64)
    result.objects[0].rotated_box          # buildings and vehicles: minimum rotated rectangle
    geojson = result.to_geojson(geotransform=(500000.0, 0.3, 0.0, 4100000.0, 0.0, -0.3))

Sliced inference: the image is cut into overlapping tiles (:func:`~.tiling.tile_grid`); each tile is
one ``segment(classes)`` turn in a fresh conversation (tiles run in batches); the tile's own duplicates
are dropped (supervision's mask NMS) and its masks become polygons shifted back to whole-image pixels;
instances of one object seen by several tiles are merged by a shapely union, and what still overlaps
is merged by intersection over the smaller (see :mod:`.tiling`). Coordinates are whole-image pixels
with ``(0, 0)`` the top-left corner; GeoJSON is in those pixels (y down) or, given a GDAL
geotransform, in map coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BeforeValidator, PlainSerializer
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from visionllm2.model.data.domains import DOMAINS
from visionllm2.model.images import ImageLike
from visionllm2.sdk.results import Boxes, Masks, Turn

from . import tiling
from ._common import RecipeModel, check_fraction, check_names, open_rgb
from ._common import dedupe as dedupe_masks

VOCABULARY: tuple[str, ...] = DOMAINS["remote_sensing"]
ROTATED_CLASSES = ("building", "vehicle")



def _as_geometry(value: object) -> object:
    return shape(value) if isinstance(value, dict) else value  # GeoJSON mapping (read back from JSON)


Geometry = Annotated[BaseGeometry, BeforeValidator(_as_geometry), PlainSerializer(mapping, when_used="json")]


class MapObject(RecipeModel):
    """One object on the whole image.

    Attributes:
        label: its class; score: the best score of the tile instances it merges.
        geometry: shapely Polygon / MultiPolygon in whole-image pixels (pixel-edge outline; its
            area is the pixel count). JSON: a GeoJSON geometry mapping.
        xyxy: its bounding box, pixel corners.
        tiles: indices of the tiles that saw it (more than one: it was merged across a seam).
        rotated_box: for :data:`ROTATED_CLASSES`, the minimum rotated rectangle, else ``None``.
    """

    label: str
    score: float
    geometry: Geometry
    xyxy: tuple[float, float, float, float]
    tiles: list[int]
    rotated_box: tiling.RotatedBox | None = None

    @property
    def area_px(self) -> float:
        return float(self.geometry.area)


class RemoteSensingResult(RecipeModel):
    """What :func:`map_objects` returns.

    Attributes:
        image_size: ``(width, height)`` of the whole image; classes: what was asked.
        tile_size, overlap: the grid's settings (pixels); tiles: the windows, row-major.
        turns: one segmentation :class:`Turn` per tile (its results in tile pixels), in tile order.
        objects: the merged objects, by label then falling score.
    """

    image_size: tuple[int, int]
    classes: list[str]
    tile_size: int
    overlap: int
    tiles: list[tiling.Tile]
    turns: list[Turn]
    objects: list[MapObject]

    def count(self, label: str) -> int:
        return sum(o.label == label for o in self.objects)

    def _merged(self) -> list[tiling.Merged]:
        return [tiling.Merged(o.label, o.score, o.geometry, o.tiles) for o in self.objects]

    def masks(self) -> Masks:
        """The objects as whole-image masks (bool ``(N, H, W)``; memory grows with N × H × W)."""
        return Masks.from_polygons([o.geometry for o in self.objects], self.image_size, [o.label for o in self.objects],
                                   [o.score for o in self.objects], asked=self.classes, route="[SEG]")

    def boxes(self) -> Boxes:
        """The objects' axis-aligned boxes (xyxy pixel corners)."""
        return Boxes(xyxy=np.array([o.xyxy for o in self.objects], np.float32).reshape(-1, 4),
                     scores=[o.score for o in self.objects], labels=[o.label for o in self.objects],
                     image_size=self.image_size, asked=self.classes, route="[SEG]")

    def to_geojson(self, geotransform: Sequence[float] | None = None) -> dict[str, Any]:
        """A GeoJSON FeatureCollection (see :func:`.tiling.to_geojson`)."""
        rotated = {k: o.rotated_box for k, o in enumerate(self.objects) if o.rotated_box is not None}
        return tiling.to_geojson(self._merged(), geotransform, rotated)

    def annotate(self, image: Image.Image, tiles: bool = True) -> Image.Image:
        """``image`` with the objects' masks, their rotated boxes and (``tiles``) the tile grid drawn."""
        picture = self.masks().annotate(image, labels=len(self.objects) <= 60)
        draw = ImageDraw.Draw(picture)
        if tiles:
            for tile in self.tiles:
                draw.rectangle((tile.x0, tile.y0, tile.x1 - 1, tile.y1 - 1), outline=(255, 255, 255))
        for obj in self.objects:
            if obj.rotated_box is not None:
                draw.polygon([tuple(c) for c in obj.rotated_box.corners], outline=(255, 230, 0))
        return picture


def check_inputs(classes: object, tile_size: object, overlap: object, geotransform: object = None,
                 vocabulary: Sequence[str] | None = VOCABULARY, merge_iou: object = 0.5, dedupe: object = 0.5
                 ) -> tuple[list[str], int, int]:
    """Validate before any model work: the classes (non-empty, known to ``vocabulary`` unless it is
    None), the tiling, the IoU thresholds and an optional GDAL geotransform. Returns
    ``(classes, tile_size, overlap)``; raises typed errors with what was expected."""
    names = check_names(classes, "classes", vocabulary)
    tile_size, overlap = tiling.check_tiling(tile_size, overlap)
    check_fraction(merge_iou, "merge_iou")
    check_fraction(dedupe, "dedupe")
    tiling.check_geotransform(geotransform)
    return names, tile_size, overlap


def map_objects(session: Any, image: ImageLike, classes: Sequence[str], *, tile_size: int = 256, overlap: int = 64,
                rotated_classes: Sequence[str] = ROTATED_CLASSES, merge_iou: float = 0.5, dedupe: float = 0.5,
                min_area: float = 4.0, vocabulary: Sequence[str] | None = VOCABULARY,
                batch_size: int = 8) -> RemoteSensingResult:
    """Segment ``classes`` over a large image by overlapping tiles and merge the results.

    Args:
        session: a :class:`~visionllm2.sdk.Session`; its model runs every tile in a fresh
            conversation (the session's own history is not touched).
        image: any image input (path, PIL, array); read as 8-bit RGB.
        classes: what to map, e.g. ``["building", "vehicle"]``.
        tile_size, overlap: the tile side and the least overlap of neighbours, in pixels. The
            overlap should exceed the largest object you expect to be cut, so that some tile sees
            each object whole.
        rotated_classes: classes that get a minimum rotated rectangle.
        merge_iou: agreement inside the shared window that makes two tile instances one object.
        dedupe: two masks of one class that share more than this fraction of the smaller one's
            area are one object seen twice. Within a tile, before merging, the lower-scored is
            dropped (the tile's duplicates would otherwise be unioned into one blob); among the
            merged objects, the two are unioned (a scrap one tile saw of an object another saw
            whole). 1.0 keeps every mask.
        min_area: separate parts of a tile's mask smaller than this many pixels are ignored, and
            masks left empty.
        vocabulary: allowed class names (``None``: any).
        batch_size: tiles segmented together (:class:`~visionllm2.sdk.batch.BatchPredictor`; each
            tile still its own conversation, with the answer it would get alone).
    """
    names, tile_size, overlap = check_inputs(classes, tile_size, overlap, None, vocabulary, merge_iou, dedupe)
    picture = open_rgb(image)
    tiles = tiling.tile_grid(picture.size, tile_size, overlap)
    from visionllm2.sdk.batch import BatchPredictor  # torch: loaded when a map is made, not on import

    predictor = BatchPredictor(session.model, batch_size, session.processor, session.max_new_tokens)
    turns = predictor.segment(names, images=[picture.crop(tile.xyxy) for tile in tiles])
    instances = []
    for tile, turn in zip(tiles, turns):
        if turn.masks is not None:
            instances += tiling.tile_instances(dedupe_masks(turn.masks, dedupe, metric="ios"), tile, min_area)
    merged = tiling.merge_instances(instances, tiles, merge_iou, dedupe)
    objects = [MapObject(label=m.label, score=m.score, geometry=m.geometry, xyxy=m.xyxy, tiles=m.tiles,
                         rotated_box=tiling.rotated_box(m.geometry) if m.label in rotated_classes else None)
               for m in merged]
    return RemoteSensingResult(image_size=picture.size, classes=names, tile_size=tile_size, overlap=overlap,
                               tiles=tiles, turns=turns, objects=objects)
