"""COCO keypoint evaluation (OKS AP) with pycocotools' ``COCOeval(iouType="keypoints")``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidInputError
from .detection_eval import CocoAccumulator
from .pose_loss import DEFAULT_SIGMA, keypoint_sigmas

_STAT_NAMES = ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR", "AR50", "AR75", "AR_medium", "AR_large")


class PoseEvaluator(CocoAccumulator):
    """Accumulate one keypoint set's predictions and ground truth image by image; score with OKS.

    keypoint_names: the set's J names (their order is the keypoint order); sigmas: OKS sigmas, by
    default COCO's for COCO person keypoints and ``default_sigma`` otherwise. Boxes are xyxy pixels,
    keypoints ``(N, J, 3)``: ground truth x, y, visibility (> 0 labelled); predictions x, y, score.
    A ground-truth instance's area is its box area unless ``gt_areas`` is given.
    """

    def __init__(self, keypoint_names: Sequence[str], sigmas: Sequence[float] | None = None,
                 default_sigma: float = DEFAULT_SIGMA) -> None:
        self.keypoint_names = list(keypoint_names)
        self.sigmas = (np.asarray(sigmas, dtype=np.float64) if sigmas is not None
                       else keypoint_sigmas(self.keypoint_names, default_sigma).astype(np.float64))
        if len(self.sigmas) != len(self.keypoint_names):
            raise InvalidInputError(f"PoseEvaluator: {len(self.sigmas)} sigmas for {len(self.keypoint_names)} keypoints")
        super().__init__()

    def _keypoints(self, keypoints: np.ndarray, count: int, where: str) -> np.ndarray:
        keypoints = np.asarray(keypoints, dtype=np.float64).reshape(count, len(self.keypoint_names) if count == 0 else -1, 3)
        if keypoints.shape[1] != len(self.keypoint_names):
            raise InvalidInputError(f"PoseEvaluator.add: {where} has {keypoints.shape[1]} keypoints, "
                                    f"the set has {len(self.keypoint_names)}")
        return keypoints

    def add(self, image_size: tuple[int, int], gt_boxes: np.ndarray, gt_keypoints: np.ndarray, gt_labels: Sequence[str],
            pred_boxes: np.ndarray, pred_keypoints: np.ndarray, pred_scores: np.ndarray, pred_labels: Sequence[str],
            gt_areas: np.ndarray | None = None) -> int:
        """Add one image; returns its image id."""
        image_id = len(self.images) + 1
        width, height = image_size
        self.images.append({"id": image_id, "width": int(width), "height": int(height)})
        gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        gt_keypoints = self._keypoints(gt_keypoints, len(gt_boxes), "gt_keypoints")
        for index, (box, points, label) in enumerate(zip(gt_boxes, gt_keypoints, gt_labels)):
            x1, y1, x2, y2 = box.tolist()
            visibility = np.where(points[:, 2] > 0, 2.0, 0.0)
            area = float(gt_areas[index]) if gt_areas is not None else (x2 - x1) * (y2 - y1)
            self.ground_truth.append({
                "id": len(self.ground_truth) + 1, "image_id": image_id, "category_id": self._category(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area, "iscrowd": 0,
                "keypoints": np.concatenate([points[:, :2], visibility[:, None]], 1).flatten().tolist(),
                "num_keypoints": int((visibility > 0).sum()),
            })
        pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
        pred_keypoints = self._keypoints(pred_keypoints, len(pred_boxes), "pred_keypoints")
        for box, points, score, label in zip(pred_boxes, pred_keypoints, np.asarray(pred_scores).reshape(-1), pred_labels):
            x1, y1, x2, y2 = box.tolist()
            self.predictions.append({
                "image_id": image_id, "category_id": self._category(label), "score": float(score),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "keypoints": points.flatten().tolist(),
            })
        return image_id

    def compute(self) -> dict[str, float]:
        """``{"keypoints_AP": …, "keypoints_AP50": …, …}``; 0.0 where nothing was predicted."""
        return self._cocoeval("keypoints", _STAT_NAMES, {"keypoints": self.keypoint_names}, self.sigmas)
