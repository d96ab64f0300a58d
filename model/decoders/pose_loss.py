"""Set losses for the pose decoder.

Box stage layers and the two-stage proposals: Hungarian matching (transformers'
``DeformableDetrHungarianMatcher``), focal classification, L1 + GIoU boxes. Keypoint stage layers:
a matcher that adds keypoint L1 and OKS costs, then the same box losses plus keypoint L1 (visible
keypoints), an OKS loss ``1 − OKS`` and a visibility BCE on the keypoint logits. UniPose's weights
(class 2, L1 5, GIoU 2, keypoints 10, OKS 4). Denoising queries are not used (as in the detector).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from transformers.image_transforms import center_to_corners_format
from transformers.loss.loss_deformable_detr import DeformableDetrHungarianMatcher
from transformers.loss.loss_for_object_detection import generalized_box_iou

from ..config import PoseConfig
from ..errors import InvalidInputError
from .detection import DetectorInputs
from .detection_loss import box_set_losses, target_tensor

#: COCO's per-keypoint OKS sigmas, by COCO person keypoint name.
COCO_SIGMAS: dict[str, float] = dict(zip(
    ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
     "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
     "right_ankle"),
    (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087,
     0.089, 0.089),
))
DEFAULT_SIGMA = 0.05


def keypoint_sigmas(names: list[str], default: float = DEFAULT_SIGMA) -> np.ndarray:
    """OKS sigmas of a keypoint set: COCO's when every name is a COCO person keypoint (spaces or
    underscores), else ``default`` for all."""
    keys = [n.strip().lower().replace(" ", "_") for n in names]
    if keys and all(k in COCO_SIGMAS for k in keys):
        return np.array([COCO_SIGMAS[k] for k in keys], dtype=np.float32)
    return np.full(len(names), default, dtype=np.float32)


@dataclass
class PoseTarget:
    """One sample's pose request / ground truth.

    num_objects: how many of the sample's ``[POSE]`` groups are object classes (the rest are keypoint
    names). boxes ``(N, 4)`` xyxy original pixels; labels ``(N,)`` object-class index; keypoints
    ``(N, J, 3)`` x, y in original pixels and visibility (> 0: labelled), J = the number of keypoint
    groups. Without boxes/labels/keypoints the target only carries ``num_objects`` (inference).
    """

    num_objects: int = 1
    boxes: torch.Tensor | np.ndarray | None = None
    labels: torch.Tensor | np.ndarray | None = None
    keypoints: torch.Tensor | np.ndarray | None = None

    @property
    def annotated(self) -> bool:
        return self.boxes is not None and self.labels is not None and self.keypoints is not None


def _normalised(target: PoseTarget, original: tuple[int, int], joints: int, device: torch.device) -> dict[str, torch.Tensor]:
    boxes = target_tensor(target.boxes, torch.float32, device).reshape(-1, 4)
    labels = target_tensor(target.labels, torch.long, device).reshape(-1)
    keypoints = target_tensor(target.keypoints, torch.float32, device).reshape(len(boxes), -1, 3)
    if len(labels) != len(boxes) or keypoints.shape[1] != joints:
        raise InvalidInputError(
            f"pose target: {len(boxes)} boxes, {len(labels)} labels, keypoints {tuple(keypoints.shape)}; "
            f"expected (N, {joints}, 3) for the sample's {joints} keypoint names"
        )
    w, h = original
    xyxy = boxes / boxes.new_tensor([w, h, w, h])
    cxcywh = torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                          xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], -1)
    return {"class_labels": labels, "boxes": cxcywh, "keypoints": keypoints[..., :2] / keypoints.new_tensor([w, h]),
            "visible": keypoints[..., 2] > 0}


def oks(pred: torch.Tensor, truth: torch.Tensor, visible: torch.Tensor, area: torch.Tensor, sigmas: torch.Tensor,
        size: tuple[int, int]) -> torch.Tensor:
    """COCO object keypoint similarity, pairwise: pred ``(P, J, 2)``, truth ``(T, J, 2)`` in [0, 1] of an
    image of ``size`` (w, h); visible ``(T, J)``; area ``(T,)`` normalised; → ``(P, T)``."""
    scale = pred.new_tensor(size)
    d2 = (((pred[:, None] - truth[None]) * scale) ** 2).sum(-1)                     # (P, T, J) pixels²
    area_px = area * size[0] * size[1]
    e = d2 / ((2 * sigmas) ** 2 * 2 * (area_px[None, :, None] + 1e-6))
    similarity = (torch.exp(-e) * visible[None]).sum(-1)
    return similarity / visible.sum(-1).clamp(min=1)[None]


def keypoint_l1(pred: torch.Tensor, truth: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Pairwise L1 over visible keypoints: pred ``(P, J, 2)``, truth ``(T, J, 2)`` → ``(P, T)``."""
    return ((pred[:, None] - truth[None]).abs().sum(-1) * visible[None]).sum(-1)


