"""Decoder predictions (plain tensors from ``visionllm2.model``) → the SDK's typed results.

Predictions stay where the model ran (a GPU, in bfloat16 …), as transformers' post-processing
leaves them; the results are numpy on the host, so every tensor crosses here through
:func:`~visionllm2.sdk.results._base.to_numpy` (any device; bfloat16 read as float32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from visionllm2.model import tokens as T

from .results import COCO_KEYPOINT_NAMES, COCO_SKELETON, Boxes, Images, Masks, Poses, Result
from .results._base import to_numpy


def detection_results(prediction: Any, turn: int, asked: list[str], interactive: bool = False) -> list[Result]:
    """One image's :class:`DetectionPrediction` → Boxes (and Masks) by the routes its groups used.

    ``[DET]``: the top detections over all groups. ``[SEG]``: the same, as masks. ``[GRD]`` and
    interactive segmentation (a visual prompt answered by a ``[DET]`` group): the best query of
    each group, one box (and mask) per expression or prompt.
    """
    size = tuple(prediction.image_size)
    route = prediction.routes[0] if prediction.routes else T.DET
    labels = list(prediction.labels)
    if route == T.GRD or interactive:
        xyxy = to_numpy(prediction.best_boxes)
        scores = to_numpy(prediction.best_scores)
        masks = to_numpy(prediction.best_masks)
        names = labels
    else:
        xyxy = to_numpy(prediction.boxes)
        scores = to_numpy(prediction.scores)
        masks = to_numpy(prediction.masks)
        names = [labels[g] for g in prediction.groups.tolist()]
    common = {"image_size": size, "turn": turn, "route": route, "asked": asked}
    boxes = Boxes(xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4), scores=np.asarray(scores, np.float32),
                  labels=names, **common)
    if masks is None or not (route == T.SEG or interactive):
        return [boxes]
    return [Masks(masks=masks.astype(bool), scores=boxes.scores, labels=names, boxes=boxes.xyxy, **common), boxes]


def image_results(prediction: Any, turn: int) -> list[Result]:
    """A diffusion decoder's :class:`DiffusionImages` → :class:`Images` with caption, seed and settings."""
    images = list(prediction.images)
    return [Images(
        images=images, captions=list(prediction.captions), seeds=list(prediction.seeds),
        settings=prediction.settings(), image_size=images[0].size, turn=turn, route=prediction.route,
        asked=list(prediction.captions),
    )]


def pose_results(prediction: Any, turn: int, route: str, names: list[str] | None = None) -> list[Result]:
    """A :class:`PosePrediction` → :class:`Poses` (COCO's skeleton when the names are COCO's 17).

    ``names`` overrides the keypoint names read back from the answer (the verb knows them exactly).
    """
    names = list(names or prediction.keypoint_names)
    skeleton = list(COCO_SKELETON) if names == list(COCO_KEYPOINT_NAMES) else []
    labels = [prediction.labels[c] for c in prediction.classes.tolist()]
    return [Poses(
        boxes=to_numpy(prediction.boxes).astype(np.float32).reshape(-1, 4),
        keypoints=to_numpy(prediction.keypoints).astype(np.float32).reshape(-1, len(names), 3),
        keypoint_names=names, skeleton=skeleton, labels=labels,
        scores=to_numpy(prediction.scores).astype(np.float32), image_size=tuple(prediction.image_size),
        turn=turn, route=route, asked=[*prediction.labels, *names],
    )]
