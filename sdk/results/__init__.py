"""Typed results of VisionLLM v2 turns: boxes, masks, poses and images, plus the Turn holding them.

Every result records the image size it refers to (``(width, height)``), the route that made it and
what was asked; indexes like a sequence; converts to supervision and COCO; and round-trips
through JSON losslessly.
"""

from ._base import Result
from .boxes import Boxes
from .images import Images
from .masks import Masks
from .poses import COCO_KEYPOINT_NAMES, COCO_SKELETON, Poses
from .turn import AnyResult, Turn

__all__ = [
    "COCO_KEYPOINT_NAMES",
    "COCO_SKELETON",
    "AnyResult",
    "Boxes",
    "Images",
    "Masks",
    "Poses",
    "Result",
    "Turn",
]
