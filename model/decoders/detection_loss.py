"""Set losses for the detection decoder: Hungarian matching, focal classification, L1 + GIoU boxes,
mask BCE + dice on sampled points; for every decoder layer (auxiliary) and the two-stage proposals.

Contrastive denoising queries (DINO) are not used: the tiny and ShapesWorld models converge without
them (DESIGN §7) and the official decoder trains fine from the released weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_transforms import center_to_corners_format
from transformers.loss.loss_deformable_detr import DeformableDetrHungarianMatcher
from transformers.loss.loss_for_object_detection import dice_loss, generalized_box_iou, sigmoid_focal_loss

from ..config import DetectionConfig, PoseConfig
from ..errors import InvalidInputError
from .detection import DetectorInputs, DetectorRaw


@dataclass
class DetectionTarget:
    """Ground truth of one image: ``boxes`` ``(N, 4)`` xyxy original pixels, ``labels`` ``(N,)`` group
    index within the image's groups, optional ``masks`` ``(N, H, W)`` bool at original size."""

    boxes: torch.Tensor | np.ndarray
    labels: torch.Tensor | np.ndarray
    masks: torch.Tensor | np.ndarray | None = None


def target_tensor(value: torch.Tensor | np.ndarray | Sequence[Any], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A target field (numpy, nested lists, or a tensor on any device and dtype) as ``dtype`` on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(value), dtype=dtype, device=device)


def _normalised(target: DetectionTarget, original: tuple[int, int], device: torch.device) -> dict[str, torch.Tensor]:
    boxes = target_tensor(target.boxes, torch.float32, device).reshape(-1, 4)
    labels = target_tensor(target.labels, torch.long, device).reshape(-1)
    if len(boxes) != len(labels):
        raise InvalidInputError(f"detection target: {len(boxes)} boxes but {len(labels)} labels")
    w, h = original
    scale = boxes.new_tensor([w, h, w, h])
    xyxy = boxes / scale
    cxcywh = torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                          xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], -1)
    return {"class_labels": labels, "boxes": cxcywh}


