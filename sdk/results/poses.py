"""Poses: what the keypoint decoder returns for ``[POSE]``."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Self

import numpy as np
from PIL import Image
from pydantic import Field, field_validator, model_validator

from visionllm2.model.errors import InvalidInputError, describe

from . import _interop as io
from ._base import Array, Instances, as_array, as_str_list, as_xyxy, check_finite, check_shape

#: The 17 COCO person keypoints, in COCO order.
COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip

#: COCO person skeleton as 0-based index pairs into COCO_KEYPOINT_NAMES (COCO files use 1-based).
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip


class Poses(Instances):
    """N instances with K keypoints each, on one image.

    Attributes:
        boxes: float32 ``(N, 4)`` xyxy pixel corners of each instance.
        keypoints: float32 ``(N, K, 3)``: ``(x, y, score)`` per keypoint, x/y in pixels of the
            original image, score in [0, 1] (low = not visible / not found).
        keypoint_names: ``K`` names, e.g. :data:`COCO_KEYPOINT_NAMES`.
        skeleton: edges as 0-based ``(i, j)`` keypoint index pairs, for drawing and COCO export.
        scores: float32 ``(N,)`` instance confidences. labels: ``N`` class names.
    """

    kind: Literal["poses"] = "poses"
    boxes: Array
    keypoints: Array
    keypoint_names: list[str]
    skeleton: list[tuple[int, int]] = Field(default_factory=list)

    _item_fields: ClassVar[tuple[str, ...]] = ("boxes", "keypoints", "scores", "labels")

    @model_validator(mode="before")
    @classmethod
    def _empty_keypoints(cls, data: Any) -> Any:
        """``keypoints=[]`` means no instances; give it the (0, K, 3) shape the names imply."""
        if (
            isinstance(data, dict)
            and isinstance(data.get("keypoints"), (list, tuple))
            and not data["keypoints"]
        ):
            names = data.get("keypoint_names")
            if isinstance(names, (list, tuple)):
                data = {**data, "keypoints": np.zeros((0, len(names), 3), np.float32)}
        return data

    @field_validator("boxes", mode="before")
    @classmethod
    def _coerce_boxes(cls, value: object) -> np.ndarray:
        return as_xyxy(value, f"{cls.__name__}.boxes")

    @field_validator("keypoints", mode="before")
    @classmethod
    def _coerce_keypoints(cls, value: object) -> np.ndarray:
        where = f"{cls.__name__}.keypoints"
        keypoints = as_array(value, np.float32, where, "(N, K, 3)")
        check_shape(keypoints, (None, None, 3), where, "(N, K, 3) as (x, y, score)")
        check_finite(keypoints, where)
        return keypoints

    @field_validator("keypoint_names", mode="before")
    @classmethod
    def _coerce_names(cls, value: object) -> list[str]:
        return as_str_list(value, f"{cls.__name__}.keypoint_names")

    @field_validator("skeleton", mode="before")
    @classmethod
    def _coerce_skeleton(cls, value: object) -> list[tuple[int, int]]:
        edges = as_array(value, np.int64, f"{cls.__name__}.skeleton", "(E, 2)")
        if edges.size == 0:
            edges = edges.reshape(0, 2)
        check_shape(edges, (None, 2), f"{cls.__name__}.skeleton", "(E, 2) of 0-based keypoint indices")
        return [(int(a), int(b)) for a, b in edges]

    @model_validator(mode="after")
    def _check_per_pose(self) -> Self:
        k = len(self.keypoint_names)
        if self.keypoints.shape[1] != k:
            raise InvalidInputError(
                f"{type(self).__name__}.keypoints: expected shape (N, {k}, 3) to match {k} keypoint_names, "
                f"got {describe(self.keypoints)}"
            )
        bad = [edge for edge in self.skeleton if not (0 <= edge[0] < k and 0 <= edge[1] < k)]
        if bad:
            raise InvalidInputError(
                f"{type(self).__name__}.skeleton: expected 0-based indices in [0, {k}), got {bad[:3]}"
                + (
                    " (COCO files are 1-based; subtract 1)"
                    if all(0 < a <= k and 0 < b <= k for a, b in bad)
                    else ""
                )
            )
        self._check_lengths("pose", boxes=self.boxes, scores=self.scores, labels=self.labels)
        return self

    def __len__(self) -> int:
        return len(self.keypoints)

    @classmethod
    def _empty_fields(cls, image_size: tuple[int, int], **fields: Any) -> dict[str, Any]:
        fields.setdefault("keypoint_names", list(COCO_KEYPOINT_NAMES))
        if fields["keypoint_names"] == list(COCO_KEYPOINT_NAMES):
            fields.setdefault("skeleton", list(COCO_SKELETON))
        k = len(fields["keypoint_names"])
        return {
            "boxes": np.zeros((0, 4), np.float32),
            "keypoints": np.zeros((0, k, 3), np.float32),
            **super()._empty_fields(image_size, **fields),
        }

    def visible(self, threshold: float = 0.5) -> np.ndarray:
        """bool ``(N, K)``: keypoint score >= ``threshold``."""
        return self.keypoints[..., 2] >= np.float32(threshold)

    @property
    def xy(self) -> np.ndarray:
        """float32 ``(N, K, 2)`` keypoint coordinates in pixels."""
        return self.keypoints[..., :2]

    # ---------------------------------------------------------------- supervision

    def to_supervision(self) -> Any:
        """``sv.KeyPoints`` with ``xy``, per-keypoint confidence, ``class_id``,
        ``data["class_name"]`` and ``data["xyxy"]`` (the boxes, which KeyPoints has no field for)."""
        sv = io.supervision()
        class_id, _ = self._class_ids(self.labels)
        data = {"class_name": np.array(self.labels, dtype=str), "xyxy": self.boxes.copy()}
        kwargs: dict[str, Any] = {"xy": self.xy.copy(), "class_id": class_id, "data": data}
        # supervision 0.29 renamed ``confidence`` and added a per-instance confidence.
        parameters = inspect.signature(sv.KeyPoints.__init__).parameters
        if "keypoint_confidence" in parameters:
            kwargs.update(
                keypoint_confidence=self.keypoints[..., 2].copy(), detection_confidence=self.scores.copy()
            )
        else:
            kwargs.update(confidence=self.keypoints[..., 2].copy())
            data["score"] = self.scores.copy()
        return sv.KeyPoints(**kwargs)

    @classmethod
    def from_supervision(
        cls,
        key_points: Any,
        image_size: tuple[int, int],
        keypoint_names: Sequence[str] | None = None,
        skeleton: Sequence[tuple[int, int]] | None = None,
        asked: Sequence[str] = (),
        **provenance: Any,
    ) -> Self:
        """From ``sv.KeyPoints``. Boxes come from ``data["xyxy"]`` or else enclose the keypoints
        with positive confidence; names default to COCO's when K == 17, else ``kp0``, ``kp1``..."""
        n, k = key_points.xy.shape[:2] if len(key_points) else (0, len(keypoint_names or COCO_KEYPOINT_NAMES))
        data = getattr(key_points, "data", None) or {}
        confidence = getattr(key_points, "keypoint_confidence", None)
        if confidence is None and "keypoint_confidence" not in vars(key_points):
            confidence = key_points.confidence  # supervision < 0.29
        confidence = np.ones((n, k), np.float32) if confidence is None else np.asarray(confidence, np.float32)
        keypoints = np.concatenate(
            [np.asarray(key_points.xy, np.float32).reshape(n, k, 2), confidence[..., None]], -1
        )
        scores = getattr(key_points, "detection_confidence", None)
        scores = data.get("score") if scores is None else scores
        names = list(keypoint_names) if keypoint_names is not None else _default_names(k)
        if skeleton is None:
            skeleton = COCO_SKELETON if names == list(COCO_KEYPOINT_NAMES) else []
        return cls(
            boxes=data["xyxy"] if "xyxy" in data else enclosing_boxes(keypoints),
            keypoints=keypoints,
            keypoint_names=names,
            skeleton=list(skeleton),
            scores=np.ones(n, np.float32) if scores is None else scores,
            labels=io.sv_class_names(key_points, n),
            image_size=image_size,
            asked=list(asked),
            **provenance,
        )

    # ---------------------------------------------------------------- COCO

    def to_coco(
        self,
        image_id: int = 1,
        category_ids: Mapping[str, int] | None = None,
        start_id: int = 1,
        visibility_threshold: float = 0.5,
    ) -> dict[str, Any]:
        """A COCO person-keypoints dict.

        ``keypoints`` is the flat ``[x, y, v] * K`` with ``v = 2`` where the keypoint score is
        >= ``visibility_threshold`` and 0 otherwise; the raw scores are kept in
        ``keypoint_scores`` so the export is lossless. Categories carry ``keypoints`` (names)
        and a 1-based ``skeleton`` as COCO files do.
        """
        table = io.category_table(self.labels, self.asked, category_ids)
        visible = self.visible(visibility_threshold)
        bboxes = io.xyxy_to_xywh(self.boxes)
        annotations = []
        for k in range(len(self)):
            flat = np.concatenate([self.xy[k].astype(np.float64), 2.0 * visible[k][:, None]], -1)
            annotations.append(
                {
                    "id": start_id + k,
                    "image_id": image_id,
                    "category_id": table[self.labels[k]],
                    "keypoints": flat.reshape(-1).tolist(),
                    "keypoint_scores": self.keypoints[k, :, 2].tolist(),
                    "num_keypoints": int(visible[k].sum()),
                    "bbox": bboxes[k],
                    "area": float(self.boxes[k, 2] - self.boxes[k, 0])
                    * float(self.boxes[k, 3] - self.boxes[k, 1]),
                    "score": float(self.scores[k]),
                    "iscrowd": 0,
                }
            )
        extra = {
            "keypoints": list(self.keypoint_names),
            "skeleton": [[a + 1, b + 1] for a, b in self.skeleton],
        }
        return io.coco_document(self, image_id, table, annotations, category_extra=extra)

    @classmethod
    def from_coco(
        cls,
        data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        image_id: int | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> Self:
        """From a COCO keypoints dict; without ``keypoint_scores`` a keypoint scores 1 where
        ``v > 0`` and 0 elsewhere. Names and skeleton come from the first category."""
        meta = data if isinstance(data, Mapping) else {}
        image_id, size = io.coco_image(data, image_id, image_size)
        annotations = io.coco_annotations(data, image_id)
        # Names and skeleton live in the categories; ``info`` has them when there are none.
        category = next(iter(meta.get("categories") or []), None) or meta.get("info") or {}
        if "keypoints" in category:
            names = [str(name) for name in category["keypoints"]]
        else:
            names = _default_names(len(annotations[0]["keypoints"]) // 3 if annotations else 17)
        k = len(names)
        keypoints = np.zeros((len(annotations), k, 3), np.float32)
        for i, annotation in enumerate(annotations):
            flat = np.asarray(annotation["keypoints"], np.float64).reshape(k, 3)
            scores = annotation.get("keypoint_scores")
            keypoints[i, :, :2] = flat[:, :2]
            keypoints[i, :, 2] = scores if scores is not None else (flat[:, 2] > 0)
        has_boxes = all("bbox" in a for a in annotations)
        return cls(
            boxes=io.xywh_to_xyxy([a["bbox"] for a in annotations])
            if has_boxes
            else enclosing_boxes(keypoints),
            keypoints=keypoints,
            keypoint_names=names,
            skeleton=[(a - 1, b - 1) for a, b in category.get("skeleton", [])],
            scores=[float(a.get("score", 1.0)) for a in annotations],
            labels=io.coco_labels(meta, annotations),
            **io.coco_provenance(meta, size),
        )

    # ---------------------------------------------------------------- drawing

    def annotate(
        self, image: Image.Image | np.ndarray, threshold: float = 0.5, boxes: bool = False
    ) -> Image.Image:
        """A copy of ``image`` with skeleton edges and keypoints with score >= ``threshold``."""
        sv = io.supervision()
        picture = io.scene(image, self.image_size, f"{type(self).__name__}.annotate")
        if len(self) == 0:
            return picture
        # supervision skips keypoints at (0, 0); that is how hidden ones are left out on every version.
        xy = np.where(self.visible(threshold)[..., None], self.xy, 0).astype(np.float32)
        class_id, _ = self._class_ids(self.labels)
        key_points = sv.KeyPoints(xy=xy, class_id=class_id)
        if self.skeleton:  # supervision's edges are 1-based
            edges = [(a + 1, b + 1) for a, b in self.skeleton]
            picture = sv.EdgeAnnotator(edges=edges, thickness=2).annotate(picture, key_points)
        picture = sv.VertexAnnotator(radius=3).annotate(picture, key_points)
        if boxes:
            detections = sv.Detections(xyxy=self.boxes.copy(), class_id=class_id)
            picture = io.box_annotator(self.image_size).annotate(picture, detections)
        return picture


def _default_names(k: int) -> list[str]:
    return list(COCO_KEYPOINT_NAMES) if k == len(COCO_KEYPOINT_NAMES) else [f"kp{i}" for i in range(k)]


def enclosing_boxes(keypoints: np.ndarray) -> np.ndarray:
    """float32 ``(N, 4)`` xyxy around the keypoints with positive score (all, if none has)."""
    boxes = np.zeros((len(keypoints), 4), np.float32)
    for i, points in enumerate(keypoints):
        found = points[points[:, 2] > 0] if (points[:, 2] > 0).any() else points
        if len(found):
            boxes[i] = [*found[:, :2].min(0), *found[:, :2].max(0)]
    return boxes
