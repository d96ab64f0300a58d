"""From raw detector outputs to detections in original pixels."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from ..config import DetectionConfig
from .base import LinkStates
from .detection import DetectorInputs, DetectorRaw


@dataclass
class DetectionPrediction:
    """One image's detections. Coordinates: xyxy pixels of the original image.

    boxes ``(K, 4)``, scores ``(K,)``, groups ``(K,)`` (index into ``labels``), masks ``(K, H, W)`` bool
    or None: the top detections over all groups above the score threshold (``[DET]``/``[SEG]``).
    best_boxes ``(G, 4)``, best_scores ``(G,)``, best_masks ``(G, H, W)`` or None: the single best
    query of each group (``[GRD]`` and interactive segmentation).
    labels / routes: each group's label text and routing token; ``sample``: the batch row.
    """

    sample: int
    labels: list[str]
    routes: list[str]
    image_size: tuple[int, int]
    boxes: torch.Tensor
    scores: torch.Tensor
    groups: torch.Tensor
    masks: torch.Tensor | None
    best_boxes: torch.Tensor
    best_scores: torch.Tensor
    best_masks: torch.Tensor | None


def boxes_to_pixels(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """cxcywh in [0, 1] of the image → xyxy pixels of the original image ``size`` (w, h), clamped."""
    w, h = size
    cx, cy, bw, bh = boxes.unbind(-1)
    xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1) * boxes.new_tensor([w, h, w, h])
    return torch.stack([xyxy[..., 0].clamp(0, w), xyxy[..., 1].clamp(0, h),
                        xyxy[..., 2].clamp(0, w), xyxy[..., 3].clamp(0, h)], -1)


def _masks_to_image(logits: torch.Tensor, resized: tuple[int, int], padded: tuple[int, int], size: tuple[int, int],
                    threshold: float = 0.0) -> torch.Tensor:
    """Mask logits ``(K, H/4, W/4)`` of the padded input → bool ``(K, h, w)`` of the original image, true
    where the upsampled logit is above ``threshold``."""
    if len(logits) == 0:
        return torch.zeros(0, size[1], size[0], dtype=torch.bool)
    rh, rw = resized
    ph, pw = padded
    h4, w4 = logits.shape[-2:]
    valid = logits[:, : max(1, round(h4 * rh / ph)), : max(1, round(w4 * rw / pw))]
    return F.interpolate(valid[:, None].float(), size=(size[1], size[0]), mode="bilinear", align_corners=False)[:, 0] > threshold


def postprocess(raw: DetectorRaw, inputs: DetectorInputs, link: LinkStates, rows: list[int],
                config: DetectionConfig) -> list[DetectionPrediction]:
    out = []
    padded = tuple(inputs.pixel_values.shape[-2:])
    for i, row in enumerate(rows):
        members = (link.sample_index == row).nonzero().flatten().tolist()
        groups = len(members)
        probs = raw.logits[-1, i, :, :groups].sigmoid().float()  # (Q, G)
        boxes = boxes_to_pixels(raw.boxes[-1, i].float(), inputs.original[i])  # (Q, 4)
        k = min(config.max_detections, probs.numel())
        scores, flat = probs.flatten().topk(k)
        keep = scores >= config.score_threshold
        scores, flat = scores[keep], flat[keep]
        queries, group_of = flat // groups, flat % groups
        best_scores, best_queries = probs.max(0)  # (G,)
        masks = best_masks = None
        if raw.masks is not None:
            layer = raw.masks[-1, i].float()
            to_image = partial(_masks_to_image, resized=inputs.resized[i], padded=padded, size=inputs.original[i],
                               threshold=config.mask_threshold)
            masks, best_masks = to_image(layer[queries]), to_image(layer[best_queries])
        out.append(DetectionPrediction(
            sample=row, labels=[link.labels[m] for m in members], routes=[link.routes[m] for m in members],
            image_size=inputs.original[i], boxes=boxes[queries], scores=scores, groups=group_of, masks=masks,
            best_boxes=boxes[best_queries], best_scores=best_scores, best_masks=best_masks,
        ))
    return out