def box_set_losses(logits: torch.Tensor, boxes: torch.Tensor, indices, targets, num_boxes: float,
                   config: DetectionConfig | PoseConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted focal classification, L1 and GIoU losses of Hungarian-matched queries (DETR-style).

    logits ``(B, Q, G)``, boxes ``(B, Q, 4)`` cxcywh in [0, 1]; ``indices``: per image (query ids,
    target ids); ``targets``: per image ``{"class_labels", "boxes"}``. Shared by detection and pose.
    """
    onehot = torch.zeros_like(logits)
    for b, (q, t) in enumerate(indices):
        onehot[b, q, targets[b]["class_labels"][t]] = 1.0
    # sigmoid_focal_loss averages over queries; × Q makes it a sum per box as in Deformable DETR.
    focal = sigmoid_focal_loss(logits, onehot, num_boxes, alpha=config.focal_alpha) * logits.shape[1]
    matched = torch.cat([boxes[b, q] for b, (q, _) in enumerate(indices)])
    truth = torch.cat([targets[b]["boxes"][t] for b, (_, t) in enumerate(indices)])
    l1 = F.l1_loss(matched, truth, reduction="sum") / num_boxes
    giou = (1 - torch.diag(generalized_box_iou(center_to_corners_format(matched), center_to_corners_format(truth)))).sum() / num_boxes
    return config.class_weight * focal, config.box_l1_weight * l1, config.giou_weight * giou


def _mask_losses(pred: list[torch.Tensor], target_masks: list[torch.Tensor], inputs: DetectorInputs,
                 config: DetectionConfig, num_boxes: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE + dice at sampled points of the image, on matched (prediction, target) pairs.

    pred: per image the matched mask logits ``(n, H/4, W/4)`` on the padded input; targets at
    original size. Both are sampled at the same image-relative points, so sizes never need to match.
    """
    bce, dice = [], []
    for logits, truth, (rh, rw) in zip(pred, target_masks, inputs.resized):
        if len(logits) == 0:
            continue
        ph, pw = inputs.pixel_values.shape[-2:]
        at = partial(_logits_at, logits, (rw / pw, rh / ph))
        coords = _training_points(at, len(logits), config, logits.device)  # (n, P, 2)
        sampled = at(coords)
        labels = F.grid_sample(truth[:, None].float(), coords[:, None] * 2 - 1, mode="nearest", align_corners=False)[:, 0, 0]
        bce.append(F.binary_cross_entropy_with_logits(sampled, labels, reduction="none").mean(1).sum())
        dice.append(dice_loss(sampled, labels, 1.0))
    zero = pred[0].sum() * 0 if pred else torch.zeros(())
    return (torch.stack(bce).sum() / num_boxes if bce else zero), (torch.stack(dice).sum() / num_boxes if dice else zero)


def _logits_at(logits: torch.Tensor, shown: tuple[float, float], coords: torch.Tensor) -> torch.Tensor:
    """Mask logits ``(n, h, w)`` of the padded input at image-relative points ``(n, P, 2)`` → ``(n, P)``;
    ``shown``: the share (x, y) of the padded input that the image fills."""
    grid = (coords * coords.new_tensor(shown)) * 2 - 1  # padded-input grid in [-1, 1]
    return F.grid_sample(logits[:, None].float(), grid[:, None].float(), align_corners=False)[:, 0, 0]  # half weights too


@torch.no_grad()
def _training_points(logits_at, count: int, config: DetectionConfig, device: torch.device) -> torch.Tensor:
    """Where each of ``count`` masks is supervised: ``(count, P, 2)`` image-relative points.

    Mask2Former's and Mask DINO's importance sampling: of ``mask_points`` P, the share
    ``mask_importance_ratio`` are the most uncertain (logit nearest 0) among ``mask_oversample_ratio``
    × P random candidates, the rest uniform. Uniform points alone give an object of 40 pixels in a
    128² picture about 2 positive points of 1,024, so the head learns to leave small objects empty.
    """
    points = config.mask_points
    uncertain = int(points * config.mask_importance_ratio)
    if uncertain == 0:
        return torch.rand(count, points, 2, device=device)
    candidates = torch.rand(count, max(uncertain, int(points * config.mask_oversample_ratio)), 2, device=device)
    nearest_zero = (-logits_at(candidates).abs()).topk(uncertain, dim=1).indices  # (count, uncertain)
    chosen = candidates.gather(1, nearest_zero[..., None].expand(-1, -1, 2))
    return torch.cat([chosen, torch.rand(count, points - uncertain, 2, device=device)], 1)


def detection_loss(raw: DetectorRaw, targets: list[DetectionTarget | None], inputs: DetectorInputs,
                   config: DetectionConfig) -> dict[str, torch.Tensor]:
    """Weighted losses summed over decoder layers and the encoder proposals; keys name each part."""
    device = raw.logits.device
    if any(t is None for t in targets):
        raise InvalidInputError("detection loss: every image with groups needs a DetectionTarget")
    normalised = [_normalised(t, size, device) for t, size in zip(targets, inputs.original)]
    for target, groups in zip(normalised, raw.group_mask.sum(1).tolist()):
        if len(target["class_labels"]) and int(target["class_labels"].max()) >= groups:
            raise InvalidInputError(
                f"detection target: label {int(target['class_labels'].max())} but the image has {groups} groups"
            )
    masks = None
    if raw.masks is not None and all(t.masks is not None for t in targets):
        masks = [target_tensor(t.masks, torch.bool, device) for t in targets]
    matcher = DeformableDetrHungarianMatcher(class_cost=config.class_weight, bbox_cost=config.box_l1_weight,
                                             giou_cost=config.giou_weight)
    num_boxes = max(float(sum(len(t["boxes"]) for t in normalised)), 1.0)
    stages = [(f"layer{l}", raw.logits[l], raw.boxes[l], None if raw.masks is None else raw.masks[l])
              for l in range(raw.logits.shape[0])]
    stages.append(("encoder", raw.encoder_logits, raw.encoder_boxes, None))
    losses: dict[str, torch.Tensor] = {}
    for name, logits, boxes, stage_masks in stages:
        indices = matcher({"logits": logits.float(), "pred_boxes": boxes.float()}, normalised)  # cdist: no half kernels
        losses[f"{name}_class"], losses[f"{name}_l1"], losses[f"{name}_giou"] = box_set_losses(
            logits, boxes, indices, normalised, num_boxes, config)
        if stage_masks is not None and masks is not None:
            pred = [stage_masks[b, q] for b, (q, _) in enumerate(indices)]
            truth_masks = [masks[b][t] for b, (_, t) in enumerate(indices)]
            bce, dice = _mask_losses(pred, truth_masks, inputs, config, num_boxes)
            losses[f"{name}_mask"] = config.mask_bce_weight * bce
            losses[f"{name}_dice"] = config.dice_weight * dice
    return losses
