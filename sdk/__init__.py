"""The user-facing SDK: typed results (Boxes, Masks, Poses, Images, Turn), visual prompts, errors.

Importing it is light: no torch, and supervision is loaded only when a result is drawn or
converted to supervision.
"""

from visionllm2.model.errors import (
    CheckpointError,
    InvalidImageError,
    InvalidInputError,
    InvalidPromptError,
    TooManyGroupsError,
    UnknownTaskError,
    VisionLLMError,
)

from .prompts import Box, Mask, Point, Scribble, VisualPrompt, as_visual_prompt
from .results import COCO_KEYPOINT_NAMES, COCO_SKELETON, Boxes, Images, Masks, Poses, Result, Turn

__all__ = [
    "COCO_KEYPOINT_NAMES",
    "COCO_SKELETON",
    "Box",
    "Boxes",
    "CheckpointError",
    "Images",
    "InvalidImageError",
    "InvalidInputError",
    "InvalidPromptError",
    "Mask",
    "Masks",
    "Point",
    "Poses",
    "Result",
    "Scribble",
    "TooManyGroupsError",
    "Turn",
    "UnknownTaskError",
    "VisionLLMError",
    "VisualPrompt",
    "as_visual_prompt",
]
