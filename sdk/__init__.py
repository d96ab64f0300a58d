"""The user-facing SDK: typed results (Boxes, Masks, Poses, Images, Turn), visual prompts, errors.

Importing it is light: no torch, and supervision is loaded only when a result is drawn or
converted to supervision.
"""

from .errors import (
    CapabilityError,
    CheckpointError,
    GenerationLimitError,
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
    "BatchPredictor",
    "Box",
    "Boxes",
    "CapabilityError",
    "CheckpointError",
    "GenerationLimitError",
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
    "Session",
    "TooManyGroupsError",
    "Turn",
    "UnknownTaskError",
    "VisionLLMError",
    "VisualPrompt",
    "as_visual_prompt",
]


def __getattr__(name: str):
    # Session and BatchPredictor pull in torch and the model; load it on first use so `import visionllm2.sdk` stays light.
    if name == "Session":
        from .session import Session

        return Session
    if name == "BatchPredictor":
        from .batch import BatchPredictor

        return BatchPredictor
    raise AttributeError(f"module 'visionllm2.sdk' has no attribute {name!r}")
