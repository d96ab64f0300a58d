"""Masks: what the segmentation decoder returns for ``[SEG]`` (instance / referring masks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, Self

import numpy as np
from PIL import Image
from pydantic import ConfigDict, Field, PlainSerializer, field_validator, model_validator
from shapely.geometry.base import BaseGeometry

from visionllm2.model.errors import InvalidInputError, describe

from . import _geometry as geo
from . import _interop as io
from ._base import Array, Instances, as_array, as_xyxy, check_shape

_RLE_KEY = "__rle__"


def _masks_to_json(masks: np.ndarray) -> dict[str, Any]:
    """Masks in JSON as COCO RLE: lossless and far smaller than raw bits for typical masks."""
    return {_RLE_KEY: [r["counts"] for r in geo.encode_rle(masks)], "shape": list(masks.shape)}


def _masks_from_json(data: Mapping[str, Any]) -> np.ndarray:
    n, height, width = data["shape"]
    masks = np.zeros((n, height, width), dtype=bool)
    for k, counts in enumerate(data[_RLE_KEY]):
        masks[k] = geo.decode_rle({"size": [height, width], "counts": counts}, height, width, "Masks.masks")
    return masks


MaskArray = Annotated[np.ndarray, PlainSerializer(_masks_to_json, when_used="json")]


class Masks(Instances):
    """N binary masks on one image, at the original resolution.

    Attributes:
        masks: bool ``(N, H, W)`` where ``(W, H) == image_size``.
        scores: float32 ``(N,)``.
        labels: ``N`` class names or referring expressions.
        boxes: float32 ``(N, 4)`` xyxy pixel corners. Pass ``boxes=`` to keep the decoder's own
            boxes; otherwise the property returns the tight box of each mask (all zeros for an
            empty mask).

    Indexing and filtering work as for :class:`Boxes`.
    """

    # ``boxes`` is both the constructor argument and a property that falls back to tight boxes.
    model_config = ConfigDict(populate_by_name=True)

    kind: Literal["masks"] = "masks"
    masks: MaskArray
    given_boxes: Array | None = Field(default=None, alias="boxes")

    _item_fields: ClassVar[tuple[str, ...]] = ("masks", "scores", "labels", "given_boxes")

    @model_validator(mode="before")
    @classmethod
    def _empty_masks(cls, data: Any) -> Any:
        """``masks=[]`` means no masks; give it the (0, H, W) shape that image_size implies."""
        if isinstance(data, dict) and isinstance(data.get("masks"), (list, tuple)) and not data["masks"]:
            try:
                width, height = (int(v) for v in data["image_size"])
            except (KeyError, TypeError, ValueError):
                return data  # the image_size validator will say what is wrong
            data = {**data, "masks": np.zeros((0, height, width), dtype=bool)}
        return data

    @field_validator("masks", mode="before")
    @classmethod
    def _coerce_masks(cls, value: object) -> np.ndarray:
        where = f"{cls.__name__}.masks"
        if isinstance(value, Mapping) and _RLE_KEY in value:
            return _masks_from_json(value)
        masks = as_array(value, bool, where, "(N, H, W)")
        check_shape(masks, (None, None, None), where, "(N, H, W)")
        return masks

    @field_validator("given_boxes", mode="before")
    @classmethod
    def _coerce_boxes(cls, value: object) -> np.ndarray | None:
        if value is None:
            return None
        return as_xyxy(value, f"{cls.__name__}.boxes")

    @model_validator(mode="after")
    def _check_per_mask(self) -> Self:
        width, height = self.image_size
        if self.masks.shape[1:] != (height, width):
            raise InvalidInputError(
                f"{type(self).__name__}.masks: expected shape (N, {height}, {width}) to match image_size "
                f"(width={width}, height={height}), got {describe(self.masks)}"
            )
        self._check_lengths("mask", scores=self.scores, labels=self.labels, boxes=self.given_boxes)
        return self

    def __len__(self) -> int:
        return len(self.masks)

    @classmethod
    def _empty_fields(cls, image_size: tuple[int, int], **fields: Any) -> dict[str, Any]:
        width, height = image_size
        return {"masks": np.zeros((0, height, width), bool), **super()._empty_fields(image_size, **fields)}

    @property
    def boxes(self) -> np.ndarray:
        """float32 ``(N, 4)`` xyxy: the given boxes, else the tight box of each mask."""
        return self.given_boxes if self.given_boxes is not None else tight_boxes(self.masks)

    @property
    def area(self) -> np.ndarray:
        """int64 ``(N,)`` pixel counts."""
        return self.masks.sum(axis=(1, 2), dtype=np.int64)

    def _without_redundant_boxes(self, boxes: np.ndarray | None) -> np.ndarray | None:
        """Boxes that merely restate the masks are not stored, so round trips compare equal."""
        if boxes is None or np.array_equal(np.asarray(boxes, np.float32), tight_boxes(self.masks)):
            return None
        return boxes

    # ---------------------------------------------------------------- supervision

    def to_supervision(self) -> Any:
        """``sv.Detections`` with ``mask``, ``xyxy`` (= :attr:`boxes`), class ids and names."""
        sv = io.supervision()
        class_id, _ = self._class_ids(self.labels)
        return sv.Detections(
            xyxy=self.boxes.copy(),
            mask=self.masks.copy(),
            confidence=self.scores.copy(),
            class_id=class_id,
            data={"class_name": np.array(self.labels, dtype=str)},
        )

    @classmethod
    def from_supervision(
        cls, detections: Any, image_size: tuple[int, int], asked: Sequence[str] = (), **provenance: Any
    ) -> Self:
        """From ``sv.Detections`` that carry ``mask``."""
        if getattr(detections, "mask", None) is None and len(detections):
            raise InvalidInputError("Masks.from_supervision: expected sv.Detections with mask, got mask=None")
        n = len(detections)
        width, height = image_size
        masks = np.zeros((0, height, width), bool) if n == 0 else np.asarray(detections.mask, dtype=bool)
        result = cls(
            masks=masks,
            scores=io.sv_confidence(detections, n),
            labels=io.sv_class_names(detections, n),
            boxes=detections.xyxy,
            image_size=image_size,
            asked=list(asked),
            **provenance,
        )
        return result.model_copy(update={"given_boxes": result._without_redundant_boxes(result.given_boxes)})

    # ---------------------------------------------------------------- COCO

    def to_coco(
        self, image_id: int = 1, category_ids: Mapping[str, int] | None = None, start_id: int = 1
    ) -> dict[str, Any]:
        """A COCO instance-segmentation dict; ``segmentation`` is compressed RLE (``counts`` str),
        ``area`` the pixel count, ``bbox`` xywh of :attr:`boxes`."""
        table = io.category_table(self.labels, self.asked, category_ids)
        annotations = []
        rles = geo.encode_rle(self.masks)
        bboxes = io.xyxy_to_xywh(self.boxes)
        for k, (rle, area) in enumerate(zip(rles, self.area.tolist())):
            annotations.append(
                {
                    "id": start_id + k,
                    "image_id": image_id,
                    "category_id": table[self.labels[k]],
                    "segmentation": rle,
                    "bbox": bboxes[k],
                    "area": float(area),
                    "score": float(self.scores[k]),
                    "iscrowd": 0,
                }
            )
        return io.coco_document(self, image_id, table, annotations)

    @classmethod
    def from_coco(
        cls,
        data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        image_id: int | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> Self:
        """From a COCO dict (RLE or polygon segmentations). The ``bbox`` values are kept as
        ``boxes`` unless they merely restate the masks' tight boxes."""
        meta = data if isinstance(data, Mapping) else {}
        image_id, size = io.coco_image(data, image_id, image_size)
        annotations = io.coco_annotations(data, image_id)
        width, height = size
        masks = np.zeros((len(annotations), height, width), dtype=bool)
        for k, annotation in enumerate(annotations):
            masks[k] = geo.decode_rle(annotation["segmentation"], height, width, f"from_coco annotation {k}")
        has_boxes = annotations and all("bbox" in a for a in annotations)
        result = cls(
            masks=masks,
            scores=[float(a.get("score", 1.0)) for a in annotations],
            labels=io.coco_labels(meta, annotations),
            boxes=io.xywh_to_xyxy([a["bbox"] for a in annotations]) if has_boxes else None,
            **io.coco_provenance(meta, size),
        )
        return result.model_copy(update={"given_boxes": result._without_redundant_boxes(result.given_boxes)})

    # ---------------------------------------------------------------- polygons

    def to_polygons(self, simplify: float = 0.0) -> list[BaseGeometry]:
        """One shapely ``Polygon`` / ``MultiPolygon`` per mask, in pixel coordinates.

        The outline follows pixel edges exactly (area == pixel count); ``simplify`` > 0 trades
        that for fewer vertices (max deviation in pixels). An empty mask gives an empty Polygon.
        """
        return [geo.mask_to_geometry(mask, simplify) for mask in self.masks]

    @classmethod
    def from_polygons(
        cls,
        polygons: Sequence[BaseGeometry | np.ndarray | Sequence[Sequence[float]]],
        image_size: tuple[int, int],
        labels: Sequence[str],
        scores: Sequence[float] | np.ndarray | None = None,
        **provenance: Any,
    ) -> Self:
        """Rasterise one polygon per mask (shapely geometry or ``(M, 2)`` vertices in pixels): a
        pixel is in the mask when its centre lies in or on the polygon. Scores default to 1."""
        geometries = [
            geo.as_geometry(p, f"{cls.__name__}.from_polygons[{k}]") for k, p in enumerate(polygons)
        ]
        width, height = image_size
        masks = np.zeros((len(geometries), height, width), dtype=bool)
        for k, geometry in enumerate(geometries):
            masks[k] = geo.geometry_to_mask(geometry, (width, height))
        scores = np.ones(len(geometries), np.float32) if scores is None else scores
        return cls(masks=masks, scores=scores, labels=list(labels), image_size=image_size, **provenance)

    # ---------------------------------------------------------------- drawing

    def annotate(
        self, image: Image.Image | np.ndarray, labels: bool = True, opacity: float = 0.5
    ) -> Image.Image:
        """A copy of ``image`` with the masks overlaid (and their labels, at the box corner)."""
        sv = io.supervision()
        picture = io.scene(image, self.image_size, f"{type(self).__name__}.annotate")
        if len(self) == 0:
            return picture
        detections = self.to_supervision()
        picture = sv.MaskAnnotator(opacity=opacity).annotate(picture, detections)
        if labels:
            texts = io.label_texts(self.labels, self.scores)
            picture = io.label_annotator(self.image_size).annotate(picture, detections, labels=texts)
        return picture


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """float32 ``(N, 4)`` xyxy pixel corners of each mask's True pixels; zeros for an empty mask.

    ``sv.mask_to_xyxy`` reports the last covered pixel (inclusive); +1 turns that into the
    pixel corner, so a box's area is the mask's bounding pixel count.
    """
    if len(masks) == 0:
        return np.zeros((0, 4), np.float32)
    boxes = io.supervision().mask_to_xyxy(masks).astype(np.float32)
    filled = masks.any(axis=(1, 2))
    boxes[filled, 2:] += 1
    boxes[~filled] = 0
    return boxes