@torch.no_grad()
def match_instances(logits: torch.Tensor, boxes: torch.Tensor, keypoints: torch.Tensor, target: dict[str, torch.Tensor],
                    sigmas: torch.Tensor, size: tuple[int, int], config: PoseConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Hungarian matching of one image's N instances (logits ``(N, C)``, boxes ``(N, 4)``, keypoints
    ``(N, J, 2)``) to its targets; cost = class (focal) + L1 + GIoU + keypoint L1 + OKS terms."""
    if len(target["boxes"]) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=logits.device)
        return empty, empty
    prob = logits.float().sigmoid()[:, target["class_labels"]]  # (N, T)
    alpha, gamma = config.focal_alpha, 2.0
    positive = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
    negative = (1 - alpha) * prob ** gamma * -(1 - prob + 1e-8).log()
    area = target["boxes"][:, 2] * target["boxes"][:, 3]
    cost = (config.class_weight * (positive - negative)
            + config.box_l1_weight * torch.cdist(boxes.float(), target["boxes"], p=1)
            - config.giou_weight * generalized_box_iou(center_to_corners_format(boxes.float()),
                                                       center_to_corners_format(target["boxes"]))
            + config.keypoint_weight * keypoint_l1(keypoints.float(), target["keypoints"], target["visible"])
            + config.oks_weight * (1 - oks(keypoints.float(), target["keypoints"], target["visible"], area, sigmas, size)))
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    device = logits.device
    return torch.as_tensor(rows, dtype=torch.long, device=device), torch.as_tensor(cols, dtype=torch.long, device=device)


def pose_loss(raw, targets: list[PoseTarget | None], inputs: DetectorInputs, sigmas: list[np.ndarray],
              config: PoseConfig) -> dict[str, torch.Tensor]:
    """Weighted losses over every decoder layer and the proposals; keys name each part.

    raw: the decoder's :class:`~visionllm2.model.decoders.pose.PoseRaw`; targets / sigmas: one per image.
    """
    device = raw.logits.device
    if any(t is None or not t.annotated for t in targets):
        raise InvalidInputError("pose loss: every image with [POSE] groups needs an annotated PoseTarget")
    joints = raw.keypoint_valid.sum(1).tolist()
    classes = raw.object_valid.sum(1).tolist()
    normalised = [_normalised(t, size, j, device) for t, size, j in zip(targets, inputs.original, joints)]
    for target, count in zip(normalised, classes):
        if len(target["class_labels"]) and int(target["class_labels"].max()) >= count:
            raise InvalidInputError(f"pose target: label {int(target['class_labels'].max())} but the image has {count} object classes")
    num_boxes = max(float(sum(len(t["boxes"]) for t in normalised)), 1.0)
    losses: dict[str, torch.Tensor] = {}
    matcher = DeformableDetrHungarianMatcher(class_cost=config.class_weight, bbox_cost=config.box_l1_weight,
                                             giou_cost=config.giou_weight)
    box_stages = [(f"box{l}", raw.box_logits[l], raw.box_boxes[l]) for l in range(raw.box_logits.shape[0])]
    for name, logits, boxes in [*box_stages, ("encoder", raw.encoder_logits, raw.encoder_boxes)]:
        indices = matcher({"logits": logits.float(), "pred_boxes": boxes.float()}, normalised)  # cdist: no half kernels
        parts = box_set_losses(logits, boxes, indices, normalised, num_boxes, config)
        losses.update({f"{name}_{key}": value for key, value in zip(("class", "l1", "giou"), parts)})
    sigma_tensors = [torch.as_tensor(s, device=device) for s in sigmas]
    first = raw.box_logits.shape[0]
    for k in range(raw.logits.shape[0]):
        name = f"pose{first + k}"
        indices = []
        for b, target in enumerate(normalised):
            j = joints[b]
            indices.append(match_instances(raw.logits[k, b], raw.boxes[k, b], raw.keypoints[k, b, :, :j], target,
                                           sigma_tensors[b], inputs.original[b], config))
        parts = box_set_losses(raw.logits[k], raw.boxes[k], indices, normalised, num_boxes, config)
        losses.update({f"{name}_{key}": value for key, value in zip(("class", "l1", "giou"), parts)})
        l1, oks_loss, visibility = [], [], []
        for b, ((q, t), target) in enumerate(zip(indices, normalised)):
            if len(q) == 0:
                continue
            j = joints[b]
            pred, truth, visible = raw.keypoints[k, b, q, :j], target["keypoints"][t], target["visible"][t]  # (M, J, ·)
            l1.append(((pred - truth).abs().sum(-1) * visible).sum())
            area = target["boxes"][t, 2] * target["boxes"][t, 3]
            similarity = torch.diagonal(oks(pred, truth, visible, area, sigma_tensors[b], inputs.original[b]))
            oks_loss.append((1 - similarity).sum())
            vis_logits = raw.keypoint_logits[k, b, q, :j]
            visibility.append(F.binary_cross_entropy_with_logits(vis_logits, visible.float(), reduction="none").mean(-1).sum())
        zero = raw.keypoints[k].sum() * 0
        losses[f"{name}_keypoints"] = config.keypoint_weight * (torch.stack(l1).sum() if l1 else zero) / num_boxes
        losses[f"{name}_oks"] = config.oks_weight * (torch.stack(oks_loss).sum() if oks_loss else zero) / num_boxes
        losses[f"{name}_visibility"] = config.visibility_weight * (torch.stack(visibility).sum() if visibility else zero) / num_boxes
    return losses
