"""COCO-style evaluation of detections and instance masks with pycocotools' ``COCOeval``."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..errors import InvalidInputError

_STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


class CocoAccumulator:
    """Images, ground truth and predictions in COCO form, scored by ``COCOeval`` (shared by the
    detection and pose evaluators)."""

    def __init__(self) -> None:
        self.images: list[dict] = []
        self.ground_truth: list[dict] = []
        self.predictions: list[dict] = []
        self.categories: dict[str, int] = {}

    def _category(self, name: str) -> int:
        return self.categories.setdefault(name, len(self.categories) + 1)

    def _cocoeval(self, iou_type: str, stat_names: Sequence[str], category_extra: dict | None = None,
                  sigmas: np.ndarray | None = None) -> dict[str, float]:
        """``{f"{iou_type}_{name}": value}``; 0.0 where nothing was predicted or no ground truth."""
        if not self.predictions or not self.ground_truth:
            return {f"{iou_type}_{name}": 0.0 for name in stat_names}
        gt = COCO()
        gt.dataset = {"images": self.images, "annotations": self.ground_truth,
                      "categories": [{"id": i, "name": n, **(category_extra or {})} for n, i in self.categories.items()]}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            gt.createIndex()
            dt = gt.loadRes([dict(p) for p in self.predictions])
            evaluator = COCOeval(gt, dt, iouType=iou_type)
            if sigmas is not None:
                evaluator.params.kpt_oks_sigmas = sigmas
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = [max(float(s), 0.0) for s in evaluator.stats[: len(stat_names)]]  # -1 means "no such objects"
        return {f"{iou_type}_{name}": value for name, value in zip(stat_names, stats)}


class CocoEvaluator(CocoAccumulator):
    """Accumulate predictions and ground truth image by image, then score with ``COCOeval``.

    Boxes are xyxy pixels of the original image; labels are class names (categories are made from
    the names seen); masks are bool ``(N, H, W)`` at the original size. ``iou_types`` picks
    ``"bbox"`` and/or ``"segm"``.
    """

    def __init__(self, iou_types: Sequence[str] = ("bbox",)) -> None:
        unknown = set(iou_types) - {"bbox", "segm"}
        if unknown:
            raise InvalidInputError(f"iou_types: expected 'bbox' and/or 'segm', got {sorted(unknown)}")
        super().__init__()
        self.iou_types = tuple(iou_types)

    def add(self, image_size: tuple[int, int], gt_boxes: np.ndarray, gt_labels: Sequence[str],
            pred_boxes: np.ndarray, pred_scores: np.ndarray, pred_labels: Sequence[str],
            gt_masks: np.ndarray | None = None, pred_masks: np.ndarray | None = None) -> int:
        """Add one image; returns its image id."""
        if "segm" in self.iou_types and (gt_masks is None or pred_masks is None):
            raise InvalidInputError("segm evaluation needs gt_masks and pred_masks for every image")
        image_id = len(self.images) + 1
        width, height = image_size
        self.images.append({"id": image_id, "width": int(width), "height": int(height)})
        gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        for index, (box, label) in enumerate(zip(gt_boxes, gt_labels)):
            x1, y1, x2, y2 = box.tolist()
            entry = {"id": len(self.ground_truth) + 1, "image_id": image_id, "category_id": self._category(label),
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            if gt_masks is not None:
                entry["segmentation"] = _rle(gt_masks[index])
                entry["area"] = float(gt_masks[index].sum())
            self.ground_truth.append(entry)
        pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
        for index, (box, score, label) in enumerate(zip(pred_boxes, np.asarray(pred_scores).reshape(-1), pred_labels)):
            x1, y1, x2, y2 = box.tolist()
            entry = {"image_id": image_id, "category_id": self._category(label), "score": float(score),
                     "bbox": [x1, y1, x2 - x1, y2 - y1]}
            if pred_masks is not None:
                entry["segmentation"] = _rle(pred_masks[index])
            self.predictions.append(entry)
        return image_id

    def compute(self) -> dict[str, float]:
        """``{"bbox_AP": …, "bbox_AP50": …, "segm_AP": …}``; 0.0 where nothing was predicted."""
        results: dict[str, float] = {}
        for iou_type in self.iou_types:
            results.update(self._cocoeval(iou_type, _STAT_NAMES))
        return results
