"""The SDK's typed errors. Everything derives from :class:`VisionLLMError`.

Input errors come from ``visionllm2.model.errors`` (the model sees bad input first); the SDK adds
what only a session can get wrong.
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


class CapabilityError(VisionLLMError):
    """The turn needs a route whose decoder this model does not have loaded (e.g. ``[POSE]``)."""


class GenerationLimitError(VisionLLMError):
    """The answer hit ``max_new_tokens`` or the model's context length before it finished."""


__all__ = [
    "CapabilityError", "CheckpointError", "GenerationLimitError", "InvalidImageError", "InvalidInputError",
    "InvalidPromptError", "TooManyGroupsError", "UnknownTaskError", "VisionLLMError",
]
