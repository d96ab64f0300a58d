"""From raw detector outputs to detections in original pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from transformers.loss.loss_for_object_detection import box_iou

from ..config import DetectionConfig
from ..errors import InvalidInputError
from .base import LinkStates
from .detection import DetectorInputs, DetectorRaw


@dataclass
class DetectionPrediction:
    """One image's detections. Coordinates: xyxy pixels of the original image.

    boxes ``(K, 4)``, scores ``(K,)``, groups ``(K,)`` (index into ``labels``), masks ``(K, H, W)`` bool
    or None: the top detections over all groups above the score threshold (``[DET]``/``[SEG]``), ranked
    by their scores after :func:`soften_duplicates` (unchanged with ``duplicate_decay`` 1).
    best_boxes ``(G, 4)``, best_scores ``(G,)``, best_masks ``(G, H, W)`` or None: the single best
    query of each group (``[GRD]``), or for interactive segmentation with its marks given, the query
    that best agrees with each group's mark (:func:`mark_coverage`).
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


def _valid_logits(logits: torch.Tensor, resized: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
    """Mask logits ``(K, H/4, W/4)`` of the padded input → the part over the real (resized) image."""
    rh, rw = resized
    ph, pw = padded
    h4, w4 = logits.shape[-2:]
    return logits[:, : max(1, round(h4 * rh / ph)), : max(1, round(w4 * rw / pw))]


def _masks_to_image(logits: torch.Tensor, resized: tuple[int, int], padded: tuple[int, int], size: tuple[int, int],
                    threshold: float = 0.0) -> torch.Tensor:
    """Mask logits ``(K, H/4, W/4)`` of the padded input → bool ``(K, h, w)`` of the original image, true
    where the upsampled logit is above ``threshold``."""
    if len(logits) == 0:
        return torch.zeros(0, size[1], size[0], dtype=torch.bool, device=logits.device)
    valid = _valid_logits(logits, resized, padded)
    return F.interpolate(valid[:, None].float(), size=(size[1], size[0]), mode="bilinear", align_corners=False)[:, 0] > threshold


MARK_POINTS = 1024  # pixels of a mark that measure coverage: enough for a 1% step, cheap for 900 queries
AGREEMENT_FLOOR = 0.05  # added to each coverage, so that when no query covers a mark the score decides


def _mark_points(mark: np.ndarray) -> np.ndarray:
    """``(P, 2)`` x, y pixel centres of a bool mark, evenly thinned to at most :data:`MARK_POINTS`."""
    ys, xs = np.nonzero(mark)
    if not len(xs):
        return np.zeros((0, 2), np.float32)
    keep = np.linspace(0, len(xs) - 1, min(len(xs), MARK_POINTS)).round().astype(int)
    return np.stack([xs[keep], ys[keep]], -1).astype(np.float32) + 0.5


def mark_coverage(marks: np.ndarray, size: tuple[int, int], boxes: torch.Tensor,
                  mask_logits: torch.Tensor | None = None, threshold: float = 0.0) -> torch.Tensor:
    """``(Q, G)``: the share of each mark's pixels that each query's object covers.

    marks: bool ``(G, h, w)`` in pixels of the original image ``size`` (w, h), as the session
    rasterises visual prompts. The object is the query's mask (``mask_logits`` ``(Q, h', w')`` over
    the real image, read where the full-size mask would be, without building it) or, for a detector
    without a mask head, its box (``boxes`` ``(Q, 4)`` xyxy pixels).
    """
    w, h = size
    out = boxes.new_zeros(len(boxes), len(marks))
    for g, mark in enumerate(marks):
        points = torch.from_numpy(_mark_points(mark)).to(boxes.device)  # (P, 2)
        if len(points) == 0:
            continue
        if mask_logits is None:
            x, y = points[:, 0], points[:, 1]
            inside = (x >= boxes[:, :1]) & (x <= boxes[:, 2:3]) & (y >= boxes[:, 1:2]) & (y <= boxes[:, 3:])  # (Q, P)
        else:  # bilinear, as F.interpolate(align_corners=False) upsamples the mask to (h, w)
            grid = (points / points.new_tensor([w, h]) * 2 - 1)[None, None]  # (1, 1, P, 2)
            values = F.grid_sample(mask_logits[None].float(), grid, mode="bilinear", padding_mode="border",
                                   align_corners=False)[0, :, 0]
            inside = values > threshold  # (Q, P)
        out[:, g] = inside.float().mean(-1)
    return out


def _checked_marks(marks, groups: int, size: tuple[int, int]) -> np.ndarray:
    marks = np.asarray(marks.cpu() if isinstance(marks, torch.Tensor) else marks).astype(bool)
    expected = (groups, size[1], size[0])
    if marks.shape != expected:
        raise InvalidInputError(f"marks: expected one bool mask per group, shape {expected} (groups, height, width), "
                                f"got {marks.shape}")
    return marks


def soften_duplicates(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, decay: float) -> torch.Tensor:
    """Scores ``(K,)`` of detections ``(K, 4)`` xyxy after a soft non-maximum suppression (Soft-NMS,
    Bodla et al. 2017, with a step): greedily, the highest-scoring detection not yet taken is taken,
    and each one left that overlaps it above ``iou_threshold`` keeps ``decay`` of its score.

    Class-agnostic: one object is one thing, so the same box under a second class is a duplicate as
    well. Decayed, not dropped, a duplicate that was right after all still ranks, lower (``decay``
    0 is plain NMS, 1 changes nothing)."""
    if decay >= 1 or len(scores) < 2:
        return scores
    # On the CPU: the greedy loop is a few tiny ops per detection, each a kernel launch (and the masked
    # update a sync) on a GPU; K is at most the query count, so one copy each way is far cheaper.
    device, boxes = scores.device, boxes.detach().float().cpu()
    overlap = box_iou(boxes, boxes)[0].nan_to_num(0.0)  # (K, K); empty boxes overlap nothing
    scores, left = scores.detach().cpu().clone(), torch.ones(len(scores), dtype=torch.bool)
    for _ in range(len(scores)):
        taken = torch.where(left, scores, -1.0).argmax()
        left[taken] = False
        scores[left & (overlap[taken] > iou_threshold)] *= decay
    return scores.to(device)


def postprocess(raw: DetectorRaw, inputs: DetectorInputs, link: LinkStates, rows: list[int],
                config: DetectionConfig, marks: Sequence[np.ndarray | torch.Tensor | None] | None = None,
                ) -> list[DetectionPrediction]:
    """Each row's top detections (duplicates softened: :func:`soften_duplicates`), and each group's
    best query: by score, or — with ``marks[row]`` given and ``config.mark_agreement`` on — by score ×
    (:func:`mark_coverage` + a small floor)."""
    out = []
    padded = tuple(inputs.pixel_values.shape[-2:])
    for i, row in enumerate(rows):
        members = (link.sample_index == row).nonzero().flatten().tolist()
        groups = len(members)
        probs = raw.logits[-1, i, :, :groups].sigmoid().float()  # (Q, G)
        boxes = boxes_to_pixels(raw.boxes[-1, i].float(), inputs.original[i])  # (Q, 4)
        k = min(config.max_detections, probs.numel())
        scores, flat = probs.flatten().topk(k)
        scores = soften_duplicates(boxes[flat // groups], scores, config.duplicate_iou, config.duplicate_decay)
        scores, order = scores.sort(descending=True)
        flat = flat[order]
        keep = scores >= config.score_threshold
        scores, flat = scores[keep], flat[keep]
        queries, group_of = flat // groups, flat % groups
        best_scores, best_queries = probs.max(0)  # (G,)
        layer = None if raw.masks is None else raw.masks[-1, i].float()  # (Q, H/4, W/4)
        mark = None if marks is None or not config.mark_agreement else marks[row]
        if mark is not None:
            mark = _checked_marks(mark, groups, inputs.original[i])
            valid = None if layer is None else _valid_logits(layer, inputs.resized[i], padded)
            agreement = probs * (mark_coverage(mark, inputs.original[i], boxes, valid, config.mask_threshold)
                                 + AGREEMENT_FLOOR)  # (Q, G)
            best_queries = agreement.argmax(0)
            best_scores = probs.gather(0, best_queries[None])[0]
        masks = best_masks = None
        if layer is not None:
            to_image = partial(_masks_to_image, resized=inputs.resized[i], padded=padded, size=inputs.original[i],
                               threshold=config.mask_threshold)
            masks, best_masks = to_image(layer[queries]), to_image(layer[best_queries])
        out.append(DetectionPrediction(
            sample=row, labels=[link.labels[m] for m in members], routes=[link.routes[m] for m in members],
            image_size=inputs.original[i], boxes=boxes[queries], scores=scores, groups=group_of, masks=masks,
            best_boxes=boxes[best_queries], best_scores=best_scores, best_masks=best_masks,
        ))
    return out
