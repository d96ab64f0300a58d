"""Typed errors shared by the whole package.

They live in ``model`` because imports go one way (``model ← sdk ← recipes, agents``) and the
model is where most bad input is first seen. ``visionllm2.sdk`` re-exports them. Every message
says what was expected, what came, and where it helps, the fix.
"""

from __future__ import annotations

import numbers


class VisionLLMError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidInputError(VisionLLMError, ValueError):
    """An argument has the wrong type, shape, range or value."""


class InvalidImageError(InvalidInputError):
    """An image could not be read, is empty, corrupt, or absurdly large (decompression bomb)."""


class InvalidPromptError(InvalidInputError):
    """A text or visual prompt is empty, out of the image, or has zero area."""


class TooManyGroupsError(InvalidInputError):
    """More classes / expressions / keypoints were asked in one turn than a decoder accepts."""


class UnknownTaskError(InvalidInputError):
    """A task, route or preset name that this package does not know."""


class DatasetError(InvalidInputError):
    """A dataset file is missing or malformed, or names an image file that is not there."""


class CheckpointError(VisionLLMError):
    """A checkpoint is malformed: missing or unexpected keys, wrong shapes, or a bad config."""


def describe(value: object) -> str:
    """A short description of a value for error messages: type, and shape/dtype when it has them."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {tuple(shape)}" + (f" and dtype {dtype}" if dtype is not None else "")
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of length {len(value)}"
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'…' if len(text) > 80 else ''}"


def is_integer(value: object) -> bool:
    """An int (numpy's too), not a bool: what counts and seeds must be."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A real number (numpy's too), not a bool: what scales and probabilities must be."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
