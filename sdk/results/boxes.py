"""Boxes: what the detection decoder returns for ``[DET]`` (and grounding for ``[GRD]``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Self

import numpy as np
from PIL import Image
from pydantic import field_validator, model_validator

from . import _interop as io
from ._base import Array, Instances, as_str_list, as_xyxy


class Boxes(Instances):
    """N axis-aligned boxes on one image.

    Attributes:
        xyxy: float32 ``(N, 4)``: ``(x1, y1, x2, y2)`` pixel corners in the original image,
            with ``x2 >= x1`` and ``y2 >= y1``.
        scores: float32 ``(N,)`` confidences.
        labels: ``N`` class names or referring expressions.
        ids: optional ``N`` instance ids (e.g. tracker ids), as strings.

    Indexing (``boxes[0]``, ``boxes[1:3]``, ``boxes[boxes.scores > 0.5]``, ``boxes[[2, 0]]``)
    returns a ``Boxes``; iterating yields single-box ``Boxes``.
    """

    kind: Literal["boxes"] = "boxes"
    xyxy: Array
    ids: list[str] | None = None

    _item_fields: ClassVar[tuple[str, ...]] = ("xyxy", "scores", "labels", "ids")

    @field_validator("xyxy", mode="before")
    @classmethod
    def _coerce_xyxy(cls, value: object) -> np.ndarray:
        return as_xyxy(value, f"{cls.__name__}.xyxy")

    @field_validator("ids", mode="before")
    @classmethod
    def _coerce_ids(cls, value: object) -> list[str] | None:
        if value is None:
            return None
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, (list, tuple)):
            value = [str(v) for v in value]  # integer tracker ids are fine; we keep them as text
        return as_str_list(value, f"{cls.__name__}.ids")

    @model_validator(mode="after")
    def _check_per_box(self) -> Self:
        self._check_lengths("box", scores=self.scores, labels=self.labels, ids=self.ids)
        return self

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def _empty_fields(cls, image_size: tuple[int, int], **fields: Any) -> dict[str, Any]:
        return {"xyxy": np.zeros((0, 4), np.float32), **super()._empty_fields(image_size, **fields)}

    @property
    def area(self) -> np.ndarray:
        """float32 ``(N,)`` box areas in square pixels."""
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])

    @property
    def xywh(self) -> np.ndarray:
        """float32 ``(N, 4)`` as ``(x, y, width, height)``, the COCO layout."""
        xywh = self.xyxy.copy()
        xywh[:, 2:] -= xywh[:, :2]
        return xywh

    # ---------------------------------------------------------------- supervision

    def to_supervision(self) -> Any:
        """``sv.Detections`` with ``class_id`` = index in the sorted unique labels and
        ``data["class_name"]`` the labels (``data["id"]`` the ids, when present)."""
        sv = io.supervision()
        class_id, _ = self._class_ids(self.labels)
        data: dict[str, Any] = {"class_name": np.array(self.labels, dtype=str)}
        if self.ids is not None:
            data["id"] = np.array(self.ids, dtype=str)
        return sv.Detections(
            xyxy=self.xyxy.copy(), confidence=self.scores.copy(), class_id=class_id, data=data
        )

    @classmethod
    def from_supervision(
        cls, detections: Any, image_size: tuple[int, int], asked: Sequence[str] = (), **provenance: Any
    ) -> Self:
        """From ``sv.Detections``; labels come from ``data["class_name"]`` or else ``class_id``."""
        n = len(detections)
        return cls(
            xyxy=detections.xyxy,
            scores=io.sv_confidence(detections, n),
            labels=io.sv_class_names(detections, n),
            ids=io.sv_ids(detections),
            image_size=image_size,
            asked=list(asked),
            **provenance,
        )

    # ---------------------------------------------------------------- COCO

    def to_coco(
        self, image_id: int = 1, category_ids: Mapping[str, int] | None = None, start_id: int = 1
    ) -> dict[str, Any]:
        """A COCO detection dict: ``images``, ``annotations`` (``bbox`` as xywh, ``score``,
        ``category_id``, ``area``, ``id``, ``iscrowd``), ``categories`` and ``info``.

        ``category_ids`` maps label → id; by default ids are 1.. over ``asked`` then the other
        labels. ``annotations`` alone is what ``COCO.loadRes`` takes as predictions.
        """
        table = io.category_table(self.labels, self.asked, category_ids)
        annotations = []
        for k, (bbox, area) in enumerate(zip(io.xyxy_to_xywh(self.xyxy), self.area.tolist())):
            annotation = {
                "id": start_id + k,
                "image_id": image_id,
                "category_id": table[self.labels[k]],
                "bbox": bbox,
                "area": area,
                "score": float(self.scores[k]),
                "iscrowd": 0,
            }
            if self.ids is not None:
                annotation["instance_id"] = self.ids[k]
            annotations.append(annotation)
        return io.coco_document(self, image_id, table, annotations)

    @classmethod
    def from_coco(
        cls,
        data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        image_id: int | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> Self:
        """From a COCO dict (or a bare annotation list plus ``image_size``). A missing ``score``
        (ground truth) reads as 1.0."""
        meta = data if isinstance(data, Mapping) else {}
        image_id, size = io.coco_image(data, image_id, image_size)
        annotations = io.coco_annotations(data, image_id)
        return cls(
            xyxy=io.xywh_to_xyxy([a["bbox"] for a in annotations]),
            scores=[float(a.get("score", 1.0)) for a in annotations],
            labels=io.coco_labels(meta, annotations),
            ids=io.coco_ids(annotations),
            **io.coco_provenance(meta, size),
        )

    # ---------------------------------------------------------------- drawing

    def annotate(self, image: Image.Image | np.ndarray, labels: bool = True) -> Image.Image:
        """A copy of ``image`` (the original, of size ``image_size``) with boxes and labels drawn."""
        picture = io.scene(image, self.image_size, f"{type(self).__name__}.annotate")
        if len(self) == 0:
            return picture
        detections = self.to_supervision()
        picture = io.box_annotator(self.image_size).annotate(picture, detections)
        if labels:
            texts = io.label_texts(self.labels, self.scores)
            picture = io.label_annotator(self.image_size).annotate(picture, detections, labels=texts)
        return picture
