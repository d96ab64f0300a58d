"""From raw pose-decoder outputs to instances and keypoints in original pixels."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import PoseConfig
from .detection import DetectorInputs
from .detection_post import boxes_to_pixels, soften_duplicates


@dataclass
class PosePrediction:
    """One image's poses. Coordinates: pixels of the original image.

    boxes ``(K, 4)`` xyxy, scores ``(K,)``, classes ``(K,)`` (index into ``labels``), keypoints
    ``(K, J, 3)`` as x, y, score (the keypoint's visibility probability); the top instances over all
    classes above the score threshold, ranked by their scores after
    :func:`~visionllm2.model.decoders.detection_post.soften_duplicates` (unchanged with ``duplicate_decay`` 1). labels: the object-class names, keypoint_names: the keypoint
    names (both from the answer); sample: the batch row; image_size: (w, h).
    """

    sample: int
    labels: list[str]
    keypoint_names: list[str]
    image_size: tuple[int, int]
    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    keypoints: torch.Tensor


def postprocess(raw, inputs: DetectorInputs, tokens, config: PoseConfig) -> list[PosePrediction]:
    """raw: :class:`~visionllm2.model.decoders.pose.PoseRaw`; tokens: its :class:`PoseLink`."""
    out = []
    for i, row in enumerate(tokens.rows):
        c, j = len(tokens.object_labels[i]), len(tokens.keypoint_names[i])
        size = inputs.original[i]
        probs = raw.logits[-1, i, :, :c].sigmoid().float()  # (N, C)
        k = min(config.max_detections, probs.numel())
        scores, flat = probs.flatten().topk(k)
        boxes = boxes_to_pixels(raw.boxes[-1, i].float(), size)  # (N, 4)
        scores = soften_duplicates(boxes[flat // c], scores, config.duplicate_iou, config.duplicate_decay)
        scores, order = scores.sort(descending=True)
        flat = flat[order]
        keep = scores >= config.score_threshold
        scores, flat = scores[keep], flat[keep]
        instances, classes = flat // c, flat % c
        xy = raw.keypoints[-1, i, instances, :j].float()
        xy = xy * xy.new_tensor(size)  # (K, J, 2) pixels; new_tensor: on the decoder's device, CUDA or CPU
        visibility = raw.keypoint_logits[-1, i, instances, :j].sigmoid().float()[..., None]  # (K, J, 1)
        out.append(PosePrediction(
            sample=row, labels=tokens.object_labels[i], keypoint_names=tokens.keypoint_names[i], image_size=size,
            boxes=boxes[instances], scores=scores, classes=classes,
            keypoints=torch.cat([xy, visibility], -1),
        ))
    return out
